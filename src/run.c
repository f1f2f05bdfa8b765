/* `dptrain train`: the whole run around the trainer — data, threads, logging, evaluation,
 * checkpoints, resuming and stopping on a signal. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#include "dptrain/blas.h"
#include "dptrain/checkpoint.h"
#include "dptrain/error.h"
#include "dptrain/metrics.h"
#include "dptrain/paths.h"
#include "dptrain/resume.h"
#include "dptrain/run.h"
#include "dptrain/rundir.h"
#include "dptrain/train.h"
#include "faults.h"
#include "fsutil.h"

/* Hold the rows in memory when they take at most half of this rank's share of the node's memory. */
static int fits_in_memory(const dp_config *cfg, const dp_comm *comm, const dp_dataset *ds, int64_t rows) {
  if (cfg->data.in_memory != DP_INMEM_AUTO)
    return cfg->data.in_memory == DP_INMEM_TRUE;
  /* Everything holding the rows takes: x, the labels or targets, and (training rows) the epoch's order. */
  double bytes = dp_dataset_mem_bytes(ds, rows) + (rows == ds->n ? sizeof(int64_t) * (double)ds->n : 0);
  return bytes <= dp_node_memory() / comm->node_size / 2;
}

typedef struct {
  dp_dataset train, test, val;
  int has_test, has_val; /* has_val: the file's /val group (val_fraction's rows are the trainer's) */
} run_data;

/* An evaluation set: each rank holds its slice in memory when it fits, and checks it. */
static int prepare_eval_set(const dp_config *cfg, dp_comm *comm, dp_dataset *ds) {
  int64_t lo, hi;
  dp_split_range(ds->n, comm->rank, comm->size, &lo, &hi);
  int rc = 0;
  if (hi > lo && fits_in_memory(cfg, comm, ds, hi - lo))
    rc = dp_dataset_load(ds, lo, hi);
  return rc == 0 ? dp_dataset_check_finite(ds, lo, hi) : rc;
}

/* The file's /val group, unless val_fraction holds rows out of /train instead: not both. */
static int open_val(const dp_config *cfg, dp_comm *comm, run_data *d) {
  int rc = dp_dataset_open(&d->val, cfg->data.path, "val", &d->has_val);
  if (rc == 0 && d->has_val && cfg->data.val_fraction > 0)
    rc = dp_fail(DP_ECONFIG, "%s: [data] val_fraction = %g, but %s has a /val group: validate on one or the other "
                 "(val_fraction = 0 evaluates /val)", cfg->file, cfg->data.val_fraction, cfg->data.path);
  return dp_comm_agree(comm, rc, NULL);
}

static int open_data(const dp_config *cfg, dp_comm *comm, run_data *d) {
  int rc = dp_dataset_open(&d->train, cfg->data.path, "train", NULL);
  DP_TRY(dp_comm_agree(comm, rc < 0 ? rc : 0, NULL));
  rc = dp_dataset_open(&d->test, cfg->data.path, "test", &d->has_test);
  DP_TRY(dp_comm_agree(comm, rc < 0 ? rc : 0, NULL));
  DP_TRY(open_val(cfg, comm, d));
  rc = dp_dataset_apply_standardize(&d->train, cfg);
  if (rc == 0 && fits_in_memory(cfg, comm, &d->train, d->train.n))
    rc = dp_dataset_load(&d->train, 0, d->train.n);
  int64_t lo, hi; /* NaN or Inf in float x: each rank checks its share of the rows */
  dp_split_range(d->train.n, comm->rank, comm->size, &lo, &hi);
  if (rc == 0)
    rc = dp_dataset_check_finite(&d->train, lo, hi);
  if (rc == 0 && d->has_test)
    rc = prepare_eval_set(cfg, comm, &d->test);
  if (rc == 0 && d->has_val)
    rc = prepare_eval_set(cfg, comm, &d->val);
  return dp_comm_agree(comm, rc, NULL);
}

static int write_config(FILE *f, void *cfg) { return dp_config_write(cfg, f); }

static int write_config_copy(const dp_config *cfg) {
  char path[DP_FILE_PATH_MAX];
  snprintf(path, sizeof path, "%s/config.ini", cfg->train.out_dir);
  return dp_write_durable_stdio(path, "the configuration", write_config, (void *)cfg);
}

/* "1x28x28" for an image, "784" for features. */
static void format_shape(char *buf, size_t len, int c, int h, int w) {
  if (h > 0)
    snprintf(buf, len, "%dx%dx%d", c, h, w);
  else
    snprintf(buf, len, "%d", c);
}

/* One start-up line per layer: its type, input -> output, window, and parameters. */
static void print_layer(FILE *out, const dp_model *m, int i) {
  const dp_dense *l = &m->layer[i];
  const dp_layer_geom *g = &m->geom[i];
  char in[48], o[48];
  format_shape(in, sizeof in, g->c, g->h, g->w);
  format_shape(o, sizeof o, g->oc, g->oh, g->ow);
  fprintf(out, "  layer %d: ", i);
  if (g->type == DP_LAYER_MAXPOOL || g->type == DP_LAYER_AVGPOOL) {
    fprintf(out, "%s %s -> %s, %dx%d stride %d\n", g->pool.max ? "maxpool" : "avgpool", in, o, g->pool.k, g->pool.k,
            g->pool.stride);
    return;
  }
  if (g->type == DP_LAYER_FLATTEN) {
    fprintf(out, "flatten %s -> %s\n", in, o);
    return;
  }
  if (g->type == DP_LAYER_DROPOUT) {
    fprintf(out, "dropout %s, rate %g\n", in, (double)g->rate);
    return;
  }
  int norm = l->norm.kind != DP_NORM_NONE;
  size_t n = dp_dense_params(l->in, l->out, norm);
  const char *nn = norm ? dp_norm_name(l->norm.kind) : "", *ns = norm ? " norm, " : "", *act = dp_act_name(l->act);
  if (g->type == DP_LAYER_CONV2D) {
    const dp_conv_geom *k = &g->conv;
    fprintf(out, "conv2d %s -> %s, %dx%d stride %d pad %d", in, o, k->kh, k->kw, k->stride, k->pad_h);
    if (k->pad_w != k->pad_h)
      fprintf(out, ",%d", k->pad_w);
    fprintf(out, ", %s%s%s, weight (%d, %d, %d, %d), %zu parameter%s\n", nn, ns, act, k->f, k->c, k->kh, k->kw, n,
            dp_plural((long long)n));
    return;
  }
  fprintf(out, "dense %d -> %d, %s%s%s, weight (%d, %d), %zu parameter%s\n", l->in, l->out, nn, ns, act, l->out, l->in,
          n, dp_plural((long long)n));
}

/* The epochs' order and, for a streamed set, the reader's ring. */
static void print_reduction(FILE *out, const dp_trainer *t);

static void print_order(FILE *out, const dp_trainer *t) {
  const dp_order *o = &t->order;
  if (!o->blocks) {
    fprintf(out, "order: random (%s)\n",
            o->shuffle ? "every epoch a permutation of all rows" : "shuffle = false: file order");
    return;
  }
  double block = dp_stream_block_bytes(t->train, o->block_rows);
  fprintf(out, "order: blocks of %lld row%s (%.3g MB), rows shuffled within windows of %lld block%s",
          (long long)o->block_rows, dp_plural(o->block_rows), block / 1e6, (long long)o->window, dp_plural(o->window));
  if (t->streaming)
    fprintf(out, "; a reader thread per rank prefetches into %.3g MB (%lld block%s%s)",
            (double)t->ring_slots * block / 1e6, (long long)t->ring_slots, dp_plural(t->ring_slots),
            t->prefetch_cap > 0 ? ", prefetch_mb limited to half this rank's share of the node's memory" : "");
  if (t->streaming && t->train->direct)
    fprintf(out, "; chunks read with O_DIRECT, past the page cache");
  else if (t->streaming && dp_stream_drops_cache(t->train))
    fprintf(out, "; the file is larger than half the node's memory (%.3g GB): the reader drops the pages it "
            "read from the page cache", dp_node_memory() / 1e9);
  fputc('\n', out);
}

/* per_node: ranks per node, then BLAS threads per rank, each as min and max over the ranks. */
static void print_startup(FILE *out, const dp_trainer *t, const run_data *d, const dp_blas_threads *threads,
                          const double per_node[4]) {
  const dp_comm *c = t->comm;
  const dp_model *m = &t->model;
  fprintf(out, "dptrain: %d rank%s on %d node%s, ", c->size, dp_plural(c->size), c->n_nodes,
          dp_plural(c->n_nodes));
  if (per_node[2] != per_node[3])
    fprintf(out, "%.0f to %.0f BLAS threads per rank (rank 0: %d, %s", per_node[2], per_node[3], threads->threads,
            threads->source);
  else
    fprintf(out, "%d BLAS thread%s per rank (%s", threads->threads, dp_plural(threads->threads), threads->source);
  fprintf(out, "; OpenBLAS %s kernel)", dp_blas_kernel());
  if (c->n_nodes > 1 && per_node[0] == per_node[1])
    fprintf(out, ", %.0f rank%s per node", per_node[1], dp_plural((long long)per_node[1]));
  else if (c->n_nodes > 1)
    fprintf(out, ", %.0f to %.0f ranks per node", per_node[0], per_node[1]);
  fputc('\n', out);
  fprintf(out, "model: %d input%s, %s, %zu parameter%s, %.3g MFLOP/sample forward (x3 to train)\n", m->in_dim,
          dp_plural(m->in_dim), dp_loss_name(m->loss), m->n_params, dp_plural((long long)m->n_params),
          dp_model_flops_forward(m) / 1e6);
  for (int i = 0; i < m->n_layers; i++)
    print_layer(out, m, i);
  fprintf(out, "data: %s: train %lld x %lld (%s, %s)", d->train.path, (long long)d->train.n, (long long)d->train.d,
          d->train.x_u8 ? "uint8" : "float32",
          d->train.mem_hi > d->train.mem_lo ? "in memory" : t->streaming ? "streamed" : "read per batch");
  if (d->has_test)
    fprintf(out, ", test %lld", (long long)d->test.n);
  if (t->val.n_val > 0)
    fprintf(out, ", validation %lld (val_fraction, held out of train)", (long long)t->val.n_val);
  else if (d->has_val)
    fprintf(out, ", validation %lld (/val)", (long long)d->val.n);
  fputc('\n', out);
  print_order(out, t);
  int64_t lo, hi;
  dp_split_range(t->batch, 0, c->size, &lo, &hi);
  fprintf(out, "training: global batch %lld, shards of %lld", (long long)t->batch, (long long)(hi - lo));
  if (t->batch % c->size)
    fprintf(out, "-%lld", (long long)(hi - lo - 1));
  fprintf(out, " row%s per rank, %lld step%s/epoch, %lld step%s, ", dp_plural(hi - lo),
          (long long)t->steps_per_epoch, dp_plural(t->steps_per_epoch), (long long)t->total_steps,
          dp_plural(t->total_steps));
  print_reduction(out, t);
}

/* How the gradients are reduced and where the weights live ([train] comm, deterministic). */
static void print_reduction(FILE *out, const dp_trainer *t) {
  const dp_nodesync *n = &t->node;
  const dp_comm *c = t->comm;
  if (!n->on) {
    if (t->cfg->train.deterministic)
      fputs("gradients by exact sums", out);
    else
      fprintf(out, "gradients in %d allreduce bucket%s", t->sync.n, dp_plural(t->sync.n));
    fprintf(out, "%s%s%s\n", t->flat_why ? " (comm = flat: " : "", t->flat_why ? t->flat_why : "",
            t->flat_why ? ")" : "");
    return;
  }
  if (n->reduce)
    fprintf(out, "gradients summed in the node's shared memory in %d slice%s", c->node_size, dp_plural(c->node_size));
  else
    fputs("gradients by exact sums", out);
  if (n->reduce && c->n_nodes > 1)
    fprintf(out, ", each allreduced across the %d nodes", c->n_nodes);
  fprintf(out, "; weights and optimizer state once per node (%.3g MB shared), the update split %d way%s\n",
          n->bytes_shared / 1e6, c->node_size, dp_plural(c->node_size));
}

/* Set by SIGTERM, SIGUSR1 (what SLURM sends before a time limit) or SIGINT; read at step boundaries. */
static volatile sig_atomic_t stop_signal;
/* Open MPI 4.1's mpirun answers SIGTERM or SIGINT by sending the ranks SIGCONT, then SIGTERM only
 * odls_base_sigkill_timeout seconds later (1 by default) and SIGKILL as soon as one rank exits or
 * that time again has passed: too late for a checkpoint unless the first SIGCONT is the stop. So a
 * SIGCONT from the launcher (our parent, mpirun or orted) stops the run; anyone else's, such as a
 * scheduler resuming a suspended job, does not. */
static pid_t launcher_pid = -1;

static void on_signal(int sig, siginfo_t *info, void *ctx) {
  (void)ctx;
  if (sig != SIGCONT || (info && info->si_pid == launcher_pid))
    stop_signal = sig;
}

/* Our parent when it is Open MPI's launcher: orted on other nodes, mpirun (orterun, prterun) on its own. */
static pid_t find_launcher(void) {
  char path[64], name[64] = "";
  pid_t parent = getppid();
  snprintf(path, sizeof path, "/proc/%d/comm", (int)parent);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  int got = fgets(name, sizeof name, f) != NULL;
  fclose(f);
  name[strcspn(name, "\n")] = '\0';
  const char *known[] = {"mpirun", "mpiexec", "orterun", "orted", "prterun", "prted"};
  for (size_t i = 0; got && i < sizeof known / sizeof *known; i++)
    if (!strcmp(name, known[i]))
      return parent;
  return -1;
}

void dp_catch_stop_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_SIGINFO;
  launcher_pid = find_launcher();
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  if (launcher_pid > 0)
    sigaction(SIGCONT, &sa, NULL);
}

/* The whole interval is registered, timings included, so that a resumed run logs the same values and
 * its first line's rates cover the whole interval (the steps before the checkpoint with rank 0's
 * timings on every rank: only rank 0 writes). wall is the steps' own time, which an evaluation, a
 * checkpoint or a resume between them does not enter. */
typedef struct {
  double loss, acc, mae;       /* acc: classification; mae: regression */
  int64_t steps, samples, evals; /* evals: a line search's */
  double wall;                 /* this rank's seconds in dp_trainer_step over the timed steps */
  int64_t timed_steps, timed_samples;
  double compute, comm, optim; /* this rank's seconds over the timed steps */
} interval;

/* Everything one run carries from step to step. */
typedef struct {
  dp_trainer t;
  run_data *d;
  dp_metrics mt;
  FILE *out;
  interval iv;
  double train_s, eval_s;
  dp_scores test, val;    /* the last evaluation's */
  int has_val;            /* validation data: the file's /val or val_fraction's rows */
  int evaluated;
  int io;                 /* rank 0's pending failure, sent along with the next step */
  int stop, save, converged; /* the last step's agreed flags */
  char ckpt_dir[DP_FILE_PATH_MAX];
  dp_rundir_lock lock;    /* rank 0: out_dir's, and the checkpoint directory's when elsewhere */
  int finished;           /* resumed at or past the end: nothing to train, nothing to write */
  int64_t saved_step;     /* the step of the newest checkpoint written or loaded; -1 none */
  int64_t start_step, start_samples; /* where this session started (resumed runs) */
  double last_save;       /* rank 0's clock at the last save */
  dp_timeline tl;         /* [train] timeline */
  int64_t tl_end;         /* the step after which the timeline is written */
  double last_loss, last_lr;
  double epoch_loss;      /* the epoch's sum of batch loss x rows: the bar ends on its mean */
  int64_t epoch_samples;
  int restores;           /* on_nonfinite = restore so far */
  int64_t skips, skips_in_row; /* on_nonfinite = skip_step: registered, so bounded across resumes */
  double first_loss;      /* the run's first step's loss, divergence's yardstick; 0 = none yet */
  int warned_divergence;
  /* The best validation figure (val_acc with keep_best = val_acc, else val_loss) and its step (-1:
   * none yet); early stopping's reference (the last improvement by at least min_delta) and the
   * evaluations since it. Registered: a resume keeps them. */
  double best, stop_ref;
  int64_t best_step, stale_evals;
  int early_stop;         /* early_stop_patience ran out at the last evaluation */
  char run_id[DP_STATE_STR_MAX]; /* registered: which run a checkpoint belongs to */
} run_state;

/* The interval's time per step split, mean and max over ranks (one collective, at log steps only,
 * which every rank reaches alike): ms[0..3) means, ms[3..6) maxima of compute, comm, optimizer. */
static int reduce_times(run_state *s, double ms[6]) {
  const interval *iv = &s->iv;
  double k = iv->timed_steps > 0 ? 1e3 / (double)iv->timed_steps : 0.0;
  double v[6] = {iv->compute * k, iv->comm * k, iv->optim * k, iv->compute * k, iv->comm * k, iv->optim * k};
  DP_TRY(dp_comm_allreduce_f64(s->t.comm, v, 3));
  DP_TRY(dp_comm_allreduce_max_f64(s->t.comm, v + 3, 3));
  for (int i = 0; i < 3; i++)
    ms[i] = v[i] / s->t.comm->size, ms[i + 3] = v[i + 3];
  return 0;
}

/* Logs the interval on rank 0; returns rank 0's I/O status (others 0). Collective. */
static int log_interval(run_state *s, const dp_step_result *r) {
  const dp_trainer *t = &s->t;
  interval *iv = &s->iv;
  double ms[6];
  DP_TRY(reduce_times(s, ms));
  /* A full-batch iteration's loss is exact: the logged one's, not a mean over the interval. */
  double loss = s->mt.line_search ? r->loss : iv->loss / (double)iv->steps;
  dp_step_log l = {.step = t->step,
                   .epoch = t->epoch,
                   .steps_per_epoch = t->steps_per_epoch,
                   .pos = t->pos,
                   .samples = dp_trainer_samples_seen(t),
                   .loss = loss,
                   .acc = iv->acc / iv->steps,
                   .rmse = sqrt(loss), /* mse is the per-output mean squared error */
                   .mae = iv->mae / iv->steps,
                   .evals = iv->evals,
                   .line_step = r->line_step,
                   .lr = r->lr,
                   .grad_norm = r->grad_norm,
                   .step_ms = iv->timed_steps > 0 ? 1e3 * iv->wall / (double)iv->timed_steps : NAN,
                   .samples_per_s = iv->wall > 0 ? (double)iv->timed_samples / iv->wall : NAN};
  memcpy(l.compute_ms, ms, sizeof l.compute_ms);
  int rc = dp_metrics_step(&s->mt, &l);
  *iv = (interval){0};
  return rc;
}

/* The sweep's rule, on the log line's mean loss (one batch's is too noisy): above diverge_factor x
 * the first step's loss. Every rank holds the same reduced losses, so all decide alike. 1 when it
 * diverged (the first time), with the message in why. */
static int diverged(run_state *s, char *why, size_t len) {
  const dp_config *cfg = s->t.cfg;
  double mean = s->iv.loss / (double)s->iv.steps, factor = cfg->sweep.diverge_factor;
  if (s->warned_divergence || !(s->first_loss > 0) || !isfinite(mean) || !(mean > factor * s->first_loss))
    return 0;
  s->warned_divergence = 1;
  snprintf(why, len,
           "step %lld: the loss (%.4g, the mean of the last %lld step%s) is more than [sweep] diverge_factor = %g "
           "times its first value (%.4g): training diverged; the step size %g is probably too large: try a smaller "
           "[optimizer] lr, or `dptrain sweep` to find where training diverges",
           (long long)s->t.step, mean, (long long)s->iv.steps, dp_plural(s->iv.steps), factor, s->first_loss,
           s->last_lr);
  return 1;
}

/* After the log line that showed it: a warning, or the end of the run (on every rank). */
static int on_divergence(run_state *s, const char *why) {
  if (s->t.cfg->train.on_divergence == DP_DIVERGENCE_ABORT) {
    dp_error_set_reporter(0);
    return dp_fail(DP_EDIVERGED, "%s", why);
  }
  dp_metrics_note(&s->mt, "warning: %s ([train] on_divergence = abort stops such a run)\n", why);
  return 0;
}

static void track_best(run_state *s);

/* The ranks' slices of the test set may take them unequal times: a known slow phase for the watchdog. */
static int evaluate(run_state *s) {
  double t0 = MPI_Wtime();
  dp_comm_slow_phase(s->t.comm, "an evaluation", 0);
  if (s->d->has_test)
    DP_TRY(dp_trainer_evaluate(&s->t, &s->d->test, &s->test));
  if (s->d->has_val)
    DP_TRY(dp_trainer_evaluate(&s->t, &s->d->val, &s->val));
  else if (s->has_val)
    DP_TRY(dp_trainer_evaluate_rows(&s->t, &s->d->train, s->t.val.rows, s->t.val.n_val, &s->val));
  dp_comm_slow_phase_end(s->t.comm);
  s->eval_s += MPI_Wtime() - t0;
  dp_timeline_span(s->t.tl, "evaluate", -1, t0, MPI_Wtime());
  s->evaluated = 1;
  int rc = dp_metrics_eval(&s->mt, s->t.step, s->t.epoch, s->d->has_test ? &s->test : NULL,
                           s->has_val ? &s->val : NULL, s->train_s);
  if (rc < 0 && s->io == 0)
    s->io = rc;
  track_best(s);
  return 0;
}

/* Rank 0 writes the checkpoint; the others go on. A failure reaches them with the next step's
 * allreduce (io), or through the agreement the caller makes when it stops here. */
static void write_checkpoint(run_state *s, int best) {
  int rc = dp_trainer_sync_stats(&s->t); /* every rank: a collective only with local batch norm */
  if (rc < 0 && s->io == 0)
    s->io = rc;
  if (s->t.comm->rank != 0 || rc < 0)
    return;
  char path[DP_FILE_PATH_MAX];
  double t0 = MPI_Wtime();
  dp_fault_slow_checkpoint();
  rc = best ? dp_ckpt_save_as(&s->t.state, s->ckpt_dir, "best.h5", path, sizeof path)
            : dp_ckpt_save(&s->t.state, s->ckpt_dir, s->t.step, s->t.cfg->checkpoint.keep_last, path, sizeof path);
  dp_timeline_span(s->t.tl, "checkpoint", -1, t0, MPI_Wtime());
  if (rc < 0 && s->io == 0)
    s->io = rc;
  if (rc == 0)
    dp_metrics_note(&s->mt, "%s: %s\n", best ? "best" : "checkpoint", path);
}

/* The others wait for rank 0's write in their next collective, however long it takes: no deadline
 * there, or a collective_timeout shorter than a write would end a healthy job. */
static void save(run_state *s) {
  s->saved_step = s->t.step;
  s->last_save = MPI_Wtime();
  dp_comm_slow_phase(s->t.comm, "rank 0's checkpoint write", 0);
  write_checkpoint(s, 0);
  dp_comm_slow_phase_end(s->t.comm);
}

static const char *watched_name(const dp_config *cfg) {
  return cfg->checkpoint.keep_best == DP_BEST_VAL_ACC ? "val_acc" : "val_loss";
}

/* After an evaluation with validation data. A better figure is the new best (best.h5 with keep_best);
 * early stopping counts the evaluations since the figure last improved by at least min_delta. Every
 * rank holds the same reduced figures, so all decide alike (and all make best.h5's collective). */
static void track_best(run_state *s) {
  const dp_config *cfg = s->t.cfg;
  if (!s->has_val)
    return;
  int up = cfg->checkpoint.keep_best == DP_BEST_VAL_ACC; /* larger is better */
  double v = up ? s->val.acc : s->val.loss, delta = cfg->train.early_stop_min_delta;
  int first = s->best_step < 0;
  if (isfinite(v) && (first || (up ? v > s->best : v < s->best))) {
    s->best = v, s->best_step = s->t.step;
    if (cfg->checkpoint.keep_best != DP_BEST_OFF) {
      dp_comm_slow_phase(s->t.comm, "rank 0's best.h5 write", 0);
      write_checkpoint(s, 1);
      dp_comm_slow_phase_end(s->t.comm);
    }
  }
  double gain = up ? v - s->stop_ref : s->stop_ref - v;
  if (isfinite(v) && (first || (gain > 0 && gain >= delta)))
    s->stop_ref = v, s->stale_evals = 0;
  else
    s->stale_evals++;
  s->early_stop = cfg->train.early_stop_patience > 0 && s->stale_evals >= cfg->train.early_stop_patience;
}

/* The run's last line when early stopping ended it: which evaluation was best, and where its model is. */
static void note_early_stop(run_state *s) {
  const dp_config *cfg = s->t.cfg;
  char where[DP_FILE_PATH_MAX + 64];
  if (cfg->checkpoint.keep_best != DP_BEST_OFF)
    snprintf(where, sizeof where, "its model is %s/best.h5", s->ckpt_dir);
  else
    snprintf(where, sizeof where, "[checkpoint] keep_best = %s would have kept its model", watched_name(cfg));
  dp_metrics_note(&s->mt, "early stop at step %lld: %s did not improve by early_stop_min_delta = %g in %lld "
                  "evaluation%s (early_stop_patience); the best was %s %.5g at step %lld: %s\n",
                  (long long)s->t.step, watched_name(cfg), cfg->train.early_stop_min_delta,
                  (long long)s->stale_evals, dp_plural(s->stale_evals), watched_name(cfg), s->best,
                  (long long)s->best_step, where);
}

static int checkpoint_due(const run_state *s, int epoch_end) {
  const dp_config *cfg = s->t.cfg;
  int64_t every = cfg->checkpoint.every_steps;
  return s->save || (every > 0 && s->t.step % every == 0) || (cfg->checkpoint.at_epoch_end && epoch_end);
}

/* What this rank asks of the next step: a signal here, a time-based save due (rank 0), the logged
 * step's gradient norm, and rank 0's pending failure. */
static dp_step_request step_request(const run_state *s) {
  const dp_trainer *t = &s->t;
  double every = t->cfg->checkpoint.every_seconds;
  return (dp_step_request){.local_status = s->io,
                           .stop = stop_signal != 0,
                           .save = t->comm->rank == 0 && every > 0 && MPI_Wtime() - s->last_save >= every,
                           .want_grad_norm = (t->step + 1) % t->cfg->train.log_every == 0};
}

/* The loss since the last log line; at an epoch's end the epoch's mean over its samples, not the
 * last (maybe short) batch's or interval's. */
static double bar_loss(const run_state *s) {
  if (s->t.pos == s->t.steps_per_epoch && s->epoch_samples > 0)
    return s->epoch_loss / (double)s->epoch_samples;
  return s->iv.steps ? s->iv.loss / (double)s->iv.steps : s->last_loss;
}

/* The live bar on a terminal (rank 0): ETAs from this session's mean step time. */
static void show_progress(run_state *s) {
  const dp_trainer *t = &s->t;
  int64_t done = t->step - s->start_step;
  double per_step = done > 0 ? s->train_s / (double)done : 0.0;
  dp_progress p = {.step = t->step,
                   .total_steps = t->total_steps,
                   .epoch = t->epoch,
                   .pos = t->pos,
                   .steps_per_epoch = t->steps_per_epoch,
                   .loss = bar_loss(s),
                   .lr = s->last_lr,
                   .samples_per_s = per_step > 0 ? (double)t->batch / per_step : 0.0,
                   .eta_epoch_s = per_step * (double)(t->steps_per_epoch - t->pos),
                   .eta_run_s = per_step * (double)(t->total_steps - t->step)};
  dp_metrics_progress(&s->mt, &p);
}

/* The whole state from a checkpoint, its open interval's timings included (collective). */
static int load_state(run_state *s, const char *path) {
  DP_TRY(dp_ckpt_load(&s->t.state, path, 0, s->t.comm));
  dp_trainer_resumed(&s->t);
  return 0;
}

/* on_nonfinite = restore: back to the newest checkpoint with half the step size. Every rank got
 * the same DP_ENONFINITE from the same reduced values, so they all come here. Collective. */
static int restore(run_state *s, int rc) {
  dp_trainer *t = &s->t;
  char path[DP_FILE_PATH_MAX];
  int64_t failed_at = t->step + 1;
  if (t->cfg->train.on_nonfinite != DP_NONFINITE_RESTORE)
    return rc;
  char why[600];
  snprintf(why, sizeof why, "%s", dp_errmsg(rc)); /* dp_fail below rewrites that buffer */
  if (s->restores >= t->cfg->train.max_restores)
    return dp_fail(rc, "%s (after %d restore%s with a halved step size: giving up)", why, s->restores,
                   dp_plural(s->restores));
  int have = 0;
  if (t->comm->rank == 0)
    dp_ckpt_latest(s->ckpt_dir, path, sizeof path, &have);
  DP_TRY(dp_comm_bcast(t->comm, &have, sizeof have, 0));
  DP_TRY(dp_comm_bcast(t->comm, path, sizeof path, 0));
  if (!have)
    return dp_fail(rc, "%s (no checkpoint in %s to restore)", why, s->ckpt_dir);
  dp_error_clear();
  dp_error_set_reporter(-1);
  double factor = t->lr_factor;
  dp_comm_slow_phase(t->comm, "rank 0's checkpoint read", 0);
  DP_TRY(load_state(s, path));
  dp_comm_slow_phase_end(t->comm);
  t->lr_factor = factor * 0.5;
  s->restores++;
  dp_metrics_note(&s->mt, "step %lld: loss or gradient not finite: restored %s (step %lld), step size x%g\n",
                  (long long)failed_at, path, (long long)t->step, t->lr_factor);
  return 0;
}

/* A run that skips most of its updates is not training: past either bound it stops as diverged,
 * before the checkpoint of this step. Every rank has the same r.skipped, so all stop here alike. */
static int count_skip(run_state *s, int skipped, double lr) {
  const dp_config *cfg = s->t.cfg;
  s->skips_in_row = skipped ? s->skips_in_row + 1 : 0;
  s->skips += skipped != 0;
  int64_t row = cfg->train.max_consecutive_skips, all = cfg->train.max_skips;
  if (!skipped || ((row == 0 || s->skips_in_row < row) && (all == 0 || s->skips < all)))
    return 0;
  dp_error_set_reporter(0);
  return dp_fail(DP_ENONFINITE,
                 "step %lld: %lld update%s skipped (%lld in a row) for a non-finite loss or gradient, the limit of "
                 "[train] %s = %lld (diverged): the step size %g is probably too large; try a smaller "
                 "[optimizer] lr, or `dptrain sweep`",
                 (long long)s->t.step, (long long)s->skips, dp_plural(s->skips), (long long)s->skips_in_row,
                 row > 0 && s->skips_in_row >= row ? "max_consecutive_skips" : "max_skips",
                 (long long)(row > 0 && s->skips_in_row >= row ? row : all), lr);
}

static int one_step(run_state *s) {
  dp_trainer *t = &s->t;
  dp_step_result r;
  dp_fault_before_step(t->comm->rank, t->step + 1);
  dp_step_request req = step_request(s);
  double t0 = MPI_Wtime();
  int rc = dp_trainer_step(t, &req, &r);
  if (rc == DP_ENONFINITE)
    return restore(s, rc);
  DP_TRY(rc);
  s->stop = r.stop, s->save = r.save, s->converged = r.converged;
  if (r.skipped)
    dp_metrics_note(&s->mt, "step %lld: loss or gradient not finite: update skipped\n", (long long)t->step);
  DP_TRY(count_skip(s, r.skipped, r.lr));
  double wall = MPI_Wtime() - t0;
  s->train_s += wall;
  s->last_loss = r.loss, s->last_lr = r.lr;
  s->epoch_loss += r.loss * (double)r.batch, s->epoch_samples += r.batch;
  s->iv.loss += r.loss;
  /* A metric that does not apply is NaN: kept out of the sums, which checkpoints range-check. */
  s->iv.acc += isfinite(r.acc) ? r.acc : 0.0;
  s->iv.mae += isfinite(r.mae) ? r.mae : 0.0;
  s->iv.evals += r.evals;
  if (s->first_loss == 0.0 && isfinite(r.loss))
    s->first_loss = r.loss;
  s->iv.steps++;
  s->iv.samples += r.batch;
  s->iv.wall += wall;
  s->iv.timed_steps++;
  s->iv.timed_samples += r.batch;
  s->iv.compute += r.time.compute;
  s->iv.comm += r.time.comm;
  s->iv.optim += r.time.optim;
  s->evaluated = 0;
  const dp_config *cfg = t->cfg;
  /* Not at a stop signal's step: the open interval goes into the checkpoint, and the resumed run
   * logs it where an uninterrupted run would. */
  if (t->step % cfg->train.log_every == 0 || t->step == t->total_steps || s->converged) {
    char why[400];
    int div = diverged(s, why, sizeof why);
    int rc = log_interval(s, &r);
    if (rc < 0 && s->io == 0)
      s->io = rc;
    if (div)
      DP_TRY(on_divergence(s, why));
  }
  show_progress(s);
  if (t->pos == t->steps_per_epoch)
    s->epoch_loss = 0.0, s->epoch_samples = 0;
  /* Every eval_every steps, or at each epoch's end when it is 0 (with a full batch every step
   * ends an epoch: eval_every thins the evaluations out). */
  int epoch_end = t->pos == t->steps_per_epoch;
  int due = cfg->train.eval_every > 0 ? t->step % cfg->train.eval_every == 0 : epoch_end;
  if ((s->d->has_test || s->has_val) && due)
    DP_TRY(evaluate(s));
  if (s->stop || checkpoint_due(s, epoch_end))
    save(s);
  return 0;
}

/* Writes the timeline once its steps are done (or the run ends first). Collective. */
static int timeline_due(run_state *s, int force) {
  if (!s->t.tl || (!force && s->t.step < s->tl_end))
    return 0;
  dp_trainer_set_timeline(&s->t, NULL);
  const char *path = s->t.cfg->train.timeline;
  DP_TRY(dp_timeline_write(&s->tl, s->t.comm, path));
  dp_metrics_note(&s->mt, "timeline: %s (open in chrome://tracing or ui.perfetto.dev)\n", path);
  return 0;
}

static int timeline_start(run_state *s) {
  const dp_config *cfg = s->t.cfg;
  if (!cfg->train.timeline[0])
    return 0;
  /* per step: data, forward, backward per pass, a span per bucket, optimizer, evaluation, checkpoint */
  int per_step = 3 * 4 + s->t.sync.n + 10;
  DP_TRY(dp_timeline_start(&s->tl, s->t.comm, cfg->train.timeline_steps * per_step + 64));
  dp_trainer_set_timeline(&s->t, &s->tl);
  s->tl_end = s->t.step + cfg->train.timeline_steps;
  return 0;
}

static int train_loop(run_state *s) {
  dp_trainer *t = &s->t;
  DP_TRY(timeline_start(s));
  while (t->step < t->total_steps && !s->converged && !s->stop && !s->early_stop) {
    DP_TRY(one_step(s));
    DP_TRY(timeline_due(s, 0));
  }
  DP_TRY(timeline_due(s, 1));
  if (s->stop && t->step < t->total_steps && !s->converged) { /* saved at this step boundary by one_step */
    DP_TRY(dp_comm_agree(t->comm, s->io, NULL));
    dp_metrics_note(&s->mt, "stopped by a signal at step %lld: the checkpoint above resumes it (--resume auto)\n",
              (long long)t->step);
    return 0;
  }
  if ((s->d->has_test || s->has_val) && !s->evaluated && t->step > s->start_step) /* not for a resumed, finished run */
    DP_TRY(evaluate(s));
  if (t->cfg->checkpoint.at_end && s->saved_step != t->step)
    save(s);
  if (s->early_stop && t->step < t->total_steps)
    note_early_stop(s);
  return dp_comm_agree(t->comm, s->io, NULL);
}

static void print_summary(run_state *s, double startup_s) {
  const dp_trainer *t = &s->t;
  dp_metrics_note(&s->mt, "%s", ""); /* a run stopped mid-epoch leaves its bar open */
  double samples = (double)(dp_trainer_samples_seen(t) - s->start_samples);
  if (s->mt.line_search) /* each iteration evaluates the full batch several times: no rate of samples */
    fprintf(s->out, "done: %lld iteration%s, %lld full-batch evaluation%s in %.2f s of training; start-up %.2f s, "
                    "evaluation %.2f s\n",
            (long long)t->step, dp_plural(t->step), (long long)t->optim.lbfgs.evals, dp_plural(t->optim.lbfgs.evals),
            s->train_s, startup_s, s->eval_s);
  else
    fprintf(s->out, "done: %lld step%s, %.0f sample%s in %.2f s of training (%.0f samples/s); start-up %.2f s, "
                    "evaluation %.2f s\n",
            (long long)t->step, dp_plural(t->step), samples, dp_plural((long long)samples), s->train_s,
            s->train_s > 0 ? samples / s->train_s : 0.0, startup_s,
            s->eval_s);
  char test[128] = "", val[128] = "";
  if (s->evaluated && s->d->has_test)
    dp_scores_format(test, sizeof test, "test", &s->test, s->mt.regression);
  if (s->evaluated && s->has_val)
    dp_scores_format(val, sizeof val, "val", &s->val, s->mt.regression);
  if (s->evaluated)
    fprintf(s->out, "final: %s%s%s\n", test, test[0] && val[0] ? "  " : "", val);
  fflush(s->out);
}

/* A resumed run at or past its end (the same run resumed again, or a shorter max_steps) says so
 * instead of training nothing and reporting it. */
static void check_finished(run_state *s, const char *path) {
  const dp_trainer *t = &s->t;
  s->finished = t->step >= t->total_steps;
  if (s->finished && s->out)
    fprintf(s->out, "resume: %s is at step %lld, %s this run's %lld step%s: nothing to train (raise train.epochs "
                    "or train.max_steps%s to go on)\n",
            path, (long long)t->step, t->step == t->total_steps ? "the end of" : "past", (long long)t->total_steps,
            dp_plural(t->total_steps),
            dp_optim_line_search(&t->optim) ? ", or optimizer.max_iter" : "");
}

/* A checkpoint from outside the checkpoint directory must not continue there among another run's
 * (an older checkpoint carries no run id: unknown, so not the same). Rank 0, after the load, which
 * reports a damaged file first; collective. */
static int same_run(run_state *s, const char *path, int overwrite) {
  char note[3 * DP_FILE_PATH_MAX] = "";
  int rc = 0;
  if (s->t.comm->rank == 0)
    rc = dp_rundir_resume(s->t.cfg->train.out_dir, s->ckpt_dir, path, dp_state_loaded(&s->t.state, DP_RUN_ID),
                          overwrite, note, sizeof note);
  DP_TRY(dp_comm_agree(s->t.comm, rc, NULL));
  if (s->out)
    fputs(note, s->out);
  return 0;
}

/* A resume goes on with the input transform the weights were trained on: one that differs from what
 * this configuration and data file give is refused like another changed data key. Not after
 * init_from, whose checkpoint's transform the run took. Collective. */
static int load_same_transform(run_state *s, const char *path) {
  const dp_dataset *ds = s->t.train;
  size_t bytes = sizeof(float) * (size_t)ds->d;
  float *mine = malloc(2 * bytes);
  int rc = dp_comm_agree(s->t.comm, mine ? 0 : dp_fail(DP_ENOMEM, "out of memory"), NULL);
  if (rc == 0) {
    memcpy(mine, ds->x_scale, bytes);
    memcpy((char *)mine + bytes, ds->x_shift, bytes);
    rc = load_state(s, path); /* every rank has its status: the load agreed on it */
  }
  int changed = rc == 0 && s->t.comm->rank == 0 && !s->t.cfg->model.init_from[0] &&
                (memcmp(mine, ds->x_scale, bytes) || memcmp((char *)mine + bytes, ds->x_shift, bytes));
  free(mine);
  if (rc < 0)
    return rc;
  if (changed)
    rc = dp_fail(DP_ECONFIG, "%s: its input transform (/input/scale, /input/shift) differs from the one [data] "
                 "standardize, mean and std give with %s (its statistics or scale changed?): a resume must see the "
                 "inputs the weights were trained on (start afresh, or train from it with [model] init_from)", path,
                 ds->path);
  return dp_comm_agree(s->t.comm, rc, NULL);
}

/* A run that early stopping ended stays ended when resumed, until the patience is raised. */
static void check_stopped_early(run_state *s, const char *path) {
  int patience = s->t.cfg->train.early_stop_patience;
  if (s->finished || patience == 0 || s->stale_evals < patience)
    return;
  s->finished = 1;
  if (s->out)
    fprintf(s->out, "resume: %s: early stopping ended this run at step %lld (%s did not improve in %lld evaluation%s; "
                    "the best was at step %lld): nothing to train (raise train.early_stop_patience to go on)\n",
            path, (long long)s->t.step, watched_name(s->t.cfg), (long long)s->stale_evals,
            dp_plural(s->stale_evals), (long long)s->best_step);
}

/* The checkpoint at path, once its stored configuration is found compatible with this one. */
static int resume_at(run_state *s, const char *path, int overwrite) {
  dp_trainer *t = &s->t;
  dp_config *stored = NULL;
  int rc = dp_comm_agree(t->comm, t->comm->rank == 0 ? dp_resume_check(t, path, &stored) : 0, NULL);
  if (rc == 0)
    rc = load_same_transform(s, path);
  if (rc == 0)
    rc = same_run(s, path, overwrite);
  if (rc == 0) {
    s->saved_step = s->start_step = t->step;
    s->start_samples = dp_trainer_samples_seen(t);
    if (s->out)
      fprintf(s->out, "resumed from %s at step %lld (epoch %lld)\n", path, (long long)t->step,
              (long long)t->epoch + 1);
    if (s->out && stored)
      dp_resume_report(stored, t, s->out);
    check_finished(s, path);
    check_stopped_early(s, path);
  }
  free(stored);
  return rc;
}

/* --resume PATH, or auto: the newest complete checkpoint in the directory; *fresh = 1 when auto
 * finds none. */
static int resume(run_state *s, const char *how, int overwrite, int *fresh) {
  dp_trainer *t = &s->t;
  char path[DP_FILE_PATH_MAX] = "";
  int have = 1;
  *fresh = 0;
  if (!strcmp(how, "auto")) {
    if (t->comm->rank == 0)
      dp_ckpt_latest(s->ckpt_dir, path, sizeof path, &have);
    DP_TRY(dp_comm_bcast(t->comm, &have, sizeof have, 0));
    if (!have) {
      if (s->out)
        fprintf(s->out, "resume: no checkpoint in %s, starting fresh\n", s->ckpt_dir);
      *fresh = 1;
      return 0;
    }
  } else {
    snprintf(path, sizeof path, "%s", how);
  }
  return resume_at(s, path, overwrite);
}

/* The interval's timing sums (seconds): written since a resume's first line counts the steps before
 * the checkpoint too; older checkpoints lack them (that line then times the steps since). */
static int register_timings(dp_state *st, interval *iv) {
  DP_TRY(dp_state_f64(st, &iv->wall, 0, INFINITY, DP_ST_OPTIONAL, "interval_wall"));
  DP_TRY(dp_state_i64(st, &iv->timed_steps, 0, INT64_MAX, DP_ST_OPTIONAL, "interval_timed_steps"));
  DP_TRY(dp_state_i64(st, &iv->timed_samples, 0, INT64_MAX, DP_ST_OPTIONAL, "interval_timed_samples"));
  DP_TRY(dp_state_f64(st, &iv->compute, 0, INFINITY, DP_ST_OPTIONAL, "interval_compute"));
  DP_TRY(dp_state_f64(st, &iv->comm, 0, INFINITY, DP_ST_OPTIONAL, "interval_comm"));
  return dp_state_f64(st, &iv->optim, 0, INFINITY, DP_ST_OPTIONAL, "interval_optim");
}

/* The open logging interval is part of the state, so that a resumed run logs the same
 * metrics.jsonl lines as an uninterrupted one. */
static int register_interval(run_state *s) {
  dp_state *st = &s->t.state;
  DP_TRY(dp_state_f64(st, &s->iv.loss, -INFINITY, INFINITY, 0, "interval_loss"));
  DP_TRY(dp_state_f64(st, &s->iv.acc, -INFINITY, INFINITY, 0, "interval_acc"));
  DP_TRY(dp_state_i64(st, &s->iv.steps, 0, INT64_MAX, 0, "interval_steps"));
  /* Written since regression reports its MAE and L-BFGS its evaluations; older checkpoints had 0. */
  DP_TRY(dp_state_f64(st, &s->iv.mae, 0, INFINITY, DP_ST_OPTIONAL, "interval_mae"));
  DP_TRY(dp_state_i64(st, &s->iv.evals, 0, INT64_MAX, DP_ST_OPTIONAL, "interval_evals"));
  DP_TRY(dp_state_f64(st, &s->first_loss, 0, INFINITY, DP_ST_OPTIONAL, "first_loss"));
  /* The bar's epoch mean after a resume mid-epoch; older checkpoints lack it (the mean since then). */
  DP_TRY(dp_state_f64(st, &s->epoch_loss, -INFINITY, INFINITY, DP_ST_OPTIONAL, "epoch_loss"));
  DP_TRY(dp_state_i64(st, &s->epoch_samples, 0, INT64_MAX, DP_ST_OPTIONAL, "epoch_samples"));
  DP_TRY(register_timings(st, &s->iv));
  /* on_nonfinite = skip_step's counts; older checkpoints had none (0). */
  DP_TRY(dp_state_i64(st, &s->skips, 0, INT64_MAX, DP_ST_OPTIONAL, "skips"));
  DP_TRY(dp_state_i64(st, &s->skips_in_row, 0, INT64_MAX, DP_ST_OPTIONAL, "skips_in_row"));
  return dp_state_i64(st, &s->iv.samples, 0, INT64_MAX, 0, "interval_samples");
}

/* A fresh start's id stays; a resume loads the run's own (an older checkpoint has none: the run goes
 * on under the new one). Rank 0's alone matters: only it writes checkpoints. */
static int register_run_id(run_state *s) {
  if (s->t.comm->rank == 0)
    dp_rundir_new_id(s->run_id, sizeof s->run_id);
  return dp_state_str(&s->t.state, s->run_id, sizeof s->run_id, DP_ST_OPTIONAL, DP_RUN_ID);
}

/* keep_best's and early stopping's standing, so that a resumed run stops where an uninterrupted one
 * would; older checkpoints lack them (no best yet). */
static int register_best(run_state *s) {
  dp_state *st = &s->t.state;
  DP_TRY(dp_state_f64(st, &s->best, -INFINITY, INFINITY, DP_ST_OPTIONAL, "best_value"));
  DP_TRY(dp_state_i64(st, &s->best_step, -1, INT64_MAX, DP_ST_OPTIONAL, "best_step"));
  DP_TRY(dp_state_f64(st, &s->stop_ref, -INFINITY, INFINITY, DP_ST_OPTIONAL, "early_stop_ref"));
  return dp_state_i64(st, &s->stale_evals, 0, INT64_MAX, DP_ST_OPTIONAL, "early_stop_stale");
}

/* keep_best and early stopping judge validation figures: without any, they are a mistake. */
static int check_val_keys(const run_state *s) {
  const dp_config *cfg = s->t.cfg;
  if (s->has_val || (cfg->checkpoint.keep_best == DP_BEST_OFF && cfg->train.early_stop_patience == 0))
    return 0;
  char keys[128] = "";
  if (cfg->checkpoint.keep_best != DP_BEST_OFF)
    snprintf(keys, sizeof keys, "[checkpoint] keep_best = %s%s", watched_name(cfg),
             cfg->train.early_stop_patience > 0 ? " and " : "");
  if (cfg->train.early_stop_patience > 0)
    snprintf(keys + strlen(keys), sizeof keys - strlen(keys), "[train] early_stop_patience = %d",
             cfg->train.early_stop_patience);
  return dp_fail(DP_ECONFIG, "%s: %s need%s validation data: set [data] val_fraction, or add a /val group to %s",
                 cfg->file, keys, strstr(keys, " and ") ? "" : "s", cfg->data.path);
}

int dp_run_init_from(dp_trainer *t) {
  const char *path = t->cfg->model.init_from;
  return path[0] ? dp_ckpt_load(&t->state, path, DP_ST_MODEL, t->comm) : 0;
}

/* Rank 0 locks out_dir, and the checkpoint directory when it lies outside: one run writes there. */
static int claim_dirs(run_state *s, const dp_config *cfg) {
  char note[2][DP_FILE_PATH_MAX + 400] = {"", ""};
  size_t n = strlen(cfg->train.out_dir);
  int inside = !strncmp(s->ckpt_dir, cfg->train.out_dir, n) && s->ckpt_dir[n] == '/';
  int rc = 0;
  if (s->t.comm->rank == 0) {
    rc = dp_rundir_lock_dir(&s->lock, cfg->train.out_dir, note[0], sizeof note[0]);
    if (rc == 0 && !inside)
      rc = dp_rundir_lock_dir(&s->lock, s->ckpt_dir, note[1], sizeof note[1]);
  }
  DP_TRY(dp_comm_agree(s->t.comm, rc, NULL));
  if (s->out)
    fprintf(s->out, "%s%s", note[0], note[1]);
  return 0;
}

/* Where the run starts: a checkpoint (--resume), or a fresh start from the initial or init_from
 * weights in a checkpoint directory that holds no other run's checkpoints. init_from is read before
 * --overwrite moves anything aside: it may name one of those checkpoints. A resume never reads it:
 * the checkpoint holds the weights, and the file may be long gone. */
static int start_point(run_state *s, const char *how, int overwrite) {
  int fresh = 1;
  if (how)
    DP_TRY(resume(s, how, overwrite, &fresh));
  if (!fresh)
    return 0;
  DP_TRY(dp_run_init_from(&s->t));
  const dp_config *cfg = s->t.cfg;
  char note[3 * DP_FILE_PATH_MAX] = "";
  int rc = s->t.comm->rank == 0 ? dp_rundir_fresh(cfg->train.out_dir, s->ckpt_dir, overwrite, note, sizeof note) : 0;
  DP_TRY(dp_comm_agree(s->t.comm, rc, NULL));
  if (s->out)
    fputs(note, s->out);
  return 0;
}

static int start_output(run_state *s, const dp_config *cfg, const dp_run_opts *o) {
  dp_comm *comm = s->t.comm;
  int rc = dp_metrics_open(&s->mt, cfg->train.out_dir, comm->rank == 0, s->out, s->saved_step, o->progress);
  s->mt.verbose = o->verbose;
  s->mt.regression = cfg->model.loss == DP_LOSS_MSE;
  s->mt.line_search = dp_optim_line_search(&s->t.optim);
  if (rc == 0 && comm->rank == 0)
    rc = write_config_copy(cfg);
  return dp_comm_agree(comm, rc, NULL);
}

/* A stop signal during start-up ends the run before its first step, at the end of the phase it came
 * in (a read cannot be cut short): nothing trained, so no checkpoint to write (exit 0). */
static void startup_stopped(FILE *out) {
  if (out)
    fprintf(out, "stopped by a signal during start-up, before the first step: nothing trained, no checkpoint "
                 "written; start it the same way again to go on\n");
}

static int run_with_data(const dp_config *cfg, dp_comm *comm, run_data *d, const char *resume_from, FILE *out,
                         const dp_run_opts *o, double start) {
  dp_blas_threads threads;
  DP_TRY(dp_comm_agree(comm, dp_blas_set_threads(comm, cfg->train.threads, &threads), NULL));
  run_state *s = calloc(1, sizeof *s);
  if (!s)
    return dp_fail(DP_ENOMEM, "out of memory");
  s->d = d;
  s->out = out;
  s->saved_step = -1;
  s->best_step = -1;
  dp_rundir_lock_init(&s->lock);
  s->last_save = MPI_Wtime();
  if (cfg->checkpoint.dir[0])
    snprintf(s->ckpt_dir, sizeof s->ckpt_dir, "%s", cfg->checkpoint.dir);
  else
    snprintf(s->ckpt_dir, sizeof s->ckpt_dir, "%.*s/checkpoints", DP_PATH_MAX - 20, cfg->train.out_dir);
  int rc = dp_comm_agree(comm, dp_comm_set_timeout(comm, cfg->train.collective_timeout), NULL);
  /* Rank 0 alone initialises the weights, reads a resumed checkpoint, prepares the directories. */
  dp_comm_slow_phase(comm, "start-up", 0);
  if (rc == 0)
    rc = dp_trainer_create(&s->t, cfg, comm, &d->train);
  if (rc == 0)
    rc = dp_comm_agree(comm, register_interval(s), NULL);
  if (rc == 0)
    rc = dp_comm_agree(comm, register_best(s), NULL);
  if (rc == 0)
    rc = dp_comm_agree(comm, register_run_id(s), NULL);
  if (rc == 0 && d->has_test)
    rc = dp_check_data_fits(cfg, comm, &d->test, s->t.model.in_dim, s->t.model.out_dim);
  if (rc == 0 && d->has_val)
    rc = dp_check_data_fits(cfg, comm, &d->val, s->t.model.in_dim, s->t.model.out_dim);
  s->has_val = d->has_val || s->t.val.n_val > 0;
  if (rc == 0)
    rc = dp_comm_agree(comm, check_val_keys(s), NULL);
  if (rc == 0)
    rc = claim_dirs(s, cfg);
  dp_fault_slow_startup("checkpoint");
  if (rc == 0)
    rc = start_point(s, resume_from, o->overwrite);
  dp_dataset_copy_transform(&d->test, &d->train); /* the one the start point's model came with */
  dp_dataset_copy_transform(&d->val, &d->train);
  if (rc == 0 && !s->finished)
    rc = start_output(s, cfg, o);
  if (rc == 0 && !s->finished)
    rc = dp_comm_agree(comm, dp_trainer_prefetch(&s->t), NULL);
  /* minima and maxima, one collective, which also tells every rank of a stop signal during start-up */
  double per_node[5] = {-(double)comm->node_size, (double)comm->node_size, -(double)threads.threads,
                        (double)threads.threads, stop_signal != 0};
  if (rc == 0)
    rc = dp_comm_allreduce_max_f64(comm, per_node, 5);
  per_node[0] = -per_node[0], per_node[2] = -per_node[2];
  if (rc == 0 && !s->finished && per_node[4] > 0)
    startup_stopped(out);
  else if (rc == 0 && !s->finished) {
    if (out)
      print_startup(out, &s->t, d, &threads, per_node);
    double startup = MPI_Wtime() - start;
    dp_comm_slow_phase_end(comm);
    rc = train_loop(s);
    if (rc == 0 && out)
      print_summary(s, startup);
  }
  dp_metrics_close(&s->mt);
  dp_timeline_free(&s->tl);
  dp_trainer_free(&s->t);
  dp_rundir_unlock(&s->lock);
  free(s);
  return rc;
}

int dp_train_run(const dp_config *cfg, dp_comm *comm, const char *resume_from, const dp_run_opts *o) {
  double start = MPI_Wtime();
  FILE *out = comm->rank == 0 ? o->out : NULL;
  dp_catch_stop_signals(); /* again: harmless, and library users need not call it */
  run_data d;
  memset(&d, 0, sizeof d);
  dp_dataset_init(&d.train);
  dp_dataset_init(&d.test);
  dp_dataset_init(&d.val);
  int rc = dp_paths_check(cfg, comm, resume_from);
  dp_fault_slow_startup("data");
  if (rc == 0)
    rc = open_data(cfg, comm, &d);
  double stop = stop_signal != 0; /* the data, the longest part of a start-up, may take minutes */
  if (rc == 0)
    rc = dp_comm_allreduce_max_f64(comm, &stop, 1);
  if (rc == 0 && stop > 0)
    startup_stopped(out);
  else if (rc == 0)
    rc = run_with_data(cfg, comm, &d, resume_from, out, o, start);
  dp_dataset_close(&d.train);
  dp_dataset_close(&d.test);
  dp_dataset_close(&d.val);
  dp_fault_peak_rss(comm->rank);
  return rc;
}
