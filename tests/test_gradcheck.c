/* Central-difference gradient checks (genann/kann style) for activations, losses, the dense layer
 * and a whole model, for every activation and both losses, and a small CNN with every layer type.
 *
 * Everything computes in float32, so the step is h = 1e-2 and the divisor is the step actually
 * taken, (double)(p+h) - (double)(p-h) in float. Error budget of the numerical side: truncation
 * h²/6·|f'''| ≤ 4e-5 relative for tanh/sigmoid/softmax (exact for linear maps), and float rounding
 * of the few outputs a perturbation changes, ~6e-8·|y| each, over 2h = 2e-2: ≤ ~5e-5 absolute.
 * Hence the check |num - ana| <= 2e-2·max(|num|,|ana|) + 2e-4: 2% relative is > 100× the
 * truncation error yet far below any real mistake (a missing factor, a wrong derivative), and the
 * absolute term covers rounding for near-zero entries. Every check also requires max|ana| > 1e-3,
 * so an all-zero gradient cannot pass. ReLU's kink is avoided: every pre-activation of a ReLU is
 * kept at least 0.1 from 0, far more than a step of h moves it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dptrain/activations.h"
#include "dptrain/config.h"
#include "dptrain/layers.h"
#include "dptrain/loss.h"
#include "dptrain/model.h"
#include "dptrain/rng.h"

#define H 1e-2f
#define RTOL 2e-2
#define ATOL 2e-4
#define MARGIN 0.1f

typedef double (*loss_fn)(void *ctx);

static float unif(dp_rng *r, double lo, double hi) { return (float)(lo + (hi - lo) * dp_rng_uniform(r)); }

/* Checks ana (n) against central differences of L = f(ctx) over p (restored), and that it is not
 * all zero. The divisor is the step actually taken in float. */
static void gradcheck(float *p, const float *ana, size_t n, loss_fn f, void *ctx, const char *fmt, ...) {
  double num[4096], maxabs = 0;
  char what[96];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  assert_true(n <= 4096);
  for (size_t i = 0; i < n; i++) {
    float orig = p[i], xp = orig + H, xm = orig - H;
    p[i] = xp;
    double lp = f(ctx);
    p[i] = xm;
    num[i] = (lp - f(ctx)) / ((double)xp - (double)xm);
    p[i] = orig;
  }
  for (size_t i = 0; i < n; i++) {
    double a = ana[i], d = fabs(num[i] - a);
    maxabs = fmax(maxabs, fabs(a));
    if (!(d <= RTOL * fmax(fabs(num[i]), fabs(a)) + ATOL))
      fail_msg("%s[%zu]: analytic %.6g vs numerical %.6g", what, i, a, num[i]);
  }
  if (!(maxabs > 1e-3))
    fail_msg("%s: gradient is trivially zero (max %g)", what, maxabs);
}

/* ---- activations ---- */

typedef struct { dp_act a; const float *x; const float *g; size_t n; } act_ctx;

/* L = Σ g_i f(x_i) */
static double act_loss(void *p) {
  act_ctx *c = p;
  float y[16];
  memcpy(y, c->x, sizeof(float) * c->n);
  dp_act_forward(c->a, y, c->n);
  double s = 0;
  for (size_t i = 0; i < c->n; i++)
    s += (double)c->g[i] * y[i];
  return s;
}

static void test_activations(void **state) {
  (void)state;
  enum { N = 16 };
  dp_rng r;
  dp_rng_seed(&r, 1, 0);
  float x[N], g[N], y[N], dy[N];
  for (int i = 0; i < N; i++) /* |x| in [0.2, 2.5], both signs: away from ReLU's kink */
    x[i] = (i % 2 ? 1.0f : -1.0f) * unif(&r, 0.2, 2.5), g[i] = unif(&r, 0.5, 1.5);
  for (int a = DP_ACT_IDENTITY; a <= DP_ACT_SIGMOID; a++) {
    memcpy(y, x, sizeof y);
    dp_act_forward((dp_act)a, y, N);
    memcpy(dy, g, sizeof dy);
    dp_act_backward((dp_act)a, y, dy, N);
    act_ctx c = {(dp_act)a, x, g, N};
    gradcheck(x, dy, N, act_loss, &c, "%s", dp_act_name((dp_act)a));
  }
}

/* ---- losses ---- */

enum { LB = 3, LK = 5 };
typedef struct { int mse; const float *z; const int32_t *lab; const float *t; float scale; } loss_ctx;

static double loss_val(void *p) {
  loss_ctx *c = p;
  double l = c->mse ? dp_loss_mse(c->z, c->t, LB, LK, c->scale, NULL)
                    : dp_loss_softmax_ce(c->z, c->lab, LB, LK, c->scale, NULL, NULL);
  return l * c->scale; /* the returned sum is unscaled; the gradient is of sum × scale */
}

static void test_losses(void **state) {
  (void)state;
  dp_rng r;
  dp_rng_seed(&r, 2, 0);
  float z[LB * LK], t[LB * LK], dz[LB * LK], alias[LB * LK];
  int32_t lab[LB];
  for (int i = 0; i < LB * LK; i++) {
    z[i] = unif(&r, -3, 3);
    t[i] = unif(&r, -1, 1);
  }
  for (int i = 0; i < LB; i++) lab[i] = (int32_t)dp_rng_below(&r, LK);
  for (int mse = 0; mse <= 1; mse++) {
    loss_ctx c = {mse, z, lab, t, 0.25f};
    double l1 = mse ? dp_loss_mse(z, t, LB, LK, c.scale, dz) : dp_loss_softmax_ce(z, lab, LB, LK, c.scale, dz, NULL);
    assert_true(isfinite(l1) && l1 > 0);
    gradcheck(z, dz, LB * LK, loss_val, &c, "%s", mse ? "mse" : "softmax_ce");
    /* The output may alias the input: same loss, same gradient. */
    memcpy(alias, z, sizeof z);
    double l2 = mse ? dp_loss_mse(alias, t, LB, LK, c.scale, alias)
                    : dp_loss_softmax_ce(alias, lab, LB, LK, c.scale, alias, NULL);
    assert_true(l1 == l2);
    assert_memory_equal(alias, dz, sizeof dz);
  }
}

static void test_softmax_ce_stable_and_correct(void **state) {
  (void)state;
  const float z[3 * 3] = {1000, -1000, 0, -1000, 1000, 999, 5, 5, -5};
  const int32_t lab[3] = {0, 2, 1};
  float dz[9];
  int correct = -1;
  double l = dp_loss_softmax_ce(z, lab, 3, 3, 1.0f, dz, &correct);
  assert_true(isfinite(l));
  /* row 0: ~0; row 1: log(e^1 + e^0) ≈ 1.3133; row 2: log 2 (+ tiny) */
  double want = 0.0 + (1.0 + log1p(exp(-1.0))) + log(2.0 + exp(-10.0));
  assert_true(fabs(l - want) < 1e-4);
  for (int b = 0; b < 3; b++) /* finite, and softmax - onehot sums to 0 per row */
    assert_true(isfinite(dz[3 * b] + dz[3 * b + 1] + dz[3 * b + 2]) &&
                fabs((double)dz[3 * b] + dz[3 * b + 1] + dz[3 * b + 2]) < 1e-5);
  /* argmax hits: row 0 (0 = 0), row 1 (1 != 2), row 2 (tie 0/1 -> first, != 1) */
  assert_int_equal(correct, 1);
  const int32_t lab2[3] = {0, 1, 0};
  dp_loss_softmax_ce(z, lab2, 3, 3, 1.0f, NULL, &correct);
  assert_int_equal(correct, 3);
}

/* ---- dense layer ---- */

enum { DI = 4, DO = 3, DB = 5 };
typedef struct { dp_dense *l; float *x; const float *c; } dense_ctx;

/* L = Σ c_ij y_ij, so dL/dy = c */
static double dense_loss(void *p) {
  dense_ctx *d = p;
  dp_dense_forward(d->l, d->x, DB);
  double s = 0;
  for (int i = 0; i < DB * DO; i++)
    s += (double)d->c[i] * d->l->y[i];
  return s;
}

static void test_dense(void **state) {
  (void)state;
  float w[DO * DI], b[DO], dw[DO * DI], db[DO], y[DB * DO], dy[DB * DO], x[DB * DI], dx[DB * DI], c[DB * DO];
  for (int a = DP_ACT_IDENTITY; a <= DP_ACT_SIGMOID; a++) {
    dp_dense l = {.in = DI, .out = DO, .act = DP_ACT_IDENTITY, .w = w, .b = b, .dw = dw, .db = db, .y = y, .dy = dy};
    dp_rng r;
    float zmin = 0;
    for (uint64_t seed = 0; zmin < MARGIN; seed++) { /* draw until no pre-activation is near 0 */
      assert_true(seed < 100);
      dp_rng_seed(&r, 3, seed);
      for (int i = 0; i < DO * DI; i++) w[i] = unif(&r, -0.8, 0.8);
      for (int i = 0; i < DO; i++) b[i] = unif(&r, -0.5, 0.5);
      for (int i = 0; i < DB * DI; i++) x[i] = unif(&r, -1, 1);
      for (int i = 0; i < DB * DO; i++) c[i] = unif(&r, -1, 1);
      l.act = DP_ACT_IDENTITY;
      dp_dense_forward(&l, x, DB);
      zmin = INFINITY;
      for (int i = 0; i < DB * DO; i++) zmin = fminf(zmin, fabsf(y[i]));
    }
    l.act = (dp_act)a;
    dp_dense_forward(&l, x, DB);
    memcpy(dy, c, sizeof dy);
    dp_dense_backward(&l, x, DB, dx, 0);
    dense_ctx d = {&l, x, c};
    gradcheck(w, dw, DO * DI, dense_loss, &d, "dense/%s/dW", dp_act_name(l.act));
    gradcheck(b, db, DO, dense_loss, &d, "dense/%s/db", dp_act_name(l.act));
    gradcheck(x, dx, DB * DI, dense_loss, &d, "dense/%s/dx", dp_act_name(l.act));
    /* accumulate = 1 adds a second, identical gradient to dW and db */
    float dw1[DO * DI], db1[DO];
    memcpy(dw1, dw, sizeof dw);
    memcpy(db1, db, sizeof db);
    dp_dense_forward(&l, x, DB);
    memcpy(dy, c, sizeof dy);
    dp_dense_backward(&l, x, DB, NULL, 1);
    for (int i = 0; i < DO * DI; i++) assert_true(fabsf(dw[i] - 2 * dw1[i]) <= 1e-5f * (1 + fabsf(dw1[i])));
    for (int i = 0; i < DO; i++) assert_true(fabsf(db[i] - 2 * db1[i]) <= 1e-5f * (1 + fabsf(db1[i])));
  }
}

/* ---- whole model ---- */

enum { MB = 4, MIN = 3 };
typedef struct { dp_model *m; const float *x; const int32_t *lab; const float *t; float scale; } model_ctx;

static double model_loss(void *p) {
  model_ctx *c = p;
  dp_model_forward(c->m, c->x, MB);
  return dp_model_loss(c->m, c->lab, c->t, MB, NULL) * c->scale;
}

/* Smallest |pre-activation| over the ReLU layers (each briefly run as identity to expose it). */
static float relu_margin(dp_model *m, const float *x) {
  float zmin = INFINITY;
  for (int i = 0; i < m->n_layers; i++) {
    if (m->layer[i].act != DP_ACT_RELU) continue;
    m->layer[i].act = DP_ACT_IDENTITY;
    dp_model_forward(m, x, MB);
    m->layer[i].act = DP_ACT_RELU;
    for (int j = 0; j < MB * m->layer[i].out; j++) zmin = fminf(zmin, fabsf(m->layer[i].y[j]));
  }
  return zmin;
}

static void check_model(const char *layers, int mse) {
  char text[1024];
  snprintf(text, sizeof text, "[data]\npath = unused.h5\n[model]\nloss = %s\n%s", mse ? "mse" : "softmax_cross_entropy",
           layers);
  dp_config cfg;
  assert_int_equal(dp_config_parse_string(&cfg, text, "gradcheck.ini", NULL, 0), 0);
  dp_model m;
  assert_int_equal(dp_model_create(&m, cfg.layer, cfg.n_layers, cfg.model.loss, NULL, MIN, 2 * MB), 0);
  float x[MB * MIN], t[MB * 8];
  int32_t lab[MB];
  dp_rng r;
  for (uint64_t seed = 0;; seed++) {
    assert_true(seed < 200);
    dp_model_init(&m, cfg.layer, seed);
    dp_rng_seed(&r, 4, seed);
    for (int i = 0; i < m.n_layers; i++) /* nonzero biases, so they matter too */
      for (int j = 0; j < m.layer[i].out; j++) m.layer[i].b[j] = unif(&r, -0.3, 0.3);
    for (int i = 0; i < MB * MIN; i++) x[i] = unif(&r, -1.5, 1.5);
    for (int i = 0; i < MB * m.out_dim; i++) t[i] = unif(&r, -1, 1);
    for (int i = 0; i < MB; i++) lab[i] = (int32_t)dp_rng_below(&r, (uint64_t)m.out_dim);
    if (relu_margin(&m, x) >= MARGIN) break;
  }
  model_ctx c = {&m, x, lab, t, 0.5f};
  dp_model_forward(&m, x, MB);
  double loss = dp_model_backward(&m, x, lab, t, MB, c.scale, 0, NULL);
  assert_true(fabs(loss * c.scale - model_loss(&c)) <= 1e-6 * fabs(loss));
  for (int i = 0; i < m.n_layers; i++) {
    dp_dense *l = &m.layer[i];
    const char *lk = mse ? "mse" : "ce", *an = dp_act_name(l->act);
    gradcheck(l->w, l->dw, (size_t)l->out * l->in, model_loss, &c, "model/%s/layer%d(%s)/dW", lk, i, an);
    gradcheck(l->b, l->db, (size_t)l->out, model_loss, &c, "model/%s/layer%d(%s)/db", lk, i, an);
  }
  dp_model_free(&m);
}

static void test_model_softmax_ce(void **state) {
  (void)state;
  check_model("[layer]\nunits = 6\nactivation = tanh\n[layer]\nunits = 5\nactivation = sigmoid\n"
              "[layer]\nunits = 4\nactivation = identity\n", 0);
  check_model("[layer]\nunits = 7\nactivation = relu\n[layer]\nunits = 4\nactivation = identity\n", 0);
}

static void test_model_mse(void **state) {
  (void)state;
  check_model("[layer]\nunits = 6\nactivation = tanh\n[layer]\nunits = 5\nactivation = relu\n"
              "[layer]\nunits = 2\nactivation = identity\n", 1);
  check_model("[layer]\nunits = 5\nactivation = sigmoid\n[layer]\nunits = 3\nactivation = tanh\n", 1);
}

/* ---- a small CNN: conv2d (rectangular kernel, stride 2, padding same, batch norm) on the data's NCHW
 * rows, maxpool, a conv2d on NHWC activations, avgpool, flatten (explicit or implicit), dropout ---- */

enum { CB = 4, CC = 2, CH = 7, CW = 6 };

/* model_loss at the CNN's batch. */
static double cnn_loss(void *p) {
  model_ctx *c = p;
  dp_model_forward(c->m, c->x, CB);
  return dp_model_loss(c->m, c->lab, c->t, CB, NULL) * c->scale;
}

/* Smallest gap between a max pool window's two largest inputs: a step of h must not change the winner. */
static float maxpool_margin(const dp_model *m) {
  float gap = INFINITY;
  for (int i = 1; i < m->n_layers; i++) {
    const dp_layer_geom *g = &m->geom[i];
    if (g->type != DP_LAYER_MAXPOOL) continue;
    const dp_pool_geom *p = &g->pool;
    const float *x = m->layer[i - 1].y;
    for (int b = 0; b < CB; b++)
      for (int oy = 0; oy < p->oh; oy++)
        for (int ox = 0; ox < p->ow; ox++)
          for (int c = 0; c < p->c; c++) {
            float top = -INFINITY, second = -INFINITY;
            for (int u = 0; u < p->k; u++)
              for (int v = 0; v < p->k; v++) {
                float e = x[(((size_t)b * p->h + oy * p->stride + u) * p->w + ox * p->stride + v) * p->c + c];
                second = e > top ? top : fmaxf(second, e);
                top = fmaxf(top, e);
              }
            gap = fminf(gap, top - second);
          }
  }
  return gap;
}

/* The dropout layer zeroes some units and scales the rest by 1/(1 - rate) in training, none in evaluation. */
static void check_dropout(dp_model *m, const float *x) {
  int d = m->n_layers - 2;
  assert_int_equal(m->geom[d].type, DP_LAYER_DROPOUT);
  size_t n = CB * m->geom[d].n_out, dropped = 0;
  for (int eval = 0; eval < 2; eval++) {
    dp_model_set_eval(m, eval);
    dp_model_forward(m, x, CB);
    const float *in = m->layer[d - 1].y, *out = m->layer[d].y;
    for (size_t j = 0; j < n; j++) {
      dropped += !eval && out[j] == 0.0f;
      float want = eval ? in[j] : out[j] == 0.0f ? 0.0f : in[j] / (1.0f - m->geom[d].rate);
      assert_true(fabsf(out[j] - want) <= 1e-6f * (1 + fabsf(want)));
    }
  }
  assert_true(dropped > 0 && dropped < n);
  dp_model_set_eval(m, 0);
}

static void check_cnn(const char *layers, int mse) {
  char text[1024];
  snprintf(text, sizeof text, "[data]\npath = unused.h5\nshape = %d,%d,%d\n[model]\nloss = %s\n%s", CC, CH, CW,
           mse ? "mse" : "softmax_cross_entropy", layers);
  dp_config cfg;
  assert_int_equal(dp_config_parse_string(&cfg, text, "cnn.ini", NULL, 0), 0);
  dp_model m;
  assert_int_equal(dp_model_create(&m, cfg.layer, cfg.n_layers, cfg.model.loss, cfg.data.shape, CC * CH * CW, CB), 0);
  float x[CB * CC * CH * CW], t[CB * 8];
  int32_t lab[CB];
  dp_rng r;
  dp_model_set_pass(&m, 7, 3, 100); /* the same dropout mask in every evaluation */
  for (uint64_t seed = 0;; seed++) {
    assert_true(seed < 400);
    dp_model_init(&m, cfg.layer, seed);
    dp_rng_seed(&r, 5, seed);
    for (int i = 0; i < m.n_layers; i++) /* nonzero biases, so they matter too */
      for (int j = 0; m.layer[i].b && j < m.layer[i].out; j++) m.layer[i].b[j] = unif(&r, -0.3, 0.3);
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = unif(&r, -1.5, 1.5);
    for (int i = 0; i < CB * m.out_dim; i++) t[i] = unif(&r, -1, 1);
    for (int i = 0; i < CB; i++) lab[i] = (int32_t)dp_rng_below(&r, (uint64_t)m.out_dim);
    dp_model_forward(&m, x, CB);
    if (maxpool_margin(&m) >= 0.05f) break;
  }
  model_ctx c = {&m, x, lab, t, 0.5f};
  dp_model_forward(&m, x, CB);
  double loss = dp_model_backward(&m, x, lab, t, CB, c.scale, 0, NULL);
  assert_true(fabs(loss * c.scale - cnn_loss(&c)) <= 1e-6 * fabs(loss));
  int tensors = 0;
  for (int i = 0; i < m.n_layers; i++) {
    dp_tensor ts[DP_MAX_TENSORS];
    int n = dp_model_tensors(&m, i, ts);
    assert_int_equal(n > 0, m.geom[i].type == DP_LAYER_DENSE || m.geom[i].type == DP_LAYER_CONV2D);
    for (int k = 0; k < n; k++, tensors++) {
      size_t len = (size_t)ts[k].dims[0] * (size_t)(ts[k].rank > 1 ? ts[k].dims[1] : 1);
      gradcheck(m.params + ts[k].offset, m.grads + ts[k].offset, len, cnn_loss, &c, "cnn/%s/layer%d/%s",
                mse ? "mse" : "ce", i, ts[k].name);
    }
  }
  assert_int_equal(tensors, 7); /* conv (weight, gain, shift), conv (weight, bias), dense (weight, bias) */
  check_dropout(&m, x);
  dp_model_free(&m);
}

#define CNN_CONVS                                                                                           \
  "[layer]\ntype = conv2d\nfilters = 3\nkernel = 3,5\nstride = 2\npadding = same\nnorm = batch\n"           \
  "activation = tanh\n[layer]\ntype = maxpool\nkernel = 2\n[layer]\ntype = conv2d\nfilters = 4\nkernel = 2\n" \
  "padding = 1\nactivation = tanh\n[layer]\ntype = avgpool\nkernel = 2\n"

static void test_cnn(void **state) {
  (void)state;
  const char *flat = CNN_CONVS "[layer]\ntype = flatten\n[layer]\ntype = dropout\nrate = 0.3\n"
                               "[layer]\nunits = 4\nactivation = identity\n";
  const char *implicit = CNN_CONVS "[layer]\ntype = dropout\nrate = 0.3\n[layer]\nunits = 4\nactivation = identity\n";
  check_cnn(flat, 0);
  check_cnn(flat, 1);
  check_cnn(implicit, 0);
  check_cnn(implicit, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_activations),      cmocka_unit_test(test_losses),
      cmocka_unit_test(test_softmax_ce_stable_and_correct), cmocka_unit_test(test_dense),
      cmocka_unit_test(test_model_softmax_ce), cmocka_unit_test(test_model_mse),
      cmocka_unit_test(test_cnn),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
