#include "dptrain/sweep.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/blas.h"
#include "dptrain/data.h"
#include "dptrain/error.h"
#include "dptrain/run.h"
#include "dptrain/train.h"
#include "fsutil.h"

/* A predicate, not a status: whether [s, end) is a whole positive finite number (into *v). */
static bool is_positive_number(const char *s, const char *end, double *v) {
  char buf[64];
  size_t n = (size_t)(end - s);
  if (n == 0 || n >= sizeof buf)
    return false;
  memcpy(buf, s, n);
  buf[n] = 0;
  char *e;
  errno = 0;
  *v = strtod(buf, &e);
  return *e == 0 && errno == 0 && isfinite(*v) && *v > 0;
}

static int parse_range(const char *spec, double *lr, int *n) {
  const char *c1 = strchr(spec, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
  double lo, hi, cnt;
  if (!c2 || !is_positive_number(spec, c1, &lo) || !is_positive_number(c1 + 1, c2, &hi) ||
      !is_positive_number(c2 + 1, c2 + 1 + strlen(c2 + 1), &cnt) || cnt != floor(cnt) || cnt < 1 || cnt > DP_SWEEP_MAX ||
      hi < lo)
    return dp_fail(DP_EUSAGE, "--lr '%s': expected LO:HI:N with 0 < LO <= HI and 1 <= N <= %d, e.g. 1e-4:1:9",
                   spec, DP_SWEEP_MAX);
  *n = (int)cnt;
  for (int i = 0; i < *n; i++) /* log-spaced, both ends exact */
    lr[i] = *n == 1 ? lo : exp(log(lo) + (log(hi) - log(lo)) * i / (*n - 1));
  return 0;
}

int dp_sweep_parse_grid(const char *spec, double *lr, int *n) {
  if (strchr(spec, ':'))
    return parse_range(spec, lr, n);
  *n = 0;
  for (const char *s = spec;;) {
    const char *e = strchr(s, ',');
    if (!e)
      e = s + strlen(s);
    if (*n == DP_SWEEP_MAX || !is_positive_number(s, e, &lr[*n]))
      return dp_fail(DP_EUSAGE, "--lr '%s': expected a list of positive numbers (at most %d) or LO:HI:N", spec,
                     DP_SWEEP_MAX);
    (*n)++;
    if (!*e)
      return 0;
    s = e + 1;
  }
}

/* One short training run at step size lr on the group's communicator; stops early on divergence. */
static int sweep_one(const dp_config *base, dp_comm *group, dp_dataset *ds, const dp_sweep_opts *o, double lr,
                     dp_sweep_result *r) {
  dp_config cfg = *base;
  cfg.optimizer.lr = lr;
  cfg.train.max_steps = o->steps;
  cfg.train.epochs = 1 << 30; /* steps decide */
  dp_trainer t;
  int rc = dp_trainer_create(&t, &cfg, group, ds);
  if (rc == 0)
    rc = dp_run_init_from(&t);
  *r = (dp_sweep_result){.lr = lr, .best_loss = INFINITY};
  int converged = 0;
  double first = NAN, tail = 0.0;
  /* The final loss is the mean over the last tenth of the steps: one batch's loss is too noisy to
   * rank step sizes by. */
  int64_t tail_from = o->steps - (o->steps / 10 > 1 ? o->steps / 10 : 1);
  while (rc == 0 && t.step < t.total_steps && !converged) {
    dp_step_result s;
    rc = dp_trainer_step(&t, &(dp_step_request){0}, &s);
    if (rc)
      break;
    converged = s.converged;
    r->steps = t.step;
    if (t.step > tail_from)
      tail += s.loss;
    r->final_loss = t.step > tail_from ? tail / (double)(t.step - tail_from) : s.loss;
    if (t.step == 1)
      first = s.loss;
    r->best_loss = fmin(r->best_loss, s.loss);
    /* The loss is the group's reduced value: every rank of the group takes the same decision. */
    if (!isfinite(s.loss) || s.loss > o->diverge_factor * first) {
      r->diverged = 1;
      break;
    }
  }
  r->regression = cfg.model.loss == DP_LOSS_MSE;
  r->final_rmse = r->regression ? sqrt(r->final_loss) : NAN;
  dp_trainer_free(&t);
  return rc;
}

static int open_train(const dp_config *cfg, dp_comm *group, dp_dataset *ds) {
  dp_dataset_init(ds);
  int rc = dp_dataset_open(ds, cfg->data.path, "train", NULL);
  if (rc == 0)
    rc = dp_dataset_apply_standardize(ds, cfg);
  if (rc == 0 && cfg->data.in_memory != DP_INMEM_FALSE)
    rc = dp_dataset_load(ds, 0, ds->n);
  return dp_comm_agree(group, rc, NULL);
}

/* Results travel as rows of doubles summed onto rank 0: only group leaders fill their rows. */
enum { COLS = 7 };

static int gather_results(dp_comm *world, const dp_sweep_opts *o, double *rows, dp_sweep_result *res) {
  int rc = MPI_Reduce(world->rank == 0 ? MPI_IN_PLACE : rows, rows, o->n * COLS, MPI_DOUBLE, MPI_SUM, 0, world->comm);
  if (rc != MPI_SUCCESS)
    return dp_fail(DP_EMPI, "sweep: MPI_Reduce of the results failed");
  for (int i = 0; i < o->n && world->rank == 0; i++) {
    const double *r = rows + i * COLS;
    res[i] = (dp_sweep_result){.lr = r[0], .final_loss = r[1], .best_loss = r[2], .diverged = r[3] != 0,
                               .steps = (int64_t)r[4], .regression = r[5] != 0, .final_rmse = r[6]};
  }
  return 0;
}

int dp_sweep_run(const dp_config *cfg, dp_comm *world, const dp_sweep_opts *o, dp_sweep_result *res, FILE *out) {
  int rpr = o->ranks_per_run;
  if (rpr < 1 || world->size % rpr) /* every rank sees it: agreed, so rank 0 alone reports it, no abort */
    return dp_comm_agree(world, dp_fail(DP_EUSAGE, "--ranks-per-run %d must divide the %d ranks", rpr, world->size),
                         NULL);
  int n_groups = world->size / rpr, color = world->rank / rpr;
  /* On the world, before the groups split: the cores are shared among all of the node's ranks. */
  dp_blas_threads bt;
  DP_TRY(dp_comm_agree(world, dp_blas_set_threads(world, cfg->train.threads, &bt), NULL));
  MPI_Comm sub;
  if (MPI_Comm_split(world->comm, color, world->rank, &sub) != MPI_SUCCESS)
    return dp_fail(DP_EMPI, "sweep: MPI_Comm_split failed");
  dp_comm group;
  int rc = dp_comm_init(&group, sub);
  MPI_Comm_free(&sub);
  DP_TRY(dp_comm_agree(world, rc, NULL)); /* before the group's first collective */
  /* The group's collectives are the ones a stuck rank would hang: its own watchdog watches them. */
  rc = dp_comm_agree(&group, dp_comm_set_timeout(&group, cfg->train.collective_timeout), NULL);
  if (rc < 0) {
    dp_comm_free(&group);
    return dp_comm_agree(world, rc, NULL);
  }
  if (out)
    fprintf(out, "sweep: %d step size%s, %lld step%s each, %d group%s of %d rank%s\n", o->n, dp_plural(o->n),
            (long long)o->steps, dp_plural(o->steps), n_groups, dp_plural(n_groups), rpr, dp_plural(rpr));
  dp_dataset ds;
  double *rows = calloc((size_t)o->n * COLS, sizeof(double));
  rc = rows ? open_train(cfg, &group, &ds) : dp_fail(DP_ENOMEM, "sweep: out of memory");
  /* Round-robin: group g trains grid points g, g + n_groups, ... */
  for (int i = color; i < o->n && rc == 0; i += n_groups) {
    dp_sweep_result r;
    rc = sweep_one(cfg, &group, &ds, o, o->lr[i], &r);
    if (rc == 0 && group.rank == 0) {
      double *row = rows + i * COLS;
      row[0] = r.lr, row[1] = r.final_loss, row[2] = r.best_loss, row[3] = r.diverged, row[4] = (double)r.steps;
      row[5] = r.regression, row[6] = r.final_rmse;
    }
  }
  dp_dataset_close(&ds);
  dp_comm_free(&group);
  /* Groups finish at different times; agree on the world before the reduce. */
  rc = dp_comm_agree(world, rc, NULL);
  if (rc == 0)
    rc = gather_results(world, o, rows, res);
  free(rows);
  return rc;
}

typedef struct {
  const dp_sweep_result *res;
  int n;
} csv_rows;

static int write_csv(FILE *f, void *arg) {
  const csv_rows *c = arg;
  int reg = c->n > 0 && c->res[0].regression;
  fprintf(f, "lr,final_loss,best_loss,diverged,steps%s\n", reg ? ",final_rmse" : "");
  for (int i = 0; i < c->n; i++) {
    const dp_sweep_result *r = &c->res[i];
    fprintf(f, "%.6g,%.9g,%.9g,%d,%lld", r->lr, r->final_loss, r->best_loss, r->diverged, (long long)r->steps);
    if (reg)
      fprintf(f, ",%.9g", r->final_rmse);
    fputc('\n', f);
  }
  return ferror(f) ? DP_EIO : 0;
}

int dp_sweep_report(const dp_sweep_result *res, int n, const char *csv, FILE *out) {
  DP_TRY(dp_write_durable_stdio(csv, "the sweep's results", write_csv, &(csv_rows){res, n}));
  int best = -1;
  for (int i = 0; i < n; i++)
    if (!res[i].diverged && isfinite(res[i].final_loss) && (best < 0 || res[i].final_loss < res[best].final_loss))
      best = i;
  if (!out)
    return 0;
  int reg = n > 0 && res[0].regression;
  fprintf(out, "%12s %12s %12s %9s %7s%s\n", "lr", "final_loss", "best_loss", "diverged", "steps",
          reg ? "   final_rmse" : "");
  for (int i = 0; i < n; i++) {
    const dp_sweep_result *r = &res[i];
    fprintf(out, "%12.4g %12.5g %12.5g %9s %7lld", r->lr, r->final_loss, r->best_loss, r->diverged ? "yes" : "no",
            (long long)r->steps);
    if (reg)
      fprintf(out, " %12.5g", r->final_rmse);
    fprintf(out, "%s\n", i == best ? "  <- best" : "");
  }
  if (best >= 0)
    fprintf(out, "best lr: %.4g (final loss %.5g); wrote %s\n", res[best].lr, res[best].final_loss, csv);
  else
    fprintf(out, "every step size diverged; try smaller ones; wrote %s\n", csv);
  return 0;
}
