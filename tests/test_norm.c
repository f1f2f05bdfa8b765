/* Batch and layer normalisation (include/dptrain/norm.h):
 * - central-difference gradient checks of both w.r.t. z, gain and shift;
 * - batch norm over three simulated ranks (shards of 4, 3 and 0 rows) equals one process over the
 *   7 rows, and the empty shard makes the same reduce calls as the others;
 * - running statistics after one step, evaluation with them, layer norm's per-row statistics. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"
#include "dptrain/norm.h"

enum { U = 5, MAXB = 8 };

/* One dp_norm with all of its memory inline. */
typedef struct {
  dp_norm n;
  float gain[U], shift[U], dgain[U], dshift[U], rm[U], rv[U];
  float scratch[MAXB * U + MAXB];
  double work[2 * U + 1];
} fixture;

static void setup(fixture *f, dp_norm_kind kind) {
  memset(f, 0, sizeof *f);
  assert_true(dp_norm_scratch_floats(kind, U, MAXB) <= sizeof f->scratch / sizeof f->scratch[0]);
  assert_int_equal(dp_norm_work_doubles(kind, U), 2 * U + 1);
  f->n = (dp_norm){.kind = kind, .units = U, .max_batch = MAXB, .eps = DP_NORM_EPS, .momentum = DP_NORM_MOMENTUM,
                   .sync = 1, .gain = f->gain, .shift = f->shift, .dgain = f->dgain, .dshift = f->dshift,
                   .running_mean = f->rm, .running_var = f->rv, .zhat = f->scratch,
                   .inv_std = f->scratch + MAXB * U, .work = f->work};
  dp_norm_init_params(&f->n);
}

/* xorshift64*: a fixed stream, uniform in [-1, 1). */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

/* Rows with a different offset and spread per unit, so μ and σ are far from 0 and 1. */
static void fill_inputs(float *z, int B) {
  for (int i = 0; i < B; i++)
    for (int j = 0; j < U; j++)
      z[i * U + j] = (float)(0.5 * j - 1.0 + (0.5 + 0.3 * j) * urand());
}

static void near(double got, double want, double rel, double abs, const char *what, int i) {
  if (!(fabs(got - want) <= rel * fabs(want) + abs))
    fail_msg("%s [%d]: got %.9g, want %.9g", what, i, got, want);
}

/* ---- 1. gradient checks ------------------------------------------------------------------- */

enum { GB = 6 };

/* L = Σ c_ij out_ij after a training forward on a copy of z; running statistics restored after,
 * so every evaluation sees the same shift K. */
static double loss(fixture *f, const float *z, const double *c) {
  float out[GB * U], rm[U], rv[U];
  memcpy(out, z, sizeof out);
  memcpy(rm, f->rm, sizeof rm);
  memcpy(rv, f->rv, sizeof rv);
  assert_int_equal(dp_norm_forward_train(&f->n, out, GB), 0);
  memcpy(f->rm, rm, sizeof rm);
  memcpy(f->rv, rv, sizeof rv);
  double L = 0.0;
  for (int k = 0; k < GB * U; k++)
    L += c[k] * out[k];
  return L;
}

/* Central difference of L in *x, in double over float data. */
static double numeric(fixture *f, const float *z, const double *c, float *x, float h) {
  float keep = *x;
  *x = keep + h;
  double up = loss(f, z, c);
  *x = keep - h;
  double down = loss(f, z, c);
  *x = keep;
  /* The step actually taken, as float rounding makes it. */
  return (up - down) / ((double)(keep + h) - (double)(keep - h));
}

/* Every component within 1e-2 of the largest: with h = 1e-2 on inputs of spread ~1 the truncation
 * error is O(h²) ~ 1e-4 and float rounding of L (~1e-7 · √30) divided by 2h adds ~1e-5, both far
 * below 1e-2 · max|grad| (~1); a wrong term in the backward formula is O(max|grad|). Comparing to
 * the max rather than each component copes with components that cancel to nearly zero. */
static void compare(const double *num, const float *ana, int n, const char *what) {
  double mx = 0.0;
  for (int k = 0; k < n; k++)
    mx = fmax(mx, fabs(ana[k]));
  if (!(mx > 1e-3))
    fail_msg("%s: gradient is trivially zero (max %g)", what, mx);
  for (int k = 0; k < n; k++)
    near(ana[k], num[k], 0.0, 1e-2 * mx, what, k);
}

static void gradcheck(dp_norm_kind kind) {
  fixture f;
  setup(&f, kind);
  float z[GB * U], g[GB * U];
  double c[GB * U], num[GB * U];
  fill_inputs(z, GB);
  for (int k = 0; k < GB * U; k++)
    c[k] = urand();
  for (int j = 0; j < U; j++) {
    f.gain[j] = (float)(1.0 + 0.5 * urand());
    f.shift[j] = (float)(0.5 * urand());
    if (kind == DP_NORM_BATCH) {
      f.rm[j] = (float)(0.5 * j - 1.0 + 0.1 * urand()); /* a non-trivial shift K */
      f.rv[j] = 1.5f;
    }
  }
  /* Analytic: forward, then g = dL/dout = c through the backward pass. */
  memcpy(g, z, sizeof g);
  float rm[U], rv[U];
  memcpy(rm, f.rm, sizeof rm);
  memcpy(rv, f.rv, sizeof rv);
  assert_int_equal(dp_norm_forward_train(&f.n, g, GB), 0);
  memcpy(f.rm, rm, sizeof rm);
  memcpy(f.rv, rv, sizeof rv);
  for (int k = 0; k < GB * U; k++)
    g[k] = (float)c[k];
  assert_int_equal(dp_norm_backward(&f.n, g, GB, 0), 0);
  float dgain[U], dshift[U];
  memcpy(dgain, f.dgain, sizeof dgain);
  memcpy(dshift, f.dshift, sizeof dshift);

  const float h = 1e-2f;
  for (int k = 0; k < GB * U; k++)
    num[k] = numeric(&f, z, c, &z[k], h);
  compare(num, g, GB * U, "dL/dz");
  for (int j = 0; j < U; j++)
    num[j] = numeric(&f, z, c, &f.gain[j], h);
  compare(num, dgain, U, "dL/dgain");
  for (int j = 0; j < U; j++)
    num[j] = numeric(&f, z, c, &f.shift[j], h);
  compare(num, dshift, U, "dL/dshift");

  /* accumulate = 1 adds the same parameter gradients again. */
  memcpy(g, z, sizeof g);
  assert_int_equal(dp_norm_forward_train(&f.n, g, GB), 0);
  for (int k = 0; k < GB * U; k++)
    g[k] = (float)c[k];
  assert_int_equal(dp_norm_backward(&f.n, g, GB, 1), 0);
  for (int j = 0; j < U; j++) {
    near(f.dgain[j], 2.0 * dgain[j], 1e-5, 1e-6, "accumulated dgain", j);
    near(f.dshift[j], 2.0 * dshift[j], 1e-5, 1e-6, "accumulated dshift", j);
  }
}

static void test_gradcheck_batch(void **state) {
  (void)state;
  gradcheck(DP_NORM_BATCH);
}

static void test_gradcheck_layer(void **state) {
  (void)state;
  gradcheck(DP_NORM_LAYER);
}

/* ---- 2. three simulated ranks ------------------------------------------------------------- */

/* A reduce that either records the shard's sums or replaces them with the precomputed totals,
 * which is what a real allreduce would hand back to every rank. */
typedef struct {
  const double *totals; /* NULL: record */
  double record[2 * U + 1];
  int calls, last_n;
} fake_reduce;

static int fake_reduce_fn(void *ctx, double *buf, int n) {
  fake_reduce *r = ctx;
  r->calls++;
  r->last_n = n;
  if (r->totals)
    memcpy(buf, r->totals, sizeof(double) * (size_t)n);
  else
    memcpy(r->record, buf, sizeof(double) * (size_t)n);
  return 0;
}

enum { RANKS = 3, ALL = 7 };
static const int SHARD[RANKS] = {4, 3, 0}, FIRST[RANKS] = {0, 4, 7};

static void test_batch_shards_equal_whole(void **state) {
  (void)state;
  float z[ALL * U], c[ALL * U], rm0[U], rv0[U];
  fill_inputs(z, ALL);
  for (int k = 0; k < ALL * U; k++)
    c[k] = (float)urand();
  for (int j = 0; j < U; j++) {
    rm0[j] = (float)(0.4 * j - 0.8);
    rv0[j] = 1.3f;
  }

  /* The whole batch in one process. */
  fixture whole;
  setup(&whole, DP_NORM_BATCH);
  memcpy(whole.rm, rm0, sizeof rm0);
  memcpy(whole.rv, rv0, sizeof rv0);
  for (int j = 0; j < U; j++)
    whole.gain[j] = 1.0f + 0.1f * (float)j;
  float out[ALL * U], dz[ALL * U];
  memcpy(out, z, sizeof out);
  assert_int_equal(dp_norm_forward_train(&whole.n, out, ALL), 0);
  memcpy(dz, c, sizeof dz);
  assert_int_equal(dp_norm_backward(&whole.n, dz, ALL, 0), 0);

  fixture rank[RANKS];
  fake_reduce red[RANKS];
  float buf[RANKS][MAXB * U];
  double ftot[2 * U + 1] = {0}, btot[2 * U + 1] = {0};
  for (int r = 0; r < RANKS; r++) {
    setup(&rank[r], DP_NORM_BATCH);
    memcpy(rank[r].gain, whole.gain, sizeof whole.gain);
    rank[r].n.reduce = fake_reduce_fn;
    rank[r].n.reduce_ctx = &red[r];
  }

  /* Forward: record each shard's sums, add them up, run again with the totals. */
  for (int pass = 0; pass < 2; pass++)
    for (int r = 0; r < RANKS; r++) {
      red[r] = (fake_reduce){.totals = pass ? ftot : NULL};
      memcpy(rank[r].rm, rm0, sizeof rm0); /* the first pass moved them */
      memcpy(rank[r].rv, rv0, sizeof rv0);
      memcpy(buf[r], z + FIRST[r] * U, sizeof(float) * (size_t)SHARD[r] * U);
      assert_int_equal(dp_norm_forward_train(&rank[r].n, buf[r], SHARD[r]), 0);
      assert_int_equal(red[r].calls, 1);
      assert_int_equal(red[r].last_n, 2 * U + 1);
      for (int k = 0; !pass && k < 2 * U + 1; k++)
        ftot[k] += red[r].record[k];
    }
  assert_true(ftot[2 * U] == ALL);
  for (int r = 0; r < RANKS; r++) {
    for (int k = 0; k < SHARD[r] * U; k++)
      near(buf[r][k], out[FIRST[r] * U + k], 1e-5, 1e-6, "shard output", FIRST[r] * U + k);
    for (int j = 0; j < U; j++) { /* every rank, the empty one too, keeps the same running statistics */
      near(rank[r].rm[j], whole.rm[j], 1e-6, 1e-7, "shard running mean", j);
      near(rank[r].rv[j], whole.rv[j], 1e-6, 1e-7, "shard running var", j);
    }
  }

  /* Backward, the same way; the forward state of the second pass stays in place. */
  for (int pass = 0; pass < 2; pass++)
    for (int r = 0; r < RANKS; r++) {
      red[r] = (fake_reduce){.totals = pass ? btot : NULL};
      memcpy(buf[r], c + FIRST[r] * U, sizeof(float) * (size_t)SHARD[r] * U);
      assert_int_equal(dp_norm_backward(&rank[r].n, buf[r], SHARD[r], 0), 0);
      assert_int_equal(red[r].calls, 1);
      assert_int_equal(red[r].last_n, 2 * U);
      for (int k = 0; !pass && k < 2 * U; k++)
        btot[k] += red[r].record[k];
    }
  float dgain[U] = {0}, dshift[U] = {0};
  for (int r = 0; r < RANKS; r++) {
    for (int k = 0; k < SHARD[r] * U; k++)
      near(buf[r][k], dz[FIRST[r] * U + k], 1e-5, 1e-6, "shard dz", FIRST[r] * U + k);
    for (int j = 0; j < U; j++) {
      dgain[j] += rank[r].dgain[j];
      dshift[j] += rank[r].dshift[j];
    }
  }
  /* Parameter gradients are local: their sum over the ranks is the whole batch's. */
  for (int j = 0; j < U; j++) {
    near(dgain[j], whole.dgain[j], 1e-5, 1e-6, "summed dgain", j);
    near(dshift[j], whole.dshift[j], 1e-5, 1e-6, "summed dshift", j);
    assert_true(rank[2].dgain[j] == 0.0f && rank[2].dshift[j] == 0.0f);
  }
}

/* sync = 0: never a reduce, even with a callback set; an empty shard then does nothing. A NULL
 * callback with sync = 1 is a single process: the same numbers as sync = 0. */
static void test_batch_local_statistics(void **state) {
  (void)state;
  fixture a, b;
  fake_reduce red = {0};
  setup(&a, DP_NORM_BATCH);
  setup(&b, DP_NORM_BATCH);
  a.n.sync = 0;
  a.n.reduce = fake_reduce_fn;
  a.n.reduce_ctx = &red;
  float za[4 * U], zb[4 * U];
  fill_inputs(za, 4);
  memcpy(zb, za, sizeof zb);
  assert_int_equal(dp_norm_forward_train(&a.n, za, 4), 0);
  assert_int_equal(dp_norm_forward_train(&b.n, zb, 4), 0);
  for (int k = 0; k < 4 * U; k++)
    assert_true(za[k] == zb[k]);
  assert_int_equal(dp_norm_backward(&a.n, za, 4, 0), 0);

  memcpy(a.rm, b.rm, sizeof a.rm);
  a.dgain[0] = 7.0f;
  assert_int_equal(dp_norm_forward_train(&a.n, za, 0), 0);
  assert_int_equal(dp_norm_backward(&a.n, za, 0, 0), 0);
  assert_int_equal(red.calls, 0);
  assert_memory_equal(a.rm, b.rm, sizeof a.rm); /* nothing moved */
  assert_true(a.dgain[0] == 0.0f);              /* an empty shard contributes zeros */

  assert_int_equal(dp_norm_forward_train(&a.n, za, MAXB + 1), DP_EINVAL);
  assert_int_equal(dp_norm_forward_train(&a.n, za, 2), 0);
  assert_int_equal(dp_norm_backward(&a.n, za, 3, 0), DP_EINVAL);
}

/* ---- 3. running statistics ---------------------------------------------------------------- */

static void test_running_statistics(void **state) {
  (void)state;
  fixture f;
  setup(&f, DP_NORM_BATCH);
  /* Unit j holds (1, 2, 3, 4)·(j + 1) + j: μ = 2.5(j + 1) + j, unbiased var = (5/3)(j + 1)². */
  float z[4 * U];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < U; j++)
      z[i * U + j] = (float)((i + 1) * (j + 1) + j);
  assert_int_equal(dp_norm_forward_train(&f.n, z, 4), 0);
  for (int j = 0; j < U; j++) {
    double mu = 2.5 * (j + 1) + j, var = 5.0 / 3.0 * (j + 1) * (j + 1);
    near(f.rm[j], 0.1 * mu, 1e-6, 1e-6, "running mean", j);
    near(f.rv[j], 0.9 + 0.1 * var, 1e-6, 1e-6, "running var", j);
  }
  /* One row: nothing to unbias, σ² = 0 enters as is. */
  setup(&f, DP_NORM_BATCH);
  for (int j = 0; j < U; j++)
    z[j] = (float)(2 * j + 1);
  assert_int_equal(dp_norm_forward_train(&f.n, z, 1), 0);
  for (int j = 0; j < U; j++) {
    near(f.rm[j], 0.1 * (2 * j + 1), 1e-6, 1e-6, "running mean, one row", j);
    near(f.rv[j], 0.9, 1e-6, 1e-6, "running var, one row", j);
  }
}

/* ---- 4. evaluation ------------------------------------------------------------------------ */

static void test_eval_uses_running_statistics(void **state) {
  (void)state;
  fixture f;
  setup(&f, DP_NORM_BATCH);
  for (int j = 0; j < U; j++) {
    f.rm[j] = 0.3f * (float)j - 0.5f;
    f.rv[j] = 0.5f + 0.25f * (float)j;
    f.gain[j] = 1.5f - 0.1f * (float)j;
    f.shift[j] = 0.2f * (float)j;
  }
  float batch[5 * U], alone[U], rm[U], rv[U];
  fill_inputs(batch, 5);
  memcpy(alone, batch + 2 * U, sizeof alone);
  memcpy(rm, f.rm, sizeof rm);
  memcpy(rv, f.rv, sizeof rv);
  dp_norm_forward_eval(&f.n, alone, 1);
  for (int j = 0; j < U; j++) {
    double want = f.gain[j] * (batch[2 * U + j] - rm[j]) / sqrt(rv[j] + DP_NORM_EPS) + f.shift[j];
    near(alone[j], want, 1e-6, 1e-6, "eval output", j);
  }
  dp_norm_forward_eval(&f.n, batch, 5);
  assert_memory_equal(alone, batch + 2 * U, sizeof alone);
  assert_memory_equal(rm, f.rm, sizeof rm); /* evaluation updates nothing */
  assert_memory_equal(rv, f.rv, sizeof rv);
}

static void test_layer_eval_equals_train(void **state) {
  (void)state;
  fixture f;
  setup(&f, DP_NORM_LAYER);
  for (int j = 0; j < U; j++) {
    f.gain[j] = 1.5f - 0.1f * (float)j;
    f.shift[j] = 0.2f * (float)j;
  }
  float a[5 * U], b[5 * U], alone[U];
  fill_inputs(a, 5);
  memcpy(b, a, sizeof b);
  memcpy(alone, a + 2 * U, sizeof alone);
  assert_int_equal(dp_norm_forward_train(&f.n, a, 5), 0);
  dp_norm_forward_eval(&f.n, b, 5);
  dp_norm_forward_eval(&f.n, alone, 1);
  assert_memory_equal(a, b, sizeof a);
  assert_memory_equal(alone, b + 2 * U, sizeof alone);
}

/* ---- 5. layer norm rows ------------------------------------------------------------------- */

static void test_layer_rows_standardised(void **state) {
  (void)state;
  fixture f;
  setup(&f, DP_NORM_LAYER);
  float z[MAXB * U];
  for (int k = 0; k < MAXB * U; k++)
    z[k] = (float)(3.0 + 2.0 * urand());
  assert_int_equal(dp_norm_forward_train(&f.n, z, MAXB), 0);
  for (int i = 0; i < MAXB; i++) {
    double s = 0.0, ss = 0.0;
    for (int j = 0; j < U; j++)
      s += z[i * U + j];
    for (int j = 0; j < U; j++)
      ss += pow(z[i * U + j] - s / U, 2);
    /* Biased variance σ²/(σ² + ε): 1 to within ε/σ² ≈ 1e-4 for rows of spread ~1. */
    near(s / U, 0.0, 0.0, 1e-6, "row mean", i);
    near(ss / U, 1.0, 0.0, 1e-3, "row variance", i);
  }
}

static void test_names_and_sizes(void **state) {
  (void)state;
  dp_norm_kind k = DP_NORM_NONE;
  for (int i = DP_NORM_NONE; i <= DP_NORM_LAYER; i++) {
    assert_int_equal(dp_norm_from_name(dp_norm_name((dp_norm_kind)i), &k), 0);
    assert_int_equal(k, i);
  }
  assert_string_equal(dp_norm_name(DP_NORM_BATCH), "batch");
  assert_int_equal(dp_norm_from_name("group", &k), DP_EINVAL);
  assert_int_equal(dp_norm_scratch_floats(DP_NORM_NONE, 10, 4), 0);
  assert_int_equal(dp_norm_scratch_floats(DP_NORM_BATCH, 10, 4), 50);
  assert_int_equal(dp_norm_scratch_floats(DP_NORM_LAYER, 10, 4), 44);
  assert_int_equal(dp_norm_param_floats(DP_NORM_LAYER, 10), 20);
  assert_int_equal(dp_norm_state_floats(DP_NORM_LAYER, 10), 0);
  assert_int_equal(dp_norm_state_floats(DP_NORM_BATCH, 10), 20);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gradcheck_batch),           cmocka_unit_test(test_gradcheck_layer),
      cmocka_unit_test(test_batch_shards_equal_whole),  cmocka_unit_test(test_batch_local_statistics),
      cmocka_unit_test(test_running_statistics),        cmocka_unit_test(test_eval_uses_running_statistics),
      cmocka_unit_test(test_layer_eval_equals_train),   cmocka_unit_test(test_layer_rows_standardised),
      cmocka_unit_test(test_names_and_sizes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
