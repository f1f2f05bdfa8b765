/* Multi-rank tests, run under `mpirun -np 1`, `-np 2` and `-np 3 --oversubscribe`.
 *
 * Each case trains on the world communicator, and rank 0 trains the same configuration again on
 * MPI_COMM_SELF: the loss trajectories and final weights must agree within 1e-5 relative, and all
 * ranks must hold bit-identical weights. Every assertion is made on a value all ranks agree on
 * (reduced first), so a failing check fails on every rank instead of leaving ranks in a collective.
 * test_exact_collectives calls the deterministic mode's collectives of comm.h directly. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dptrain/comm.h"
#include "dptrain/config.h"
#include "dptrain/data.h"
#include "dptrain/error.h"
#include "dptrain/reprosum.h"
#include "dptrain/rng.h"
#include "dptrain/train.h"

enum { STEPS = 20, MAX_STEPS = 200, N_ROWS = 100, DIM = 12, CLASSES = 4 };

static dp_comm world;
static char dir[256];

/* Rank 0 writes a small synthetic set: class-dependent means plus noise (uint8, scale 1/255), or
 * float32 x with a linear target for regression. */
static void write_data(const char *path, int64_t n, int regression) {
  if (world.rank == 0) {
    uint8_t *xu = malloc((size_t)n * DIM);
    float *xf = malloc(sizeof(float) * (size_t)n * DIM);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    float *t = malloc(sizeof(float) * (size_t)n * 2);
    dp_rng r;
    dp_rng_seed(&r, 42, 7);
    for (int64_t i = 0; i < n; i++) {
      y[i] = (int32_t)dp_rng_below(&r, CLASSES);
      t[2 * i] = t[2 * i + 1] = 0.0f;
      for (int j = 0; j < DIM; j++) {
        double v = 128 + 60 * ((j % CLASSES) == y[i]) + 30 * dp_rng_normal(&r);
        xu[i * DIM + j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        xf[i * DIM + j] = (float)dp_rng_normal(&r);
        t[2 * i] += (j % 3 - 1) * xf[i * DIM + j] * 0.5f;
        t[2 * i + 1] += (j % 2) * xf[i * DIM + j] * 0.25f;
      }
    }
    dp_split_view v = {.n = n, .d = DIM, .x_u8 = !regression, .x = regression ? (void *)xf : (void *)xu,
                       .scale = regression ? 0.5f : 1.0f / 255, .labels = regression ? NULL : y,
                       .targets = regression ? t : NULL, .k = regression ? 2 : 1};
    int rc = dp_data_write(path, &v, NULL);
    if (rc)
      fprintf(stderr, "write_data: %s\n", dp_errmsg(rc));
    free(xu);
    free(xf);
    free(y);
    free(t);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

/* A classification set that no model separates: standard normal float32 features, class-dependent
 * means, and 30% of the labels drawn at random. Logistic regression on it has one finite minimum. */
static void write_noisy(const char *path, int64_t n) {
  if (world.rank == 0) {
    float *x = malloc(sizeof(float) * (size_t)n * DIM);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    dp_rng r;
    dp_rng_seed(&r, 43, 7);
    for (int64_t i = 0; i < n; i++) {
      int32_t c = (int32_t)dp_rng_below(&r, CLASSES);
      y[i] = dp_rng_uniform(&r) < 0.3 ? (int32_t)dp_rng_below(&r, CLASSES) : c;
      for (int j = 0; j < DIM; j++)
        x[i * DIM + j] = (float)(dp_rng_normal(&r) + ((j % CLASSES) == c));
    }
    dp_split_view v = {.n = n, .d = DIM, .x = x, .scale = 1.0f, .labels = y, .k = 1};
    if (dp_data_write(path, &v, NULL))
      fprintf(stderr, "write_noisy: %s\n", dp_errmsg(-1));
    free(x);
    free(y);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

typedef struct {
  double loss[MAX_STEPS];
  float *params; /* the parameters, then batch norm's running statistics */
  size_t n;
  int rc;
} run_out;

/* Trains `steps` steps of the configuration text on communicator c. */
static void run_steps(const char *cfg_text, dp_comm *c, int steps, run_out *o) {
  dp_config cfg;
  memset(o, 0, sizeof *o);
  o->rc = dp_config_parse_string(&cfg, cfg_text, "test.ini", NULL, 0);
  if (o->rc)
    return;
  dp_dataset ds;
  dp_dataset_init(&ds);
  o->rc = dp_dataset_open(&ds, cfg.data.path, "train", 0);
  if (o->rc == 0 && cfg.data.in_memory != DP_INMEM_FALSE)
    o->rc = dp_dataset_load(&ds, 0, ds.n);
  dp_trainer t;
  if (o->rc == 0)
    o->rc = dp_trainer_create(&t, &cfg, c, &ds);
  for (int s = 0; s < steps && o->rc == 0; s++) {
    dp_step_result r;
    o->rc = dp_trainer_step(&t, &(dp_step_request){0}, &r);
    o->loss[s] = r.loss;
  }
  if (o->rc == 0) {
    o->n = t.model.n_floats + t.model.n_stats;
    o->params = malloc(sizeof(float) * o->n);
    memcpy(o->params, t.model.params, sizeof(float) * t.model.n_floats);
    if (t.model.n_stats)
      memcpy(o->params + t.model.n_floats, t.model.stats, sizeof(float) * t.model.n_stats);
    dp_trainer_free(&t);
  }
  if (o->rc)
    fprintf(stderr, "rank %d: %s\n", c->rank, dp_errmsg(o->rc));
  dp_dataset_close(&ds);
}

static double rel_diff(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num = fmax(num, fabs((double)a[i] - b[i]));
    den = fmax(den, fabs((double)b[i]));
  }
  return den > 0 ? num / den : num;
}

/* World run vs. rank 0's single-rank run; returns the worst relative difference (same on all ranks)
 * of every step's loss and the final weights (trajectory set), or of the final loss only; and, if
 * last is not NULL, the world run's last loss. */
static double compare_with_single_rank(const char *cfg_text, int steps, int trajectory, double *last) {
  run_out w, s;
  run_steps(cfg_text, &world, steps, &w);
  if (last)
    *last = w.rc ? INFINITY : w.loss[steps - 1];
  double worst = w.rc ? INFINITY : 0.0;
  if (world.rank == 0 && w.rc == 0) {
    dp_comm self;
    dp_comm_init(&self, MPI_COMM_SELF);
    run_steps(cfg_text, &self, steps, &s);
    if (getenv("DP_TEST_TRACE"))
      for (int i = 0; i < steps; i++)
        printf("      step %d: %.9g %.9g\n", i, w.loss[i], s.loss[i]);
    dp_comm_free(&self);
    if (s.rc || s.n != w.n)
      worst = INFINITY;
    for (int i = trajectory ? 0 : steps - 1; i < steps && s.rc == 0; i++)
      worst = fmax(worst, fabs(w.loss[i] - s.loss[i]) / fabs(s.loss[i]));
    if (trajectory && s.rc == 0 && s.n == w.n)
      worst = fmax(worst, rel_diff(w.params, s.params, w.n));
    free(s.params);
  }
  /* Bit-identical weights on all ranks: compare with rank 0's. */
  size_t n = w.n;
  MPI_Bcast(&n, sizeof n, MPI_BYTE, 0, MPI_COMM_WORLD);
  if (n == w.n && w.rc == 0) {
    float *ref = malloc(sizeof(float) * n);
    memcpy(ref, w.params, sizeof(float) * n);
    MPI_Bcast(ref, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    if (memcmp(ref, w.params, sizeof(float) * n) != 0) {
      worst = INFINITY;
      for (size_t i = 0; i < n; i++)
        if (memcmp(&ref[i], &w.params[i], sizeof(float))) {
          fprintf(stderr, "rank %d: weight %zu of %zu differs from rank 0's: %.9g vs %.9g\n", world.rank, i, n,
                  w.params[i], ref[i]);
          break;
        }
    }
    free(ref);
  } else {
    worst = INFINITY;
  }
  free(w.params);
  MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

static const char *sgd_momentum = "[optimizer]\nname = sgd\nlr = 0.1\nmomentum = 0.9\n";

/* data_extra: more [data] keys, e.g. "in_memory = false"; opt: the [optimizer] section (NULL: SGD
 * with momentum). */
static void config_text_opt(char *buf, size_t len, const char *data, const char *data_extra, const char *train,
                            const char *model, const char *opt) {
  snprintf(buf, len,
           "[data]\npath = %s/%s\n%s\n%s\n%s"
           "[train]\nseed = 3\nepochs = 1000\nlog_every = 5\nout_dir = %s/run\n%s\n",
           dir, data, data_extra, model, opt ? opt : sgd_momentum, dir, train);
}

static void config_text(char *buf, size_t len, const char *data, const char *data_extra, const char *train,
                        const char *model) {
  config_text_opt(buf, len, data, data_extra, train, model, NULL);
}

static const char *mlp_ce = "[model]\nloss = softmax_cross_entropy\n"
                            "[layer]\nunits = 16\nactivation = tanh\n"
                            "[layer]\nunits = 8\nactivation = relu\n"
                            "[layer]\nunits = 4\nactivation = identity\n";

static void check_case(const char *data, const char *data_extra, const char *train, const char *model) {
  char cfg[2048];
  config_text(cfg, sizeof cfg, data, data_extra, train, model);
  double worst = compare_with_single_rank(cfg, STEPS, 1, NULL);
  if (world.rank == 0)
    printf("    worst relative difference vs. 1 rank: %.3g\n", worst);
  assert_true(worst <= 1e-5);
}

/* 100 rows, batch 16: a short last batch each epoch, 20 steps span three epochs. */
static void test_in_memory(void **state) {
  (void)state;
  check_case("cls.h5", "", "batch_size = 16\n", mlp_ce);
}

static void test_streaming(void **state) {
  (void)state;
  check_case("cls.h5", "in_memory = false", "batch_size = 16\n", "[model]\n"
                                            "[layer]\nunits = 8\nactivation = sigmoid\n"
                                            "[layer]\nunits = 4\nactivation = identity\n");
}

/* A global batch of 2 leaves rank 2 of 3 with an empty shard at every step. */
static void test_batch_smaller_than_ranks(void **state) {
  (void)state;
  check_case("cls.h5", "", "batch_size = 2\ndrop_last = true\n", mlp_ce);
}

static void test_no_shuffle_drop_last(void **state) {
  (void)state;
  check_case("cls.h5", "", "batch_size = 33\nshuffle = false\ndrop_last = true\n", mlp_ce);
}

static void test_regression_mse(void **state) {
  (void)state;
  check_case("reg.h5", "", "batch_size = 10\n", "[model]\nloss = mse\n"
                                            "[layer]\nunits = 8\nactivation = tanh\n"
                                            "[layer]\nunits = 2\nactivation = identity\n");
}

/* Shards larger than one pass (1024 rows) accumulate their gradients over several passes. */
static void test_large_shard_accumulates(void **state) {
  (void)state;
  char cfg[2048];
  config_text(cfg, sizeof cfg, "big.h5", "", "batch_size = 2500\n", mlp_ce);
  double worst = compare_with_single_rank(cfg, 3, 1, NULL);
  assert_true(worst <= 1e-5);
}

/* Gradient buckets (each layer its own, the first ones reduced while the backward pass goes on)
 * give exactly what one allreduce of the whole block gives, also for buckets of 0.3 MB, where MPI
 * switches to its large-message algorithms. */
static void test_buckets_match_one_allreduce(void **state) {
  (void)state;
  static const char *wide = "[model]\n[layer]\nunits = 300\n[layer]\nunits = 250\n[layer]\nunits = 4\n"
                            "activation = identity\n";
  char one[2048], many[2048];
  config_text(one, sizeof one, "cls.h5", "", "batch_size = 16\nbucket_mb = 0\n", wide);
  config_text(many, sizeof many, "cls.h5", "", "batch_size = 16\nbucket_mb = 0.000001\n", wide);
  run_out a, b;
  run_steps(one, &world, STEPS, &a);
  run_steps(many, &world, STEPS, &b);
  assert_int_equal(a.rc, 0);
  assert_int_equal(b.rc, 0);
  assert_int_equal(a.n, b.n);
  assert_memory_equal(a.loss, b.loss, sizeof(double) * STEPS);
  assert_memory_equal(a.params, b.params, sizeof(float) * a.n);
  free(a.params);
  free(b.params);
}

/* 1 when every rank passes ok. */
static int all_ok(int ok) {
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return ok;
}

/* The deterministic mode's collectives (comm.h): the ring reduce-scatter leaves each rank the other
 * ranks' sum of its slice, the allgather takes uneven counts (an empty one too), batch norm's
 * gathered sums match the two collectives', the max-and-sum allreduce does both in one call. */
static void test_exact_collectives(void **state) {
  (void)state;
  enum { S = 1001 };
  int P = world.size, r = world.rank, ok = 1;
  int64_t *all = malloc(sizeof(int64_t) * S * (size_t)P), *others = malloc(sizeof(int64_t) * S * 2);
  for (int i = 0; i < S * P; i++)
    all[i] = ((int64_t)1 << 50) - (int64_t)i * 977 * (r + 1) + r;
  for (int i = 0; i < S; i++)
    others[i] = 0; /* untouched at 1 rank */
  assert_int_equal(dp_comm_reduce_scatter_i64(&world, all, others, others + S, S), 0);
  int64_t tri = (int64_t)P * (P + 1) / 2, mine = (int64_t)r * S;
  for (int i = 0; i < S; i++) /* all ranks' sum, less this rank's own part */
    ok &= others[i] + all[mine + i] == ((int64_t)1 << 50) * P - (mine + i) * 977 * tri + tri - P;
  assert_true(all_ok(ok));

  int counts[64], displs[64], n = 0;
  assert_true(P <= 64);
  for (int q = 0; q < P; q++)
    displs[q] = n, counts[q] = q == 1 ? 0 : 5 + q, n += counts[q];
  float *f = calloc((size_t)n, sizeof(float));
  for (int j = 0; j < counts[r]; j++)
    f[displs[r] + j] = (float)(r * 100 + j);
  assert_int_equal(dp_comm_allgatherv_f32(&world, f, counts, displs), 0);
  for (int q = 0; q < P; q++)
    for (int j = 0; j < counts[q]; j++)
      ok &= f[displs[q] + j] == (float)(q * 100 + j);
  assert_true(all_ok(ok));

  /* Batch norm's sums with no more chunks than ranks: gathered, the same bits as the two collectives
   * (all = NULL takes those), also for a NaN and for a rank without a chunk. */
  dp_reprosum gathered, two;
  assert_int_equal(dp_reprosum_init(&gathered, &world, 4), 0);
  assert_int_equal(dp_reprosum_init(&two, &world, 4), 0);
  free(two.all);
  two.all = NULL;
  int64_t nt = P > 1 ? P - 1 : 1;
  double x[4] = {1e20 * (r % 2 ? -1 : 1), 3e-20 * (r + 1), 5.0 + r, r == 1 ? NAN : 0.25}, o1[4], o2[4];
  assert_int_equal(dp_reprosum_chunks(&gathered, x, r < nt, 4, nt, o1), 0);
  assert_int_equal(dp_reprosum_chunks(&two, x, r < nt, 4, nt, o2), 0);
  ok &= memcmp(o1, o2, sizeof o1) == 0 && isnan(o1[3]) == (nt > 1); /* rank 1 has the NaN */
  assert_true(all_ok(ok));
  dp_reprosum_free(&gathered);
  dp_reprosum_free(&two);

  int64_t v[5] = {r == P - 1 ? 7 : -3, -(int64_t)r, (int64_t)1 << 40, r, 1};
  assert_int_equal(dp_comm_allreduce_max_sum_i64(&world, v, 2, 3), 0);
  ok &= v[0] == 7 && v[1] == 0 && v[2] == ((int64_t)1 << 40) * P && v[3] == tri - P && v[4] == P;
  assert_true(all_ok(ok));
  free(all);
  free(others);
  free(f);
}

/* Every step is a collective: ranks must agree on the number of steps for any split. */
static void test_step_counts_agree(void **state) {
  (void)state;
  char cfg[2048];
  config_text(cfg, sizeof cfg, "cls.h5", "", "batch_size = 7\n", mlp_ce);
  dp_config c;
  const char *sets[] = {"train.epochs=2"};
  assert_int_equal(dp_config_parse_string(&c, cfg, "t.ini", sets, 1), 0);
  dp_dataset ds;
  dp_dataset_init(&ds);
  assert_int_equal(dp_dataset_open(&ds, c.data.path, "train", 0), 0);
  dp_trainer t;
  assert_int_equal(dp_trainer_create(&t, &c, &world, &ds), 0);
  long long total = t.total_steps, mn, mx;
  MPI_Allreduce(&total, &mn, 1, MPI_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&total, &mx, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
  assert_int_equal(mn, mx);
  assert_int_equal(total, 2 * ((N_ROWS + 6) / 7));
  dp_trainer_free(&t);
  dp_dataset_close(&ds);
}

/* Every optimizer, unchanged for any number of ranks: its first 20 steps agree with the single-rank
 * run within tol, and `steps` steps bring the mean loss of the last 10 (ln 4 = 1.39 at the start)
 * below target. Longer runs are not compared step by step: training is chaotic enough that rounding
 * differences (the shards sum in another order) grow past 1e-5 after ~100 steps. */
static void check_optimizer(const char *opt, const char *train, int steps, double target, double tol) {
  char cfg[2048];
  config_text_opt(cfg, sizeof cfg, "cls.h5", "", train, mlp_ce, opt);
  double worst = compare_with_single_rank(cfg, STEPS < steps ? STEPS : steps, 1, NULL);
  run_out w;
  run_steps(cfg, &world, steps, &w);
  free(w.params);
  double last = 0.0;
  for (int i = steps - 10; i < steps; i++)
    last += (w.rc ? INFINITY : w.loss[i]) / 10;
  if (world.rank == 0)
    printf("    worst relative difference vs. 1 rank: %.3g, mean loss of steps %d-%d: %.4f\n", worst, steps - 9, steps,
           last);
  assert_true(worst <= tol);
  assert_true(last < target);
}

static void test_optim_sgd_variants(void **state) {
  (void)state;
  check_optimizer("[optimizer]\nname = sgd\nlr = 0.2\n", "batch_size = 16\n", 150, 0.5, 1e-5);
  check_optimizer("[optimizer]\nname = sgd\nlr = 0.1\nmomentum = 0.9\nnesterov = true\nweight_decay = 1e-4\n",
                  "batch_size = 16\n", 150, 0.5, 1e-5);
  check_optimizer("[optimizer]\nname = sgd\nlr = 0.1\nmomentum = 0.9\nmomentum_form = difference\n",
                  "batch_size = 16\n", 150, 0.5, 1e-5);
  check_optimizer("[optimizer]\nname = sgd\nlr = 0.1\nmomentum = 0.9\nclip_norm = 0.5\n[schedule]\nname = cosine\n"
                  "warmup_steps = 5\n", "batch_size = 16\n", 150, 0.5, 1e-5);
}

static void test_optim_adaptive(void **state) {
  (void)state;
  check_optimizer("[optimizer]\nname = rmsprop\nlr = 0.01\n", "batch_size = 16\n", 150, 0.5, 1e-5);
  check_optimizer("[optimizer]\nname = adam\nlr = 0.02\n", "batch_size = 16\n", 150, 0.5, 1e-5);
  check_optimizer("[optimizer]\nname = adam\nlr = 0.005\nbias_correction = false\neps_placement = inside\n",
                  "batch_size = 16\n", 150, 0.5, 1e-5);
  check_optimizer("[optimizer]\nname = adamw\nlr = 0.02\nweight_decay = 0.01\n", "batch_size = 16\n", 150, 0.5, 1e-5);
}

/* Full-batch L-BFGS: each step is one iteration on the whole set's averaged loss and gradient. On the
 * non-convex MLP the line search's accept/reject decisions amplify rounding differences, so the
 * trajectories are compared at 1e-3; on the convex logistic regression (30% of the labels
 * random: not separable, so the minimum is unique and finite), run to
 * convergence, the
 * result must agree within 1e-6. */
static void test_optim_lbfgs(void **state) {
  (void)state;
  check_optimizer("[optimizer]\nname = lbfgs\nhistory = 5\n", "batch_size = full\n", 20, 0.5, 1e-3);
  char cfg[2048];
  config_text_opt(cfg, sizeof cfg, "noisy.h5", "", "batch_size = full\n",
                  "[model]\n[layer]\nunits = 4\nactivation = identity\n",
                  "[optimizer]\nname = lbfgs\nhistory = 10\n");
  double last;
  double worst = compare_with_single_rank(cfg, 100, 0, &last);
  if (world.rank == 0)
    printf("    logistic regression: loss %.6f after 100 iterations, worst relative difference %.3g\n", last, worst);
  assert_true(worst <= 1e-6);
}

/* Batch norm over the GLOBAL batch: with 1, 2 or 3 ranks (one with an empty shard at batch 2) the
 * trajectory, the weights and the running statistics agree with one rank, identically on all. */
static const char *mlp_bn = "[model]\n"
                            "[layer]\nunits = 16\nactivation = sigmoid\nnorm = batch\n"
                            "[layer]\nunits = 8\nactivation = relu\nnorm = batch\nnorm_momentum = 0.2\n"
                            "[layer]\nunits = 4\nactivation = identity\n";

static void test_batch_norm(void **state) {
  (void)state;
  check_case("cls.h5", "", "batch_size = 16\n", mlp_bn);
  check_case("cls.h5", "", "batch_size = 2\ndrop_last = true\n", mlp_bn);
  check_case("cls.h5", "in_memory = false", "batch_size = 33\n", mlp_bn);
}

/* The gradient itself: one plain SGD step with γ = 1 moves the weights by exactly −g, so g is
 * w0 − w1. Across ranks it must equal one rank's gradient of the same global batch within 1e-5. */
static void test_batch_norm_gradient(void **state) {
  (void)state;
  char cfg[2048];
  config_text_opt(cfg, sizeof cfg, "cls.h5", "", "batch_size = 30\n", mlp_bn, "[optimizer]\nname = sgd\nlr = 1\n");
  run_out w0, w1, s0, s1;
  run_steps(cfg, &world, 0, &w0);
  run_steps(cfg, &world, 1, &w1);
  double worst = w0.rc || w1.rc ? INFINITY : 0.0, biggest = 0.0;
  if (world.rank == 0 && worst == 0.0) {
    dp_comm self;
    dp_comm_init(&self, MPI_COMM_SELF);
    run_steps(cfg, &self, 0, &s0);
    run_steps(cfg, &self, 1, &s1);
    dp_comm_free(&self);
    for (size_t i = 0; i < w0.n && s0.rc == 0 && s1.rc == 0; i++) { /* parameters only: stats follow them */
      double gw = (double)w0.params[i] - w1.params[i], gs = (double)s0.params[i] - s1.params[i];
      worst = fmax(worst, fabs(gw - gs));
      biggest = fmax(biggest, fabs(gs));
    }
    worst = biggest > 0 ? worst / biggest : INFINITY;
    printf("    batch-norm gradient: max |g| %.3g, worst difference vs. 1 rank %.3g (relative)\n", biggest, worst);
    free(s0.params);
    free(s1.params);
  }
  free(w0.params);
  free(w1.params);
  MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  assert_true(worst <= 1e-5);
}

static void test_layer_norm(void **state) {
  (void)state;
  check_case("cls.h5", "", "batch_size = 16\n",
             "[model]\n[layer]\nunits = 16\nactivation = tanh\nnorm = layer\n"
             "[layer]\nunits = 4\nactivation = identity\n");
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  dp_comm_init(&world, MPI_COMM_WORLD);
  if (world.rank == 0) {
    strcpy(dir, "/tmp/dptrain-par-XXXXXX");
    if (!mkdtemp(dir))
      MPI_Abort(MPI_COMM_WORLD, 1);
  } else {
    freopen("/dev/null", "w", stdout); /* one copy of the report; failures still reach stderr */
  }
  MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
  char path[512];
  snprintf(path, sizeof path, "%s/cls.h5", dir);
  write_data(path, N_ROWS, 0);
  snprintf(path, sizeof path, "%s/reg.h5", dir);
  write_data(path, 60, 1);
  snprintf(path, sizeof path, "%s/big.h5", dir);
  write_data(path, 2600, 0);
  snprintf(path, sizeof path, "%s/noisy.h5", dir);
  write_noisy(path, 400);

  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_in_memory),
      cmocka_unit_test(test_streaming),
      cmocka_unit_test(test_batch_smaller_than_ranks),
      cmocka_unit_test(test_no_shuffle_drop_last),
      cmocka_unit_test(test_regression_mse),
      cmocka_unit_test(test_large_shard_accumulates),
      cmocka_unit_test(test_buckets_match_one_allreduce),
      cmocka_unit_test(test_exact_collectives),
      cmocka_unit_test(test_step_counts_agree),
      cmocka_unit_test(test_optim_sgd_variants),
      cmocka_unit_test(test_optim_adaptive),
      cmocka_unit_test(test_optim_lbfgs),
      cmocka_unit_test(test_batch_norm),
      cmocka_unit_test(test_batch_norm_gradient),
      cmocka_unit_test(test_layer_norm),
  };
  char name[64];
  snprintf(name, sizeof name, "parallel (np=%d)", world.size);
  int failed = cmocka_run_group_tests_name(name, tests, NULL, NULL);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world.rank == 0) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
      fprintf(stderr, "could not remove %s\n", dir);
  }
  dp_comm_free(&world);
  MPI_Finalize();
  return failed ? 1 : 0;
}
