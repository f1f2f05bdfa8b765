/* Weight initialisation: dp_init_params gives the documented formula for every rule, and
 * dp_init_weights draws from that distribution (range, variance, mean, shape), reproducibly.
 *
 * Tolerances: a 512 x 1024 layer has n = 524288 samples. The relative standard error of a sample
 * variance is sqrt((kurtosis - 1) / n): 1.2e-3 for a uniform (kurtosis 1.8), 2.0e-3 for a normal
 * (kurtosis 3), so the 3% bound is > 15 standard errors and a wrong width (even by √2 or 4/3) fails
 * by far. The mean's standard error is σ/√n = 1.4e-3 σ; we allow 1e-2 σ (7 standard errors). The
 * kurtosis (standard error ≈ sqrt(24/n) = 7e-3 for a normal) tells a normal from a uniform. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/init.h"
#include "dptrain/rng.h"

enum { N_IN = 1024, N_OUT = 512 };
#define N ((size_t)N_IN * N_OUT)

typedef struct {
  double mean, var, kurt, maxabs;
} stats;

static stats compute(const float *w, size_t n) {
  stats s = {0, 0, 0, 0};
  for (size_t i = 0; i < n; i++) {
    s.mean += w[i];
    s.maxabs = fmax(s.maxabs, fabs((double)w[i]));
  }
  s.mean /= (double)n;
  double m4 = 0;
  for (size_t i = 0; i < n; i++) {
    double d = w[i] - s.mean;
    s.var += d * d;
    m4 += d * d * d * d;
  }
  s.var /= (double)(n - 1);
  s.kurt = m4 / (double)n / (s.var * s.var);
  return s;
}

static double xavier_u(void) { return sqrt(6.0 / (N_IN + N_OUT)); }
static double xavier_n(void) { return sqrt(2.0 / (N_IN + N_OUT)); }

/* Fills a 512 x 1024 layer with the rule and checks its statistics against (is_normal, width). */
static void check_rule(dp_init_rule rule, dp_init_dist dist, dp_act act, int want_normal, double want_width) {
  int is_normal = -1;
  double width = -1;
  dp_init_params(rule, dist, act, N_IN, N_OUT, &is_normal, &width);
  assert_int_equal(is_normal, want_normal);
  assert_true(fabs(width - want_width) <= 1e-12 * want_width);

  float *w = malloc(sizeof(float) * N);
  assert_non_null(w);
  dp_rng rng;
  dp_rng_seed(&rng, 12345, 1);
  dp_init_weights(w, N_IN, N_OUT, rule, dist, act, &rng);
  stats s = compute(w, N);
  if (want_normal) {
    double var = want_width * want_width;
    assert_true(fabs(s.var - var) <= 0.03 * var);
    assert_true(fabs(s.mean) <= 1e-2 * want_width);
    assert_true(fabs(s.kurt - 3.0) <= 0.1);
    assert_true(s.maxabs > 3.5 * want_width); /* tails exist: not a clipped distribution */
  } else {
    float r = (float)want_width;
    for (size_t i = 0; i < N; i++)
      if (!(fabsf(w[i]) <= r))
        fail_msg("w[%zu] = %g outside ±%g", i, (double)w[i], (double)r);
    assert_true(s.maxabs >= 0.999 * want_width); /* the whole range is used */
    double var = want_width * want_width / 3.0;
    assert_true(fabs(s.var - var) <= 0.03 * var);
    assert_true(fabs(s.mean) <= 1e-2 * want_width);
    assert_true(fabs(s.kurt - 1.8) <= 0.05);
  }
  free(w);
}

static void test_uniform_fanin(void **state) {
  (void)state;
  /* The explicit rules ignore dist and the activation. */
  check_rule(DP_INIT_UNIFORM_FANIN, DP_DIST_UNIFORM, DP_ACT_RELU, 0, 1.0 / sqrt((double)N_IN));
  check_rule(DP_INIT_UNIFORM_FANIN, DP_DIST_NORMAL, DP_ACT_TANH, 0, 1.0 / sqrt((double)N_IN));
}

static void test_xavier_uniform(void **state) {
  (void)state;
  check_rule(DP_INIT_XAVIER_UNIFORM, DP_DIST_UNIFORM, DP_ACT_SIGMOID, 0, xavier_u());
  check_rule(DP_INIT_XAVIER_UNIFORM, DP_DIST_NORMAL, DP_ACT_RELU, 0, xavier_u());
}

static void test_xavier_normal(void **state) {
  (void)state;
  check_rule(DP_INIT_XAVIER_NORMAL, DP_DIST_NORMAL, DP_ACT_IDENTITY, 1, xavier_n());
  check_rule(DP_INIT_XAVIER_NORMAL, DP_DIST_UNIFORM, DP_ACT_SIGMOID, 1, xavier_n());
}

static void test_auto_uniform(void **state) {
  (void)state;
  check_rule(DP_INIT_AUTO, DP_DIST_UNIFORM, DP_ACT_TANH, 0, xavier_u());
  check_rule(DP_INIT_AUTO, DP_DIST_UNIFORM, DP_ACT_IDENTITY, 0, xavier_u());
  check_rule(DP_INIT_AUTO, DP_DIST_UNIFORM, DP_ACT_SIGMOID, 0, 4.0 * xavier_u());
  check_rule(DP_INIT_AUTO, DP_DIST_UNIFORM, DP_ACT_RELU, 0, sqrt(2.0) * xavier_u());
}

static void test_auto_normal(void **state) {
  (void)state;
  check_rule(DP_INIT_AUTO, DP_DIST_NORMAL, DP_ACT_TANH, 1, xavier_n());
  check_rule(DP_INIT_AUTO, DP_DIST_NORMAL, DP_ACT_IDENTITY, 1, xavier_n());
  check_rule(DP_INIT_AUTO, DP_DIST_NORMAL, DP_ACT_SIGMOID, 1, 4.0 * xavier_n());
  check_rule(DP_INIT_AUTO, DP_DIST_NORMAL, DP_ACT_RELU, 1, sqrt(2.0) * xavier_n());
}

/* The formulas depend on the right fan: swapping n_in and n_out changes uniform_fanin only. */
static void test_params_fans(void **state) {
  (void)state;
  int nrm;
  double w1, w2;
  dp_init_params(DP_INIT_UNIFORM_FANIN, DP_DIST_UNIFORM, DP_ACT_RELU, 300, 100, &nrm, &w1);
  assert_true(fabs(w1 - 1.0 / sqrt(300.0)) < 1e-12);
  dp_init_params(DP_INIT_UNIFORM_FANIN, DP_DIST_UNIFORM, DP_ACT_RELU, 100, 300, &nrm, &w2);
  assert_true(fabs(w2 - 0.1) < 1e-12);
  dp_init_params(DP_INIT_XAVIER_UNIFORM, DP_DIST_UNIFORM, DP_ACT_RELU, 300, 100, &nrm, &w1);
  dp_init_params(DP_INIT_XAVIER_UNIFORM, DP_DIST_UNIFORM, DP_ACT_RELU, 100, 300, &nrm, &w2);
  assert_true(fabs(w1 - sqrt(6.0 / 400.0)) < 1e-12);
  assert_true(w1 == w2);
}

static void test_seed_reproducible(void **state) {
  (void)state;
  enum { I = 64, O = 32 };
  float a[I * O], b[I * O], c[I * O];
  dp_rng r;
  dp_rng_seed(&r, 7, 3);
  dp_init_weights(a, I, O, DP_INIT_AUTO, DP_DIST_NORMAL, DP_ACT_RELU, &r);
  dp_rng_seed(&r, 7, 3);
  dp_init_weights(b, I, O, DP_INIT_AUTO, DP_DIST_NORMAL, DP_ACT_RELU, &r);
  assert_memory_equal(a, b, sizeof a);
  dp_rng_seed(&r, 8, 3);
  dp_init_weights(c, I, O, DP_INIT_AUTO, DP_DIST_NORMAL, DP_ACT_RELU, &r);
  int same = 0;
  for (int i = 0; i < I * O; i++)
    same += a[i] == c[i];
  assert_true(same < I * O / 100); /* a different seed gives (almost) entirely different weights */
  /* ... and so does a different stream of the same seed */
  dp_rng_seed(&r, 7, 4);
  dp_init_weights(c, I, O, DP_INIT_AUTO, DP_DIST_NORMAL, DP_ACT_RELU, &r);
  same = 0;
  for (int i = 0; i < I * O; i++)
    same += a[i] == c[i];
  assert_true(same < I * O / 100);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uniform_fanin),  cmocka_unit_test(test_xavier_uniform),
      cmocka_unit_test(test_xavier_normal),  cmocka_unit_test(test_auto_uniform),
      cmocka_unit_test(test_auto_normal),    cmocka_unit_test(test_params_fans),
      cmocka_unit_test(test_seed_reproducible),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
