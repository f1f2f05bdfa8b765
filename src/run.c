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
#include "dptrain/run.h"
#include "dptrain/train.h"
#include "faults.h"
#include "fsutil.h"

/* Hold the rows in memory when they take at most half of this rank's share of the node's memory. */
static int fits_in_memory(const dp_config *cfg, const dp_comm *comm, const dp_dataset *ds, int64_t rows) {
  if (cfg->data.in_memory != DP_INMEM_AUTO)
    return cfg->data.in_memory == DP_INMEM_TRUE;
  double bytes = (double)rows * (double)dp_row_bytes(ds->d, ds->x_u8);
  double share = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / comm->node_size;
  return bytes <= share / 2;
}

typedef struct {
  dp_dataset train, test;
  int has_test;
} run_data;

static int open_data(const dp_config *cfg, dp_comm *comm, run_data *d) {
  int rc = dp_dataset_open(&d->train, cfg->data.path, "train", NULL);
  DP_TRY(dp_comm_agree(comm, rc < 0 ? rc : 0, NULL));
  rc = dp_dataset_open(&d->test, cfg->data.path, "test", &d->has_test);
  DP_TRY(dp_comm_agree(comm, rc < 0 ? rc : 0, NULL));
  dp_dataset_standardize(&d->train, cfg->data.mean, cfg->data.std);
  dp_dataset_standardize(&d->test, cfg->data.mean, cfg->data.std);
  rc = 0;
  if (fits_in_memory(cfg, comm, &d->train, d->train.n))
    rc = dp_dataset_load(&d->train, 0, d->train.n);
  int64_t lo, hi; /* NaN or Inf in float x: each rank checks its share of the rows */
  dp_split_range(d->train.n, comm->rank, comm->size, &lo, &hi);
  if (rc == 0)
    rc = dp_dataset_check_finite(&d->train, lo, hi);
  if (rc == 0 && d->has_test) {
    dp_split_range(d->test.n, comm->rank, comm->size, &lo, &hi);
    if (hi > lo && fits_in_memory(cfg, comm, &d->test, hi - lo))
      rc = dp_dataset_load(&d->test, lo, hi);
    if (rc == 0)
      rc = dp_dataset_check_finite(&d->test, lo, hi);
  }
  return dp_comm_agree(comm, rc, NULL);
}

static int write_config(FILE *f, void *cfg) { return dp_config_write(cfg, f); }

static int write_config_copy(const dp_config *cfg) {
  char path[DP_FILE_PATH_MAX];
  snprintf(path, sizeof path, "%s/config.ini", cfg->train.out_dir);
  return dp_write_durable_stdio(path, "the configuration", write_config, (void *)cfg);
}

static void print_startup(FILE *out, const dp_trainer *t, const run_data *d, int threads, const double per_node[2]) {
  const dp_comm *c = t->comm;
  const dp_model *m = &t->model;
  fprintf(out, "dptrain: %d rank%s on %d node%s, %d BLAS thread%s per rank (OpenBLAS %s kernel)", c->size,
          c->size > 1 ? "s" : "", c->n_nodes, c->n_nodes > 1 ? "s" : "", threads, threads > 1 ? "s" : "",
          dp_blas_kernel());
  if (c->n_nodes > 1 && per_node[0] == per_node[1])
    fprintf(out, ", %.0f ranks per node", per_node[1]);
  else if (c->n_nodes > 1)
    fprintf(out, ", %.0f to %.0f ranks per node", per_node[0], per_node[1]);
  fputc('\n', out);
  fprintf(out, "model: %d inputs, %s, %zu parameters, %.3g MFLOP/sample forward (x3 to train)\n", m->in_dim,
          dp_loss_name(m->loss), m->n_params, dp_model_flops_forward(m) / 1e6);
  for (int i = 0; i < m->n_layers; i++) {
    const dp_dense *l = &m->layer[i];
    int norm = l->norm.kind != DP_NORM_NONE;
    fprintf(out, "  layer %d: dense %d -> %d, %s%s%s, weight (%d, %d), %zu parameters\n", i, l->in, l->out,
            norm ? dp_norm_name(l->norm.kind) : "", norm ? " norm, " : "", dp_act_name(l->act), l->out, l->in,
            dp_dense_params(l->in, l->out, norm));
  }
  fprintf(out, "data: %s: train %lld x %lld (%s, %s)", d->train.path, (long long)d->train.n, (long long)d->train.d,
          d->train.x_u8 ? "uint8" : "float32", d->train.mem_hi > d->train.mem_lo ? "in memory" : "read per batch");
  if (d->has_test)
    fprintf(out, ", test %lld", (long long)d->test.n);
  int64_t lo, hi;
  dp_split_range(t->batch, 0, c->size, &lo, &hi);
  fprintf(out, "\ntraining: global batch %lld, shards of %lld", (long long)t->batch, (long long)(hi - lo));
  if (t->batch % c->size)
    fprintf(out, "-%lld", (long long)(hi - lo - 1));
  fprintf(out, " rows per rank, %lld steps/epoch, %lld steps, gradients in %d allreduce bucket%s\n",
          (long long)t->steps_per_epoch, (long long)t->total_steps, t->sync.n, t->sync.n > 1 ? "s" : "");
}

/* Set by SIGTERM, SIGUSR1 (what SLURM sends before a time limit) or SIGINT; read at step boundaries. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

void dp_catch_stop_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
}

typedef struct {
  double loss, acc, t0;
  int64_t steps, samples;
  double compute, comm, optim; /* this rank's seconds over the interval */
} interval;

/* Everything one run carries from step to step. */
typedef struct {
  dp_trainer t;
  run_data *d;
  dp_metrics mt;
  FILE *out;
  interval iv;
  double train_s, eval_s, test_loss, test_acc;
  int evaluated;
  int io;                 /* rank 0's pending failure, sent along with the next step */
  int stop, save, converged; /* the last step's agreed flags */
  char ckpt_dir[DP_FILE_PATH_MAX];
  int64_t saved_step;     /* the step of the newest checkpoint written or loaded; -1 none */
  int64_t start_step, start_samples; /* where this session started (resumed runs) */
  double last_save;       /* rank 0's clock at the last save */
  dp_timeline tl;         /* [train] timeline */
  int64_t tl_end;         /* the step after which the timeline is written */
  double last_loss, last_lr;
  int restores;           /* on_nonfinite = restore so far */
} run_state;

/* The interval's time per step split, mean and max over ranks (one collective, at log steps only,
 * which every rank reaches alike): ms[0..3) means, ms[3..6) maxima of compute, comm, optimizer. */
static int reduce_times(run_state *s, double ms[6]) {
  const interval *iv = &s->iv;
  double k = iv->steps > 0 ? 1e3 / (double)iv->steps : 0.0;
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
  dp_step_log l = {.step = t->step,
                   .epoch = t->epoch,
                   .steps_per_epoch = t->steps_per_epoch,
                   .pos = t->pos,
                   .loss = iv->loss / iv->steps,
                   .acc = iv->acc / iv->steps,
                   .lr = r->lr,
                   .grad_norm = r->grad_norm,
                   .step_ms = 1e3 * (MPI_Wtime() - iv->t0) / (double)(iv->steps > 0 ? iv->steps : 1)};
  memcpy(l.compute_ms, ms, sizeof l.compute_ms);
  l.samples_per_s = iv->samples / (MPI_Wtime() - iv->t0);
  int rc = dp_metrics_step(&s->mt, &l);
  *iv = (interval){.t0 = MPI_Wtime()};
  return rc;
}

static int evaluate(run_state *s) {
  double t0 = MPI_Wtime();
  DP_TRY(dp_trainer_evaluate(&s->t, &s->d->test, &s->test_loss, &s->test_acc));
  s->eval_s += MPI_Wtime() - t0;
  dp_timeline_span(s->t.tl, "evaluate", -1, t0, MPI_Wtime());
  s->evaluated = 1;
  int rc = dp_metrics_eval(&s->mt, s->t.step, s->t.epoch, s->test_loss, s->test_acc, s->train_s);
  if (rc < 0 && s->io == 0)
    s->io = rc;
  return 0;
}

/* Rank 0 writes the checkpoint; the others go on. A failure reaches them with the next step's
 * allreduce (io), or through the agreement the caller makes when it stops here. */
static void save(run_state *s) {
  s->saved_step = s->t.step;
  s->last_save = MPI_Wtime();
  int rc = dp_trainer_sync_stats(&s->t); /* every rank: a collective only with local batch norm */
  if (rc < 0 && s->io == 0)
    s->io = rc;
  if (s->t.comm->rank != 0 || rc < 0)
    return;
  char path[DP_FILE_PATH_MAX];
  double t0 = MPI_Wtime();
  rc = dp_ckpt_save(&s->t.state, s->ckpt_dir, s->t.step, s->t.cfg->checkpoint.keep_last, path, sizeof path);
  dp_timeline_span(s->t.tl, "checkpoint", -1, t0, MPI_Wtime());
  if (rc < 0 && s->io == 0)
    s->io = rc;
  if (rc == 0)
    dp_metrics_note(&s->mt, "checkpoint: %s\n", path);
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
                   .loss = s->iv.steps ? s->iv.loss / (double)s->iv.steps : s->last_loss,
                   .lr = s->last_lr,
                   .samples_per_s = per_step > 0 ? (double)t->batch / per_step : 0.0,
                   .eta_epoch_s = per_step * (double)(t->steps_per_epoch - t->pos),
                   .eta_run_s = per_step * (double)(t->total_steps - t->step)};
  dp_metrics_progress(&s->mt, &p);
}

/* The whole state from a checkpoint; the interval's timing starts anew (collective). */
static int load_state(run_state *s, const char *path) {
  DP_TRY(dp_ckpt_load(&s->t.state, path, 0, s->t.comm));
  dp_trainer_resumed(&s->t);
  s->iv.compute = s->iv.comm = s->iv.optim = 0.0;
  s->iv.t0 = MPI_Wtime();
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
    return dp_fail(rc, "%s (after %d restores with a halved step size: giving up)", why, s->restores);
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
  DP_TRY(load_state(s, path));
  t->lr_factor = factor * 0.5;
  s->restores++;
  dp_metrics_note(&s->mt, "step %lld: loss or gradient not finite: restored %s (step %lld), step size x%g\n",
                  (long long)failed_at, path, (long long)t->step, t->lr_factor);
  return 0;
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
  s->train_s += MPI_Wtime() - t0;
  s->last_loss = r.loss, s->last_lr = r.lr;
  s->iv.loss += r.loss;
  s->iv.acc += r.acc;
  s->iv.steps++;
  s->iv.samples += r.batch;
  s->iv.compute += r.time.compute;
  s->iv.comm += r.time.comm;
  s->iv.optim += r.time.optim;
  s->evaluated = 0;
  const dp_config *cfg = t->cfg;
  if (t->step % cfg->train.log_every == 0 || t->step == t->total_steps || s->converged || s->stop) {
    int rc = log_interval(s, &r);
    if (rc < 0 && s->io == 0)
      s->io = rc;
  }
  show_progress(s);
  /* Every eval_every steps, or at each epoch's end when it is 0 (with a full batch every step
   * ends an epoch: eval_every thins the evaluations out). */
  int epoch_end = t->pos == t->steps_per_epoch;
  int due = cfg->train.eval_every > 0 ? t->step % cfg->train.eval_every == 0 : epoch_end;
  if (s->d->has_test && due) {
    DP_TRY(evaluate(s));
    s->iv.t0 = MPI_Wtime(); /* evaluation time is not training throughput */
  }
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
  int per_step = 3 * 4 + s->t.sync.n + 8;
  DP_TRY(dp_timeline_start(&s->tl, s->t.comm, cfg->train.timeline_steps * per_step + 64));
  dp_trainer_set_timeline(&s->t, &s->tl);
  s->tl_end = s->t.step + cfg->train.timeline_steps;
  return 0;
}

static int train_loop(run_state *s) {
  dp_trainer *t = &s->t;
  DP_TRY(timeline_start(s));
  while (t->step < t->total_steps && !s->converged && !s->stop) {
    DP_TRY(one_step(s));
    DP_TRY(timeline_due(s, 0));
  }
  DP_TRY(timeline_due(s, 1));
  if (s->stop) { /* saved at this step boundary by one_step */
    DP_TRY(dp_comm_agree(t->comm, s->io, NULL));
    dp_metrics_note(&s->mt, "stopped by a signal at step %lld: the checkpoint above resumes it (--resume auto)\n",
              (long long)t->step);
    return 0;
  }
  if (s->d->has_test && !s->evaluated && t->step > s->start_step) /* not for a resumed, finished run */
    DP_TRY(evaluate(s));
  if (t->cfg->checkpoint.at_end && s->saved_step != t->step)
    save(s);
  return dp_comm_agree(t->comm, s->io, NULL);
}

static void print_summary(run_state *s, double startup_s) {
  const dp_trainer *t = &s->t;
  dp_metrics_note(&s->mt, "%s", ""); /* a run stopped mid-epoch leaves its bar open */
  double samples = (double)(dp_trainer_samples_seen(t) - s->start_samples);
  fprintf(s->out, "done: %lld steps, %.0f samples in %.2f s of training (%.0f samples/s); start-up %.2f s, "
                  "evaluation %.2f s\n",
          (long long)t->step, samples, s->train_s, s->train_s > 0 ? samples / s->train_s : 0.0, startup_s, s->eval_s);
  if (s->evaluated)
    fprintf(s->out, "final: test_loss %.5f  test_acc %.4f\n", s->test_loss, s->test_acc);
  fflush(s->out);
}

/* --resume PATH, or auto: the newest complete checkpoint in the directory, or a fresh start. */
static int resume(run_state *s, const char *how) {
  dp_trainer *t = &s->t;
  char path[DP_FILE_PATH_MAX] = "";
  int have = 1;
  if (!strcmp(how, "auto")) {
    if (t->comm->rank == 0)
      dp_ckpt_latest(s->ckpt_dir, path, sizeof path, &have);
    DP_TRY(dp_comm_bcast(t->comm, &have, sizeof have, 0));
    if (!have) {
      if (s->out)
        fprintf(s->out, "resume: no checkpoint in %s, starting fresh\n", s->ckpt_dir);
      return 0;
    }
  } else {
    snprintf(path, sizeof path, "%s", how);
  }
  DP_TRY(load_state(s, path));
  s->saved_step = s->start_step = t->step;
  s->start_samples = dp_trainer_samples_seen(t);
  if (s->out)
    fprintf(s->out, "resumed from %s at step %lld (epoch %lld)\n", path, (long long)t->step, (long long)t->epoch + 1);
  return 0;
}

/* The open logging interval is part of the state, so that a resumed run logs the same
 * metrics.jsonl lines as an uninterrupted one. */
static int register_interval(run_state *s) {
  dp_state *st = &s->t.state;
  DP_TRY(dp_state_f64(st, &s->iv.loss, -INFINITY, INFINITY, 0, "interval_loss"));
  DP_TRY(dp_state_f64(st, &s->iv.acc, -INFINITY, INFINITY, 0, "interval_acc"));
  DP_TRY(dp_state_i64(st, &s->iv.steps, 0, INT64_MAX, 0, "interval_steps"));
  return dp_state_i64(st, &s->iv.samples, 0, INT64_MAX, 0, "interval_samples");
}

int dp_run_init_from(dp_trainer *t) {
  const char *path = t->cfg->model.init_from;
  return path[0] ? dp_ckpt_load(&t->state, path, DP_ST_MODEL, t->comm) : 0;
}

static int start_output(run_state *s, const dp_config *cfg, const dp_run_opts *o) {
  dp_comm *comm = s->t.comm;
  int rc = dp_metrics_open(&s->mt, cfg->train.out_dir, comm->rank == 0, s->out, s->saved_step, o->progress);
  s->mt.verbose = o->verbose;
  if (rc == 0 && comm->rank == 0)
    rc = write_config_copy(cfg);
  return dp_comm_agree(comm, rc, NULL);
}

static int run_with_data(const dp_config *cfg, dp_comm *comm, run_data *d, const char *resume_from, FILE *out,
                         const dp_run_opts *o, double start) {
  int threads = dp_blas_set_threads(cfg->train.threads, comm->node_size);
  run_state *s = calloc(1, sizeof *s);
  if (!s)
    return dp_fail(DP_ENOMEM, "out of memory");
  s->d = d;
  s->out = out;
  s->saved_step = -1;
  s->last_save = MPI_Wtime();
  if (cfg->checkpoint.dir[0])
    snprintf(s->ckpt_dir, sizeof s->ckpt_dir, "%s", cfg->checkpoint.dir);
  else
    snprintf(s->ckpt_dir, sizeof s->ckpt_dir, "%.*s/checkpoints", DP_PATH_MAX - 20, cfg->train.out_dir);
  int rc = dp_comm_set_timeout(comm, cfg->train.collective_timeout);
  if (rc == 0)
    rc = dp_trainer_create(&s->t, cfg, comm, &d->train);
  if (rc == 0)
    rc = dp_comm_agree(comm, register_interval(s), NULL);
  if (rc == 0)
    rc = dp_run_init_from(&s->t);
  if (rc == 0 && d->has_test)
    rc = dp_check_data_fits(cfg, comm, &d->test, s->t.model.in_dim, s->t.model.out_dim);
  if (rc == 0 && resume_from)
    rc = resume(s, resume_from);
  if (rc == 0)
    rc = start_output(s, cfg, o);
  double per_node[2] = {-(double)comm->node_size, (double)comm->node_size}; /* min and max, one collective */
  if (rc == 0)
    rc = dp_comm_allreduce_max_f64(comm, per_node, 2);
  per_node[0] = -per_node[0];
  if (rc == 0) {
    if (out)
      print_startup(out, &s->t, d, threads, per_node);
    s->iv.t0 = MPI_Wtime();
    double startup = s->iv.t0 - start;
    rc = train_loop(s);
    if (rc == 0 && out)
      print_summary(s, startup);
  }
  dp_metrics_close(&s->mt);
  dp_timeline_free(&s->tl);
  dp_trainer_free(&s->t);
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
  int rc = open_data(cfg, comm, &d);
  if (rc == 0)
    rc = run_with_data(cfg, comm, &d, resume_from, out, o, start);
  dp_dataset_close(&d.train);
  dp_dataset_close(&d.test);
  return rc;
}
