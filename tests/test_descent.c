/* The course's experiments on step sizes and second-order methods, as tests:
 * - gradient descent on f(w) = ½ wᵀAw (A diagonal, eigenvalues known) converges with γ = 1/λ_max,
 *   diverges with γ > 2/λ_max, and is slow with γ ≪ γ_opt;
 * - L-BFGS reaches the minimum of a convex quadratic and of a logistic regression in far fewer
 *   iterations than gradient descent;
 * - the mini-batch gradient is an unbiased estimate: over the mini-batches of an epoch its average
 *   is the full-batch gradient. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/config.h"
#include "dptrain/lbfgs.h"
#include "dptrain/model.h"
#include "dptrain/optim.h"
#include "dptrain/rng.h"

enum { N = 40 };

/* A = diag(1, ..., 100) spread over N entries; b = 1: minimum at w* = A⁻¹b. */
static double eig(int i) { return 1.0 + 99.0 * i / (N - 1); }

static int quadratic(void *ctx, const float *w, float *g, double *f) {
  (void)ctx;
  double s = 0.0;
  for (int i = 0; i < N; i++) {
    s += 0.5 * eig(i) * w[i] * w[i] - w[i];
    g[i] = (float)(eig(i) * w[i] - 1.0);
  }
  *f = s;
  return 0;
}

static double dist_to_opt(const float *w) {
  double s = 0.0;
  for (int i = 0; i < N; i++)
    s += pow(w[i] - 1.0 / eig(i), 2);
  return sqrt(s);
}

/* Plain GD (dp_sgd_momentum with β = 0) from w = 0; returns iterations to reach ‖w − w*‖ < tol, or
 * max_iter if it did not; *final gets the last distance. */
static int gd_iterations(double lr, int max_iter, double tol, double *final) {
  float w[N] = {0}, g[N], p[N] = {0};
  double f;
  int k;
  for (k = 0; k < max_iter; k++) {
    if (dist_to_opt(w) < tol)
      break;
    quadratic(NULL, w, g, &f);
    dp_sgd_momentum(N, (float)lr, 0.0f, g, w, p);
  }
  *final = dist_to_opt(w);
  return k;
}

static void test_gd_step_sizes(void **state) {
  (void)state;
  double lmax = eig(N - 1), d;
  /* γ = 1/λ_max: every mode contracts by (1 − λ_i/λ_max) ≤ 0.99 per step. */
  int k_good = gd_iterations(1.0 / lmax, 5000, 1e-4, &d);
  assert_true(d < 1e-4);
  /* γ > 2/λ_max: the stiffest mode is multiplied by |1 − γλ_max| > 1 each step and blows up. */
  gd_iterations(2.1 / lmax, 300, 1e-4, &d);
  assert_true(d > 1e3 || !isfinite(d));
  /* γ ≪ γ_opt: still converging, but ten times smaller steps need about ten times the iterations. */
  int k_slow = gd_iterations(0.1 / lmax, 100000, 1e-4, &d);
  assert_true(d < 1e-4);
  assert_true(k_slow > 8 * k_good);
}

static void test_lbfgs_quadratic(void **state) {
  (void)state;
  dp_lbfgs o;
  assert_int_equal(dp_lbfgs_create(&o, N, 10), 0);
  o.tolerance_grad = 1e-5;
  float w[N] = {0}, g[N];
  double f;
  quadratic(NULL, w, g, &f);
  int rc = 0, it = 0, converged = 0;
  while (rc == 0 && !converged && it < 200) {
    rc = dp_lbfgs_step(&o, w, g, &f, quadratic, NULL, &converged);
    it++;
  }
  assert_int_equal(rc, 0);
  assert_true(converged);
  assert_true(dist_to_opt(w) < 1e-4);
  double d;
  int k_gd = gd_iterations(1.0 / eig(N - 1), 100000, 1e-4, &d);
  print_message("L-BFGS: %d iterations (%lld evaluations); GD with 1/λ_max: %d iterations\n", it,
                (long long)o.evals, k_gd);
  assert_true(it * 10 < k_gd);
  dp_lbfgs_free(&o);
}

/* Logistic regression on separable-ish synthetic data, with a small L2 term so the minimum exists. */
enum { ROWS = 200, DIM = 5 };
typedef struct {
  float x[ROWS][DIM];
  float y[ROWS];
} logreg;

static int logreg_objective(void *ctx, const float *w, float *g, double *f) {
  const logreg *d = ctx;
  double s = 0.0, gd[DIM + 1] = {0};
  for (int i = 0; i < ROWS; i++) {
    double z = w[DIM];
    for (int j = 0; j < DIM; j++)
      z += w[j] * d->x[i][j];
    double p = 1.0 / (1.0 + exp(-z));
    s += -(d->y[i] * log(p + 1e-300) + (1 - d->y[i]) * log(1 - p + 1e-300));
    for (int j = 0; j < DIM; j++)
      gd[j] += (p - d->y[i]) * d->x[i][j];
    gd[DIM] += p - d->y[i];
  }
  *f = s / ROWS;
  for (int j = 0; j <= DIM; j++) {
    double reg = j < DIM ? 1e-2 * w[j] : 0.0;
    *f += j < DIM ? 0.5e-2 * w[j] * w[j] : 0.0;
    g[j] = (float)(gd[j] / ROWS + reg);
  }
  return 0;
}

static void make_logreg(logreg *d) {
  dp_rng r;
  dp_rng_seed(&r, 5, 0);
  for (int i = 0; i < ROWS; i++) {
    double z = 0.3;
    for (int j = 0; j < DIM; j++) {
      d->x[i][j] = (float)dp_rng_normal(&r);
      z += (j + 1) * 0.5 * d->x[i][j];
    }
    d->y[i] = dp_rng_uniform(&r) < 1.0 / (1.0 + exp(-z)) ? 1.0f : 0.0f;
  }
}

static void test_lbfgs_logistic(void **state) {
  (void)state;
  static logreg d;
  make_logreg(&d);
  dp_lbfgs o;
  assert_int_equal(dp_lbfgs_create(&o, DIM + 1, 10), 0);
  o.tolerance_grad = 1e-6;
  float w[DIM + 1] = {0}, g[DIM + 1];
  double f;
  logreg_objective(&d, w, g, &f);
  int rc = 0, it = 0, converged = 0;
  while (rc == 0 && !converged && it < 100) {
    rc = dp_lbfgs_step(&o, w, g, &f, logreg_objective, &d, &converged);
    it++;
  }
  double f_lbfgs = f;
  /* GD with the best safe step for this problem (the Hessian's largest eigenvalue is below
   * ~max ‖x‖²/4 ≈ a few): count iterations to get within 1e-6 of L-BFGS's loss. */
  float v[DIM + 1] = {0}, h[DIM + 1], p[DIM + 1] = {0};
  int k;
  for (k = 0; k < 20000; k++) {
    logreg_objective(&d, v, h, &f);
    if (f < f_lbfgs + 1e-6)
      break;
    dp_sgd_momentum(DIM + 1, 0.5f, 0.0f, h, v, p);
  }
  print_message("logistic regression: L-BFGS %d iterations to loss %.8f; GD %d iterations\n", it, f_lbfgs, k);
  assert_true(it < 40);
  assert_true(it * 5 < k);
  dp_lbfgs_free(&o);
}

/* A linear softmax model on 60 rows in mini-batches of 12: the mean of the 5 mini-batch gradients
 * (each the gradient of its batch's mean loss) equals the gradient of the full batch's mean loss. */
static void test_minibatch_unbiased(void **state) {
  (void)state;
  enum { ROWS = 60, B = 12, D = 5, K = 3 };
  dp_config cfg;
  assert_int_equal(dp_config_parse_string(&cfg, "[data]\npath = unused.h5\n[layer]\nunits = 3\nactivation = identity\n",
                                          "unbiased.ini", NULL, 0), 0);
  dp_model m;
  assert_int_equal(dp_model_create(&m, cfg.layer, cfg.n_layers, cfg.model.loss, NULL, D, ROWS), 0);
  dp_model_init(&m, cfg.layer, 5);
  float x[ROWS * D];
  int32_t lab[ROWS];
  dp_rng r;
  dp_rng_seed(&r, 9, 1);
  for (int i = 0; i < ROWS * D; i++)
    x[i] = (float)dp_rng_normal(&r);
  for (int i = 0; i < ROWS; i++)
    lab[i] = (int32_t)dp_rng_below(&r, K);
  size_t n = m.n_floats;
  float *full = malloc(n * sizeof *full), *mean = calloc(n, sizeof *mean);
  dp_model_forward(&m, x, ROWS);
  dp_model_backward(&m, x, lab, NULL, ROWS, 1.0f / ROWS, 0, NULL);
  memcpy(full, m.grads, n * sizeof *full);
  for (int b = 0; b < ROWS / B; b++) {
    dp_model_forward(&m, x + b * B * D, B);
    dp_model_backward(&m, x + b * B * D, lab + b * B, NULL, B, 1.0f / B, 0, NULL);
    for (size_t i = 0; i < n; i++)
      mean[i] += m.grads[i] / (ROWS / B);
  }
  double worst = 0.0, biggest = 0.0;
  for (size_t i = 0; i < n; i++) {
    worst = fmax(worst, fabs(mean[i] - full[i]));
    biggest = fmax(biggest, fabs(full[i]));
  }
  assert_true(biggest > 1e-2); /* not trivially zero */
  assert_true(worst <= 1e-6 * biggest + 1e-7);
  free(full);
  free(mean);
  dp_model_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gd_step_sizes),
      cmocka_unit_test(test_lbfgs_quadratic),
      cmocka_unit_test(test_lbfgs_logistic),
      cmocka_unit_test(test_minibatch_unbiased),
  };
  return cmocka_run_group_tests_name("descent", tests, NULL, NULL);
}
