/* The optimizers against hand-computed steps: each formula of include/dptrain/optim.h is written
 * out again in double here and followed for 3 steps over a few elements; dp_optim (through a
 * dp_config) must take exactly the step of the pure function it wraps. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dptrain/config.h"
#include "dptrain/optim.h"
#include "dptrain/schedule.h"

enum { N = 4, K = 3 };

static const float W0[N] = {1.0f, -0.5f, 2.0f, 0.25f};
/* The last element gets no gradient at all: every optimizer must leave it finite. */
static const float G[K][N] = {{0.5f, -1.0f, 0.2f, 0.0f}, {0.3f, -0.4f, -0.6f, 0.0f}, {-0.2f, 0.8f, 0.1f, 0.0f}};

/* |got − want| ≤ rel·|want| + abs */
static void near(double got, double want, double rel, double abs, const char *what, int k, int i) {
  if (!(fabs(got - want) <= rel * fabs(want) + abs))
    fail_msg("%s step %d [%d]: got %.9g, want %.9g", what, k, i, got, want);
}

static void start(float *w, double *rw) {
  for (int i = 0; i < N; i++)
    rw[i] = w[i] = W0[i];
}

static void check_all(const float *w, const double *ref, const char *what, int k) {
  for (int i = 0; i < N; i++)
    near(w[i], ref[i], 1e-5, 1e-7, what, k, i);
}

static void test_sgd_momentum(void **state) {
  (void)state;
  const double betas[] = {0.9, 0.0}, lr = 0.1;
  for (int b = 0; b < 2; b++) {
    float w[N], p[N] = {0};
    double rw[N], rp[N] = {0};
    start(w, rw);
    for (int k = 0; k < K; k++) {
      dp_sgd_momentum(N, (float)lr, (float)betas[b], G[k], w, p);
      for (int i = 0; i < N; i++) {
        rp[i] = betas[b] * rp[i] + G[k][i];
        rw[i] -= lr * rp[i];
        if (betas[b] == 0.0) /* plain gradient descent: the buffer is just the gradient... */
          assert_true(p[i] == G[k][i]);
      }
      check_all(w, rw, betas[b] == 0.0 ? "gd" : "heavy ball", k);
    }
    if (betas[b] == 0.0) /* ...and w ends at w0 − γ(g0 + g1 + g2) */
      for (int i = 0; i < N; i++)
        near(w[i], W0[i] - lr * ((double)G[0][i] + G[1][i] + G[2][i]), 1e-6, 1e-7, "gd sum", K, i);
  }
}

static void test_sgd_full(void **state) {
  (void)state;
  const double lr = 0.1, beta = 0.9;
  const struct { double damp, wd; int nesterov; } cases[] = {{0.5, 0.01, 0}, {0.0, 0.01, 1}, {0.0, 0.0, 1}, {0.3, 0.0, 0}};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    float w[N], p[N] = {7, 7, 7, 7}; /* garbage: the first step must overwrite p with g' */
    double rw[N], rp[N];
    start(w, rw);
    for (int k = 0; k < K; k++) {
      dp_sgd_full(N, (float)lr, (float)beta, (float)cases[c].damp, (float)cases[c].wd, cases[c].nesterov, k == 0,
                  G[k], w, p);
      for (int i = 0; i < N; i++) {
        double gp = G[k][i] + cases[c].wd * rw[i];
        rp[i] = k == 0 ? gp : beta * rp[i] + (1.0 - cases[c].damp) * gp;
        rw[i] -= lr * (cases[c].nesterov ? gp + beta * rp[i] : rp[i]);
        near(p[i], rp[i], 1e-5, 1e-7, "sgd_full p", k, i);
      }
      check_all(w, rw, "sgd_full", k);
    }
  }
}

static void test_sgd_difference(void **state) {
  (void)state;
  const double lr = 0.1, beta = 0.9;
  float w[N], prev[N];
  double rw[N], rprev[N];
  start(w, rw);
  start(prev, rprev);
  for (int k = 0; k < K; k++) {
    dp_sgd_difference(N, (float)lr, (float)beta, G[k], w, prev);
    for (int i = 0; i < N; i++) {
      double next = rw[i] - lr * G[k][i] + beta * (rw[i] - rprev[i]);
      rprev[i] = rw[i];
      rw[i] = next;
      near(prev[i], rprev[i], 1e-6, 1e-7, "difference prev", k, i);
    }
    check_all(w, rw, "difference", k);
  }
}

/* L = ½ Σ a_i w_i², g = a∘w: heavy ball and the difference form follow one trajectory. */
static void test_difference_equals_heavy_ball(void **state) {
  (void)state;
  const float a[N] = {1.0f, 10.0f, 50.0f, 100.0f}, lr = 0.01f, beta = 0.9f;
  float wh[N], p[N] = {0}, wd[N], prev[N], gh[N], gd[N];
  memcpy(wh, W0, sizeof wh);
  memcpy(wd, W0, sizeof wd);
  memcpy(prev, W0, sizeof prev);
  for (int k = 0; k < 50; k++) {
    double scale = 0.0;
    for (int i = 0; i < N; i++) {
      gh[i] = a[i] * wh[i];
      gd[i] = a[i] * wd[i];
      scale = fmax(scale, fabs(wh[i]));
    }
    dp_sgd_momentum(N, lr, beta, gh, wh, p);
    dp_sgd_difference(N, lr, beta, gd, wd, prev);
    for (int i = 0; i < N; i++)
      near(wd[i], wh[i], 1e-5, 1e-5 * scale, "difference vs heavy ball", k, i);
  }
}

static void test_rmsprop(void **state) {
  (void)state;
  const double lr = 0.01, alpha = 0.99, eps = 1e-8, mus[] = {0.0, 0.9};
  for (int c = 0; c < 4; c++) { /* momentum off/on, L2 off/on */
    const double mu = mus[c % 2], l2 = c < 2 ? 0.0 : 0.1;
    float w[N], v[N] = {0}, b[N] = {0};
    double rw[N], rv[N] = {0}, rb[N] = {0};
    start(w, rw);
    for (int k = 0; k < K; k++) {
      dp_rmsprop(N, (float)lr, (float)alpha, (float)eps, (float)mu, (float)l2, G[k], w, v, mu > 0 ? b : NULL);
      for (int i = 0; i < N; i++) {
        double gi = G[k][i] + l2 * rw[i];
        rv[i] = alpha * rv[i] + (1 - alpha) * gi * gi;
        double s = gi / (sqrt(rv[i]) + eps);
        rb[i] = mu * rb[i] + s;
        rw[i] -= lr * (mu > 0 ? rb[i] : s);
        near(v[i], rv[i], 1e-5, 1e-12, "rmsprop v", k, i);
      }
      check_all(w, rw, mu > 0 ? "rmsprop momentum" : "rmsprop", k);
    }
  }
}

/* One Adam run in double; bc: bias correction; inside: eps placement. */
static void adam_ref(double lr, double eps, int bc, int inside, double l2, double dec, double rw[K][N]) {
  const double b1 = 0.9, b2 = 0.999;
  double w[N], m[N] = {0}, v[N] = {0};
  for (int i = 0; i < N; i++)
    w[i] = W0[i];
  for (int k = 0; k < K; k++) {
    double c1 = bc ? 1 - pow(b1, k + 1) : 1, c2 = bc ? 1 - pow(b2, k + 1) : 1;
    for (int i = 0; i < N; i++) {
      double g = G[k][i] + l2 * w[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      double mh = m[i] / c1, vh = v[i] / c2;
      w[i] = (1 - lr * dec) * w[i] - lr * mh / (inside ? sqrt(vh + eps) : sqrt(vh) + eps);
      rw[k][i] = w[i];
    }
  }
}

static void test_adam(void **state) {
  (void)state;
  const struct { double eps; int bc, inside; double l2, dec; } cases[] = {
      {1e-8, 1, 0, 0, 0}, {1e-8, 0, 0, 0, 0}, {0.1, 1, 1, 0, 0}, {0.1, 1, 0, 0, 0},
      {1e-8, 1, 0, 0.1, 0}, {1e-8, 1, 0, 0, 0.1}, {0.1, 0, 1, 0.05, 0}};
  const double lr = 1e-3;
  double in[K][N], out[K][N]; /* the placements of a large eps differ by far more than the tolerance */
  adam_ref(lr, 0.1, 1, 1, 0, 0, in);
  adam_ref(lr, 0.1, 1, 0, 0, 0, out);
  assert_true(fabs(in[K - 1][2] - out[K - 1][2]) > 1e-5);
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    double ref[K][N];
    adam_ref(lr, cases[c].eps, cases[c].bc, cases[c].inside, cases[c].l2, cases[c].dec, ref);
    float w[N], m[N] = {0}, v[N] = {0};
    memcpy(w, W0, sizeof w);
    for (int k = 0; k < K; k++) {
      float c1 = cases[c].bc ? (float)(1 - pow(0.9, k + 1)) : 1.0f, c2 = cases[c].bc ? (float)(1 - pow(0.999, k + 1)) : 1.0f;
      dp_adam(N, (float)lr, 0.9f, 0.999f, (float)cases[c].eps, cases[c].inside, c1, c2, (float)cases[c].l2,
              (float)cases[c].dec, G[k], w, m, v);
      char what[64];
      snprintf(what, sizeof what, "adam case %zu", c);
      for (int i = 0; i < N; i++) /* w moves by ~1e-3 a step; float rounding of w is ~1e-7 relative */
        near(w[i], ref[k][i], 4e-7, 1e-7, what, k, i);
    }
  }
  /* With bias correction the first step is ≈ γ·sign(g); without it, (1−β1)g/√((1−β2)g²) ≈ 3.16 γ. */
  float w[N], m[N] = {0}, v[N] = {0};
  memcpy(w, W0, sizeof w);
  dp_adam(N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 0.1f, 0.001f, 0, 0, G[0], w, m, v);
  for (int i = 0; i < N; i++)
    near(w[i], W0[i] - 1e-3 * ((G[0][i] > 0) - (G[0][i] < 0)), 0, 2e-7, "adam first step", 0, i);
  memcpy(w, W0, sizeof w);
  memset(m, 0, sizeof m);
  memset(v, 0, sizeof v);
  dp_adam(N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1, 1, 0, 0, G[0], w, m, v);
  near(W0[0] - w[0], 1e-3 * 0.1 / sqrt(0.001), 1e-4, 0, "adam first step, no correction", 0, 0);
}

/* An optimizer set up through a dp_config, as the trainer does. */
typedef struct {
  dp_optim_kind kind;
  double mom, wd;
  int diff, nest;
  int slots;  /* state slots expected */
  int inside; /* eps inside the square root */
} optim_case;

static int optim_from_config(dp_optim *o, const dp_config *cfg, size_t n) {
  dp_optim_hparams h;
  dp_optim_hparams_from_cfg(&h, &cfg->optimizer);
  return dp_optim_create(o, &h, n);
}

static void config_for(dp_config *cfg, const optim_case *c) {
  dp_config_defaults(cfg);
  cfg->optimizer.name = c->kind;
  cfg->optimizer.momentum = c->mom;
  cfg->optimizer.momentum_form = c->diff ? DP_MOMENTUM_DIFFERENCE : DP_MOMENTUM_HEAVY_BALL;
  cfg->optimizer.weight_decay = c->wd;
  cfg->optimizer.nesterov = c->nest;
  cfg->optimizer.eps_placement = c->inside ? DP_EPS_INSIDE : DP_EPS_OUTSIDE;
}

/* dp_optim through a dp_config: slot count, zeroed state, and the pure functions' exact steps. */
static void test_optim_through_config(void **state) {
  (void)state;
  const optim_case cases[] = {
      {DP_OPT_SGD, 0, 0, 0, 0, 0, 0},       {DP_OPT_SGD, 0, 0.01, 0, 0, 0, 0},    {DP_OPT_SGD, 0.9, 0, 0, 0, 1, 0},
      {DP_OPT_SGD, 0.9, 0.01, 0, 1, 1, 0},  {DP_OPT_SGD, 0.9, 0, 1, 0, 1, 0},     {DP_OPT_RMSPROP, 0, 0, 0, 0, 1, 0},
      {DP_OPT_RMSPROP, 0.9, 0, 0, 0, 2, 0}, {DP_OPT_ADAM, 0, 0.01, 0, 0, 2, 0},   {DP_OPT_ADAMW, 0, 0.01, 0, 0, 2, 0}};
  const float lr = 0.05f;
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    dp_config cfg;
    config_for(&cfg, &cases[c]);
    dp_optim o;
    assert_int_equal(optim_from_config(&o, &cfg, N), 0);
    assert_int_equal(o.n_slots, cases[c].slots);
    assert_int_equal(o.t, 0);
    assert_true(dp_optim_slot(&o, cases[c].slots) == NULL && dp_optim_slot(&o, -1) == NULL);
    for (int s = 0; s < cases[c].slots; s++)
      for (int i = 0; i < N; i++)
        assert_true(dp_optim_slot(&o, s)[i] == 0.0f);
    float w[N], rw[N], s0[N] = {0}, s1[N] = {0};
    memcpy(w, W0, sizeof w);
    memcpy(rw, W0, sizeof rw);
    if (cases[c].diff)
      memcpy(s0, W0, sizeof s0);
    for (int k = 0; k < K; k++) {
      assert_int_equal(dp_optim_step(&o, w, G[k], lr), 0); /* a finite gradient */
      switch (cases[c].kind) {
      case DP_OPT_SGD:
        if (cases[c].diff)
          dp_sgd_difference(N, lr, 0.9f, G[k], rw, s0);
        else if (cases[c].wd > 0 || cases[c].nest) /* the first step's buffer is g' */
          dp_sgd_full(N, lr, (float)cases[c].mom, 0, 0.01f, cases[c].nest, k == 0, G[k], rw, s0);
        else
          dp_sgd_momentum(N, lr, (float)cases[c].mom, G[k], rw, s0);
        break;
      case DP_OPT_RMSPROP:
        dp_rmsprop(N, lr, 0.99f, 1e-8f, (float)cases[c].mom, 0.0f, G[k], rw, s0, cases[c].mom > 0 ? s1 : NULL);
        break;
      default: {
        float c1 = (float)(1.0 - pow(0.9f, k + 1)), c2 = (float)(1.0 - pow(0.999f, k + 1));
        int adamw = cases[c].kind == DP_OPT_ADAMW;
        dp_adam(N, lr, 0.9f, 0.999f, 1e-8f, 0, c1, c2, adamw ? 0 : 0.01f, adamw ? 0.01f : 0, G[k], rw, s0, s1);
      }
      }
      assert_int_equal(o.t, k + 1);
      for (int i = 0; i < N; i++)
        if (w[i] != rw[i])
          fail_msg("case %zu step %d [%d]: dp_optim %.9g, pure function %.9g", c, k, i, w[i], rw[i]);
      for (int sl = 0; sl < cases[c].slots; sl++)
        assert_memory_equal(dp_optim_slot(&o, sl), sl ? s1 : s0, sizeof s0);
    }
    dp_optim_free(&o);
  }
}

/* [train] comm = node: the node's ranks each update a slice; the slices together must give the bits
 * of the whole update, for every optimizer and across steps (Adam's bias correction counts steps). */
static void test_step_in_slices(void **state) {
  (void)state;
  const optim_case cases[] = {
      {DP_OPT_SGD, 0.9, 0, 0, 0, 1, 0},    {DP_OPT_SGD, 0.9, 0.01, 0, 1, 1, 0}, {DP_OPT_SGD, 0.9, 0, 1, 0, 1, 0},
      {DP_OPT_SGD, 0, 0.01, 0, 0, 0, 0},   {DP_OPT_RMSPROP, 0.9, 0, 0, 0, 2, 0}, {DP_OPT_ADAM, 0, 0.01, 0, 0, 2, 0},
      {DP_OPT_ADAMW, 0, 0.01, 0, 0, 2, 0}};
  const size_t cut[] = {0, 1, 3, N}; /* three slices of unequal length */
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    dp_config cfg;
    config_for(&cfg, &cases[c]);
    dp_optim whole, part[3];
    assert_int_equal(optim_from_config(&whole, &cfg, N), 0);
    for (int r = 0; r < 3; r++)
      assert_int_equal(optim_from_config(&part[r], &cfg, N), 0);
    float shared[2 * N] = {0}, w[N], ws[N];
    for (int r = 0; r < 3; r++) /* one state block for all: as the node's window */
      dp_optim_adopt_state(&part[r], part[r].n_slots ? shared : NULL);
    memcpy(w, W0, sizeof w);
    memcpy(ws, W0, sizeof ws);
    for (int k = 0; k < K; k++) {
      dp_optim_step(&whole, w, G[k], 0.05f);
      for (int r = 0; r < 3; r++)
        dp_optim_step_range(&part[r], ws, G[k], 0.05f, cut[r], cut[r + 1]);
      assert_memory_equal(w, ws, sizeof w);
      for (int sl = 0; sl < whole.n_slots; sl++)
        assert_memory_equal(dp_optim_slot(&whole, sl), shared + sl * N, sizeof(float) * N);
    }
    dp_optim_free(&whole);
    for (int r = 0; r < 3; r++)
      dp_optim_free(&part[r]);
  }
}

/* Every update loop reports a NaN or an Inf anywhere in the gradient (the trainer's only check of
 * the gradient when it stops or restores on one), and nothing when the gradient is finite. */
static void test_nonfinite_reported(void **state) {
  (void)state;
  const optim_case cases[] = {
      {DP_OPT_SGD, 0, 0, 0, 0, 0, 0},       {DP_OPT_SGD, 0.9, 0, 0, 0, 1, 0},   {DP_OPT_SGD, 0.9, 0.01, 0, 1, 1, 0},
      {DP_OPT_SGD, 0.9, 0, 1, 0, 1, 0},     {DP_OPT_RMSPROP, 0, 0, 0, 0, 1, 0}, {DP_OPT_RMSPROP, 0.9, 0, 0, 0, 2, 0},
      {DP_OPT_ADAM, 0, 0, 0, 0, 2, 0},      {DP_OPT_ADAM, 0, 0, 0, 0, 2, 1},    {DP_OPT_ADAMW, 0, 0.01, 0, 0, 2, 0}};
  enum { M = 37 }; /* whole vectors and a remainder */
  const float bad[] = {NAN, INFINITY, -INFINITY};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    dp_config cfg;
    config_for(&cfg, &cases[c]);
    for (int at = 0; at < M; at += 6)
      for (int b = 0; b < 3; b++) {
        dp_optim o;
        assert_int_equal(optim_from_config(&o, &cfg, M), 0);
        float w[M], g[M];
        for (int i = 0; i < M; i++)
          w[i] = 0.5f, g[i] = 1e30f * (i % 2 ? 1.0f : -1.0f); /* large but finite: no report */
        assert_int_equal(dp_optim_step(&o, w, g, 0.1f), 0);
        g[at] = bad[b];
        if (dp_optim_step(&o, w, g, 0.1f) != 1)
          fail_msg("case %zu: %g at [%d] not reported", c, bad[b], at);
        dp_optim_free(&o);
      }
  }
}

/* lr = 0 in the file means the optimizer's own default, which the schedule then starts from. */
static void test_lr_zero_means_default(void **state) {
  (void)state;
  const char *names[] = {"sgd", "rmsprop", "adam", "adamw", "lbfgs"};
  const double want[] = {0.01, 0.01, 1e-3, 1e-3, 1.0};
  for (int c = 0; c < 5; c++) {
    char text[512];
    snprintf(text, sizeof text,
             "[data]\npath = none.h5\n[layer]\nunits = 3\n[optimizer]\nname = %s\nlr = 0\n[train]\nbatch_size = %s\n",
             names[c], c == 4 ? "full" : "32");
    dp_config cfg;
    int rc = dp_config_parse_string(&cfg, text, "lr0.ini", NULL, 0);
    assert_int_equal(rc, 0);
    assert_true(cfg.optimizer.lr == want[c]);
    dp_schedule s;
    dp_schedule_init(&s, &cfg.schedule, cfg.optimizer.lr, 100, 32);
    assert_true(dp_schedule_lr(&s, 5) == want[c]);
  }
  dp_config cfg; /* an explicit lr is kept */
  const char *text = "[data]\npath = x.h5\n[layer]\nunits = 2\n[optimizer]\nname = adam\nlr = 0.25\n";
  assert_int_equal(dp_config_parse_string(&cfg, text, "lr.ini", NULL, 0), 0);
  assert_true(cfg.optimizer.lr == 0.25);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sgd_momentum),        cmocka_unit_test(test_sgd_full),
      cmocka_unit_test(test_sgd_difference),      cmocka_unit_test(test_difference_equals_heavy_ball),
      cmocka_unit_test(test_rmsprop),             cmocka_unit_test(test_adam),
      cmocka_unit_test(test_optim_through_config), cmocka_unit_test(test_step_in_slices),
      cmocka_unit_test(test_nonfinite_reported), cmocka_unit_test(test_lr_zero_means_default),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
