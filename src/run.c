/* `dptrain train`: the whole run around the trainer — data, threads, logging, evaluation. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "dptrain/blas.h"
#include "dptrain/error.h"
#include "dptrain/metrics.h"
#include "dptrain/train.h"

/* Hold the rows in memory when they take at most half of this rank's share of the node's memory. */
static int fits_in_memory(const dp_config *cfg, const dp_comm *comm, const dp_dataset *ds, int64_t rows) {
  if (cfg->data.in_memory != DP_INMEM_AUTO)
    return cfg->data.in_memory == DP_INMEM_TRUE;
  double bytes = (double)rows * (double)ds->d * (ds->x_u8 ? 1.0 : 4.0);
  double share = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / comm->node_size;
  return bytes <= share / 2;
}

typedef struct {
  dp_dataset train, test;
  int has_test;
} run_data;

static int open_data(const dp_config *cfg, dp_comm *comm, run_data *d) {
  int rc = dp_dataset_open(&d->train, cfg->data.path, "train", 0);
  DP_TRY(dp_comm_agree(comm, rc < 0 ? rc : 0, NULL));
  rc = dp_dataset_open(&d->test, cfg->data.path, "test", 1);
  DP_TRY(dp_comm_agree(comm, rc < 0 ? rc : 0, NULL));
  d->has_test = rc == 0;
  rc = 0;
  if (fits_in_memory(cfg, comm, &d->train, d->train.n))
    rc = dp_dataset_load(&d->train, 0, d->train.n);
  if (rc == 0 && d->has_test) {
    int64_t lo, hi;
    dp_split_range(d->test.n, comm->rank, comm->size, &lo, &hi);
    if (hi > lo && fits_in_memory(cfg, comm, &d->test, hi - lo))
      rc = dp_dataset_load(&d->test, lo, hi);
  }
  return dp_comm_agree(comm, rc, NULL);
}

static int write_config_copy(const dp_config *cfg) {
  char path[1200];
  snprintf(path, sizeof path, "%s/config.ini", cfg->train.out_dir);
  FILE *f = fopen(path, "w");
  if (!f)
    return dp_fail(DP_EIO, "%s: cannot write: %s", path, strerror(errno));
  int rc = dp_config_write(cfg, f);
  if (fclose(f) != 0 && rc == 0)
    rc = dp_fail(DP_EIO, "%s: write failed: %s", path, strerror(errno));
  return rc;
}

static void print_startup(FILE *out, const dp_trainer *t, const run_data *d, int threads) {
  const dp_comm *c = t->comm;
  const dp_model *m = &t->model;
  fprintf(out, "dptrain: %d rank%s on %d node%s, %d BLAS thread%s per rank (OpenBLAS %s kernel)\n", c->size,
          c->size > 1 ? "s" : "", c->n_nodes, c->n_nodes > 1 ? "s" : "", threads, threads > 1 ? "s" : "",
          dp_blas_kernel());
  fprintf(out, "model: %d", m->in_dim);
  for (int i = 0; i < m->n_layers; i++)
    fprintf(out, "-%d(%s)", m->layer[i].out, dp_act_name(m->layer[i].act));
  fprintf(out, ", %s, %zu parameters, %.3g MFLOP/sample forward\n", dp_loss_name(m->loss), m->n_params,
          dp_model_flops_forward(m) / 1e6);
  fprintf(out, "data: %s: train %lld x %lld (%s, %s)", d->train.path, (long long)d->train.n, (long long)d->train.d,
          d->train.x_u8 ? "uint8" : "float32", d->train.mem_hi > d->train.mem_lo ? "in memory" : "read per batch");
  if (d->has_test)
    fprintf(out, ", test %lld", (long long)d->test.n);
  int64_t lo, hi;
  dp_split_range(t->batch, 0, c->size, &lo, &hi);
  fprintf(out, "\ntraining: global batch %lld (shards of %lld", (long long)t->batch, (long long)(hi - lo));
  if (t->batch % c->size)
    fprintf(out, "-%lld", (long long)(hi - lo - 1));
  fprintf(out, " rows), %lld steps/epoch, %lld steps\n", (long long)t->steps_per_epoch, (long long)t->total_steps);
}

typedef struct {
  double loss, acc, t0;
  int64_t steps, samples;
} interval;

/* Logs the interval on rank 0; returns rank 0's I/O status (others 0). */
static int log_interval(dp_metrics *mt, const dp_trainer *t, interval *iv, const dp_step_result *r) {
  dp_step_log s = {.step = t->step,
                   .epoch = t->epoch,
                   .steps_per_epoch = t->steps_per_epoch,
                   .pos = t->pos,
                   .loss = iv->loss / iv->steps,
                   .acc = iv->acc / iv->steps,
                   .lr = r->lr,
                   .grad_norm = r->grad_norm};
  double now = MPI_Wtime();
  s.samples_per_s = iv->samples / (now - iv->t0);
  int rc = dp_metrics_step(mt, &s);
  *iv = (interval){.t0 = MPI_Wtime()};
  return rc;
}

typedef struct {
  double train_s, eval_s;
  double test_loss, test_acc;
  int evaluated;
} run_totals;

static int evaluate(dp_trainer *t, run_data *d, dp_metrics *mt, run_totals *tot, int *io_status) {
  double t0 = MPI_Wtime();
  DP_TRY(dp_trainer_evaluate(t, &d->test, &tot->test_loss, &tot->test_acc));
  tot->eval_s += MPI_Wtime() - t0;
  tot->evaluated = 1;
  int rc = dp_metrics_eval(mt, t->step, t->epoch, tot->test_loss, tot->test_acc);
  if (rc < 0 && *io_status == 0)
    *io_status = rc;
  return 0;
}

static int train_loop(dp_trainer *t, run_data *d, dp_metrics *mt, run_totals *tot) {
  const dp_config *cfg = t->cfg;
  interval iv = {.t0 = MPI_Wtime()};
  int io = 0; /* rank 0's pending metrics failure, sent along with the next step */
  while (t->step < t->total_steps && !t->converged) {
    dp_step_result r;
    double t0 = MPI_Wtime();
    t->want_grad_norm = (t->step + 1) % cfg->train.log_every == 0; /* the logged step's norm */
    DP_TRY(dp_trainer_step(t, io, &r));
    tot->train_s += MPI_Wtime() - t0;
    iv.loss += r.loss;
    iv.acc += r.acc;
    iv.steps++;
    iv.samples += r.batch;
    tot->evaluated = 0;
    if (t->step % cfg->train.log_every == 0 || t->step == t->total_steps || t->converged) {
      int rc = log_interval(mt, t, &iv, &r);
      if (rc < 0 && io == 0)
        io = rc;
    }
    /* Every eval_every steps, or at each epoch's end when it is 0 (with a full batch every step
     * ends an epoch: eval_every thins the evaluations out). */
    int due = cfg->train.eval_every > 0 ? t->step % cfg->train.eval_every == 0 : t->pos == t->steps_per_epoch;
    if (d->has_test && due) {
      DP_TRY(evaluate(t, d, mt, tot, &io));
      iv.t0 = MPI_Wtime(); /* evaluation time is not training throughput */
    }
  }
  if (d->has_test && !tot->evaluated)
    DP_TRY(evaluate(t, d, mt, tot, &io));
  return dp_comm_agree(t->comm, io, NULL);
}

static void print_summary(FILE *out, const dp_trainer *t, const run_totals *tot, double startup_s) {
  double samples = 0;
  for (int64_t s = 0; s < t->step; s++) { /* the last batch of an epoch may be short */
    int64_t pos = s % t->steps_per_epoch, g0 = pos * t->batch;
    samples += (double)((g0 + t->batch < t->n_train ? g0 + t->batch : t->n_train) - g0);
  }
  fprintf(out, "done: %lld steps, %.0f samples in %.2f s of training (%.0f samples/s); start-up %.2f s, evaluation %.2f s\n",
          (long long)t->step, samples, tot->train_s, samples / tot->train_s, startup_s, tot->eval_s);
  if (tot->evaluated)
    fprintf(out, "final: test_loss %.5f  test_acc %.4f\n", tot->test_loss, tot->test_acc);
  fflush(out);
}

static int run_with_data(const dp_config *cfg, dp_comm *comm, run_data *d, FILE *out, double start) {
  int threads = dp_blas_set_threads(cfg->train.threads, comm->node_size);
  dp_trainer t;
  int rc = dp_trainer_create(&t, cfg, comm, &d->train);
  if (rc == 0 && d->has_test)
    rc = dp_check_data_fits(cfg, comm, &d->test, t.model.in_dim, t.model.out_dim);
  dp_metrics mt;
  memset(&mt, 0, sizeof mt);
  if (rc == 0) {
    int lrc = dp_metrics_open(&mt, cfg->train.out_dir, comm->rank == 0, out);
    if (lrc == 0 && comm->rank == 0)
      lrc = write_config_copy(cfg);
    rc = dp_comm_agree(comm, lrc, NULL);
  }
  if (rc == 0) {
    if (out)
      print_startup(out, &t, d, threads);
    run_totals tot = {0};
    double startup = MPI_Wtime() - start;
    rc = train_loop(&t, d, &mt, &tot);
    if (rc == 0 && out)
      print_summary(out, &t, &tot, startup);
  }
  dp_metrics_close(&mt);
  dp_trainer_free(&t);
  return rc;
}

int dp_train_run(const dp_config *cfg, dp_comm *comm, FILE *out) {
  double start = MPI_Wtime();
  if (comm->rank != 0)
    out = NULL;
  run_data d;
  memset(&d, 0, sizeof d);
  dp_dataset_init(&d.train);
  dp_dataset_init(&d.test);
  int rc = open_data(cfg, comm, &d);
  if (rc == 0)
    rc = run_with_data(cfg, comm, &d, out, start);
  dp_dataset_close(&d.train);
  dp_dataset_close(&d.test);
  return rc;
}
