/* The image-layer kernels (src/conv.c): im2col/col2im, convolution, pooling, dropout masks and the
 * NHWC/NCHW transposes, against direct definitions and central differences.
 *
 * Gradient checks follow tests/test_gradcheck.c: the loss L = Σ r·out is linear in each input of a
 * convolution, so central differences with h = 1e-2 have no truncation error, only float rounding
 * of the outputs (~6e-8·|z| each, over 2h): |num - ana| <= 2e-2·max(|num|,|ana|) + 2e-4 is far
 * above that and far below any real mistake. Every check also requires max|ana| > 1e-2, so an
 * all-zero gradient cannot pass. Max pooling's inputs are spaced 0.05 apart (> 2h), so no step
 * changes a window's winner. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/conv.h"
#include "dptrain/error.h"
#include "dptrain/rng.h"

#define H 1e-2f
#define RTOL 2e-2
#define ATOL 2e-4
#define NONZERO 1e-2

typedef double (*loss_fn)(void *ctx);

static float unif(dp_rng *r, double lo, double hi) { return (float)(lo + (hi - lo) * dp_rng_uniform(r)); }

static void fill(dp_rng *r, float *p, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) p[i] = unif(r, lo, hi);
}

static double dot(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}

/* Checks ana (n) against central differences of f over p (restored), and that it is not all zero. */
static void gradcheck(float *p, const float *ana, size_t n, loss_fn f, void *ctx, const char *fmt, ...) {
  char what[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  double maxabs = 0;
  for (size_t i = 0; i < n; i++) {
    float orig = p[i], xp = orig + H, xm = orig - H;
    p[i] = xp;
    double lp = f(ctx);
    p[i] = xm;
    double num = (lp - f(ctx)) / ((double)xp - (double)xm), a = ana[i];
    p[i] = orig;
    maxabs = fmax(maxabs, fabs(a));
    if (!(fabs(num - a) <= RTOL * fmax(fabs(num), fabs(a)) + ATOL))
      fail_msg("%s[%zu]: analytic %.6g vs numerical %.6g", what, i, a, num);
  }
  if (!(maxabs > NONZERO))
    fail_msg("%s: gradient is trivially zero (max %g)", what, maxabs);
}

/* ---- geometry ---- */

static void expect_error(int rc, const char *want) {
  assert_int_equal(rc, DP_EINVAL);
  const char *msg = dp_errmsg(rc);
  if (!strstr(msg, want))
    fail_msg("message \"%s\" lacks \"%s\"", msg, want);
}

static void test_geometry(void **state) {
  (void)state;
  dp_img a = dp_img_nchw(3, 4, 5), b = dp_img_nhwc(3, 4, 5);
  assert_true(a.sb == 60 && a.sc == 20 && a.sy == 5 && a.sx == 1);
  assert_true(b.sb == 60 && b.sc == 1 && b.sy == 15 && b.sx == 3);
  dp_conv_geom g;
  assert_int_equal(dp_conv_geom_init(&g, 2, 7, 6, 4, 3, 5, 1, -1), 0); /* 'same' keeps the size */
  assert_true(g.oh == 7 && g.ow == 6 && g.pad_h == 1 && g.pad_w == 2);
  assert_int_equal(dp_conv_geom_init(&g, 2, 7, 6, 4, 3, 2, 2, 1), 0);
  assert_true(g.oh == 4 && g.ow == 4 && g.pad_h == 1 && g.pad_w == 1 && g.f == 4);
  assert_int_equal(dp_conv_col_floats(&g, 3), (size_t)3 * 16 * 2 * 3 * 2);
  assert_int_equal(dp_conv_geom_init(&g, 1, 28, 28, 8, 5, 5, 1, 0), 0);
  assert_true(g.oh == 24 && g.ow == 24);
  assert_int_equal(dp_conv_geom_init(&g, 1, 3, 3, 1, 5, 5, 1, 1), 0); /* fits once padded */
  assert_true(g.oh == 1 && g.ow == 1);
  expect_error(dp_conv_geom_init(&g, 1, 3, 3, 1, 5, 5, 1, 0),
               "conv2d: kernel 5x5 is larger than its input 3x3 (padding 0)");
  expect_error(dp_conv_geom_init(&g, 1, 8, 3, 1, 2, 5, 1, 0), "kernel 2x5 is larger than its input 8x3");
  expect_error(dp_conv_geom_init(&g, 1, 8, 8, 1, 3, 2, 1, -1), "'same' needs an odd kernel, not 3x2");
  expect_error(dp_conv_geom_init(&g, 1, 8, 8, 0, 3, 3, 1, 0), "at least 1");
  expect_error(dp_conv_geom_init(&g, 1, 8, 8, 1, 3, 3, 0, 0), "stride 0");
  expect_error(dp_conv_geom_init(&g, 1, 8, 8, 1, 3, 3, 1, INT32_MAX), "too large");
  dp_pool_geom p;
  assert_int_equal(dp_pool_geom_init(&p, 3, 7, 6, 3, 2, 1), 0);
  assert_true(p.oh == 3 && p.ow == 2 && p.max == 1);
  assert_int_equal(dp_pool_geom_init(&p, 3, 2, 2, 2, 2, 0), 0);
  assert_true(p.oh == 1 && p.ow == 1 && p.max == 0);
  expect_error(dp_pool_geom_init(&p, 3, 2, 5, 3, 3, 1), "maxpool: window 3x3 is larger than its input 2x5");
  expect_error(dp_pool_geom_init(&p, 3, 5, 2, 3, 3, 0), "avgpool: window 3x3 is larger than its input 5x2");
}

/* ---- convolution ---- */

typedef struct {
  int c, h, w, f, kh, kw, stride, pad;
} conv_case;

/* stride 1, 2 and 3, padding 0, 1 and 'same', square and rectangular kernels, c and f above 1, a
 * kernel that fits only once padded, and padding as large as the kernel (windows of zeros only) */
static const conv_case CASES[] = {
    {1, 5, 6, 1, 3, 3, 1, 0}, {2, 5, 6, 3, 3, 3, 1, 0},  {2, 6, 5, 3, 3, 2, 2, 1}, {3, 5, 5, 2, 3, 3, 1, -1},
    {2, 7, 6, 2, 2, 3, 2, 0}, {2, 6, 7, 2, 3, 5, 2, -1}, {1, 6, 6, 2, 5, 5, 1, 2}, {3, 4, 4, 2, 1, 1, 1, 0},
    {2, 3, 3, 2, 5, 5, 1, 1}, {2, 4, 5, 2, 2, 2, 1, 2}, {2, 7, 8, 2, 3, 3, 3, 1},
};
enum { NB = 2 };

static dp_img layout(const conv_case *k, int nhwc) {
  return nhwc ? dp_img_nhwc(k->c, k->h, k->w) : dp_img_nchw(k->c, k->h, k->w);
}

/* The definition: z[b, oy, ox, o] = b[o] + Σ_{c,i,j} x[b, c, oy·s+i-p, ox·s+j-p] · w[o, c, i, j]. */
static void naive_conv(const dp_conv_geom *g, const float *x, dp_img in, int B, const float *w, const float *bias,
                       double *z) {
  for (int b = 0; b < B; b++)
    for (int oy = 0; oy < g->oh; oy++)
      for (int ox = 0; ox < g->ow; ox++)
        for (int o = 0; o < g->f; o++) {
          double s = bias ? bias[o] : 0;
          for (int c = 0; c < g->c; c++)
            for (int i = 0; i < g->kh; i++)
              for (int j = 0; j < g->kw; j++) {
                int y = oy * g->stride + i - g->pad_h, xx = ox * g->stride + j - g->pad_w;
                if (y < 0 || y >= g->h || xx < 0 || xx >= g->w)
                  continue;
                s += (double)x[b * in.sb + c * in.sc + y * in.sy + xx * in.sx] *
                     w[((o * g->c + c) * g->kh + i) * g->kw + j];
              }
          z[((size_t)(b * g->oh + oy) * g->ow + ox) * g->f + o] = s;
        }
}

typedef struct {
  dp_conv_geom g;
  dp_img in;
  float *x, *w, *b, *z, *col, *r;
} conv_ctx;

static double conv_loss(void *p) {
  conv_ctx *c = p;
  dp_conv_forward(&c->g, c->x, c->in, NB, c->w, c->b, c->z, c->col);
  return dot(c->z, c->r, (size_t)NB * c->g.oh * c->g.ow * c->g.f);
}

static void check_conv(const conv_case *k, int nhwc) {
  conv_ctx c;
  assert_int_equal(dp_conv_geom_init(&c.g, k->c, k->h, k->w, k->f, k->kh, k->kw, k->stride, k->pad), 0);
  c.in = layout(k, nhwc);
  const size_t nx = (size_t)NB * k->c * k->h * k->w, nw = (size_t)k->f * k->c * k->kh * k->kw,
               nz = (size_t)NB * c.g.oh * c.g.ow * k->f, ncol = dp_conv_col_floats(&c.g, NB);
  float *buf = malloc(sizeof(float) * (3 * nx + 3 * nw + 3 * k->f + 2 * nz + ncol));
  double *zref = malloc(sizeof(double) * nz);
  assert_non_null(buf);
  assert_non_null(zref);
  c.x = buf, c.w = c.x + nx, c.b = c.w + nw, c.z = c.b + k->f, c.r = c.z + nz, c.col = c.r + nz;
  float *dx = c.col + ncol, *dw = dx + nx, *db = dw + nw, *dw2 = db + k->f, *db2 = dw2 + nw, *dx2 = db2 + k->f;
  dp_rng r;
  dp_rng_seed(&r, 19, (uint64_t)(k - CASES) * 2 + (uint64_t)nhwc);
  fill(&r, c.x, nx, -1, 1);
  fill(&r, c.w, nw, -1, 1);
  fill(&r, c.b, (size_t)k->f, -1, 1);
  fill(&r, c.r, nz, -1, 1);
  const char *lay = nhwc ? "nhwc" : "nchw";
  const int id = (int)(k - CASES);

  dp_conv_forward(&c.g, c.x, c.in, NB, c.w, c.b, c.z, c.col);
  naive_conv(&c.g, c.x, c.in, NB, c.w, c.b, zref);
  for (size_t i = 0; i < nz; i++)
    if (!(fabs(c.z[i] - zref[i]) <= 1e-5 * (1 + fabs(zref[i]))))
      fail_msg("case %d %s: z[%zu] = %.7g, direct %.7g", id, lay, i, c.z[i], zref[i]);

  fill(&r, dx, nx, 5, 6); /* overwritten, not added to */
  dp_conv_backward(&c.g, c.x, c.in, NB, c.w, c.r, dw, db, dx, c.col, 0);
  gradcheck(c.x, dx, nx, conv_loss, &c, "case %d %s dx", id, lay);
  gradcheck(c.w, dw, nw, conv_loss, &c, "case %d %s dw", id, lay);
  gradcheck(c.b, db, (size_t)k->f, conv_loss, &c, "case %d %s db", id, lay);

  /* accumulate = 1 adds to dw and db; dx is still overwritten */
  for (size_t i = 0; i < nw; i++) dw2[i] = 0.5f + (float)i;
  for (int i = 0; i < k->f; i++) db2[i] = -0.25f * (float)i;
  fill(&r, dx2, nx, 5, 6);
  dp_conv_backward(&c.g, c.x, c.in, NB, c.w, c.r, dw2, db2, dx2, c.col, 1);
  for (size_t i = 0; i < nw; i++) assert_true(fabsf(dw2[i] - (0.5f + (float)i + dw[i])) <= 1e-5f * (1 + fabsf(dw2[i])));
  for (int i = 0; i < k->f; i++) assert_true(fabsf(db2[i] - (-0.25f * (float)i + db[i])) <= 1e-5f * (1 + fabsf(db[i])));
  assert_memory_equal(dx, dx2, sizeof(float) * nx);
  /* without db and dx */
  dp_conv_backward(&c.g, c.x, c.in, NB, c.w, c.r, dw2, NULL, NULL, c.col, 0);
  assert_memory_equal(dw, dw2, sizeof(float) * nw);
  free(zref);
  free(buf);
}

static void test_conv(void **state) {
  (void)state;
  for (size_t k = 0; k < sizeof CASES / sizeof *CASES; k++)
    for (int nhwc = 0; nhwc <= 1; nhwc++) check_conv(&CASES[k], nhwc);
}

/* Layouts 0 NCHW and 1 NHWC, then ones that are neither, for the strided paths: (B, H, C, W),
 * (B, W, C, H) and (B, W, H, C). */
static dp_img any_layout(const conv_case *k, int lay) {
  const int64_t c = k->c, h = k->h, w = k->w;
  switch (lay) {
  case 2: return (dp_img){c * h * w, w, c * w, 1};
  case 3: return (dp_img){c * h * w, h, 1, c * h};
  case 4: return (dp_img){c * h * w, 1, c, h * c};
  default: return layout(k, lay);
  }
}

/* im2col against its definition and col2im as its adjoint: <col2im(y), x> = <y, im2col(x)>. */
static void test_im2col(void **state) {
  (void)state;
  for (size_t k = 0; k < sizeof CASES / sizeof *CASES; k++)
    for (int lay = 0; lay < 5; lay++) {
      const conv_case *q = &CASES[k];
      dp_conv_geom g;
      assert_int_equal(dp_conv_geom_init(&g, q->c, q->h, q->w, q->f, q->kh, q->kw, q->stride, q->pad), 0);
      dp_img in = any_layout(q, lay);
      const size_t nx = (size_t)NB * q->c * q->h * q->w, ncol = dp_conv_col_floats(&g, NB);
      const int K = q->c * q->kh * q->kw;
      float *x = malloc(sizeof(float) * (2 * nx + 2 * ncol)), *dx = x + nx, *col = dx + nx, *y = col + ncol;
      assert_non_null(x);
      dp_rng r;
      dp_rng_seed(&r, 20, k * 5 + (size_t)lay);
      fill(&r, x, nx, -1, 1);
      fill(&r, y, ncol, -1, 1);
      fill(&r, col, ncol, 7, 8); /* every entry is written, zeros included */
      dp_im2col(&g, x, in, NB, col);
      for (int b = 0; b < NB; b++)
        for (int oy = 0; oy < g.oh; oy++)
          for (int ox = 0; ox < g.ow; ox++)
            for (int c = 0; c < q->c; c++)
              for (int i = 0; i < q->kh; i++)
                for (int j = 0; j < q->kw; j++) {
                  int yy = oy * g.stride + i - g.pad_h, xx = ox * g.stride + j - g.pad_w;
                  float want = yy < 0 || yy >= q->h || xx < 0 || xx >= q->w
                                   ? 0.0f
                                   : x[b * in.sb + c * in.sc + yy * in.sy + xx * in.sx];
                  size_t at = ((size_t)(b * g.oh + oy) * g.ow + ox) * K + (size_t)(c * q->kh + i) * q->kw + j;
                  if (col[at] != want)
                    fail_msg("case %zu layout %d: col[%zu] = %g, want %g", k, lay, at, col[at], want);
                }
      fill(&r, dx, nx, 7, 8);
      dp_col2im(&g, y, NB, dx, in);
      double lhs = dot(dx, x, nx), rhs = dot(y, col, ncol);
      if (!(fabs(lhs - rhs) <= 1e-5 * (1 + fabs(rhs))))
        fail_msg("case %zu layout %d: <col2im(y), x> = %.8g, <y, im2col(x)> = %.8g", k, lay, lhs, rhs);
      free(x);
    }
}

/* No rows: no output, and zero (not stale) gradients unless accumulating. */
static void test_conv_empty(void **state) {
  (void)state;
  dp_conv_geom g;
  assert_int_equal(dp_conv_geom_init(&g, 2, 4, 4, 3, 3, 3, 1, -1), 0);
  float w[3 * 18], dw[3 * 18], db[3], z[1] = {42}, col[1];
  for (int i = 0; i < 54; i++) w[i] = dw[i] = 1;
  db[0] = db[1] = db[2] = 1;
  dp_conv_forward(&g, NULL, dp_img_nhwc(2, 4, 4), 0, w, NULL, z, col);
  assert_true(z[0] == 42);
  dp_conv_backward(&g, NULL, dp_img_nhwc(2, 4, 4), 0, w, NULL, dw, db, NULL, col, 1);
  assert_true(dw[0] == 1 && db[2] == 1);
  dp_conv_backward(&g, NULL, dp_img_nhwc(2, 4, 4), 0, w, NULL, dw, db, NULL, col, 0);
  for (int i = 0; i < 54; i++) assert_true(dw[i] == 0);
  assert_true(db[0] == 0 && db[1] == 0 && db[2] == 0);
}

/* ---- pooling ---- */

typedef struct {
  dp_pool_geom g;
  float *x, *y, *r;
  int32_t *arg;
} pool_ctx;

enum { PB = 2 };

static double pool_loss(void *p) {
  pool_ctx *c = p;
  dp_pool_forward(&c->g, c->x, PB, c->y, c->arg);
  return dot(c->y, c->r, (size_t)PB * c->g.oh * c->g.ow * c->g.c);
}

static void check_pool(int c, int h, int w, int k, int s, int max) {
  pool_ctx p;
  assert_int_equal(dp_pool_geom_init(&p.g, c, h, w, k, s, max), 0);
  const size_t nx = (size_t)PB * h * w * c, ny = (size_t)PB * p.g.oh * p.g.ow * c;
  float *buf = malloc(sizeof(float) * (2 * nx + 2 * ny));
  p.arg = malloc(sizeof(int32_t) * ny);
  assert_non_null(buf);
  assert_non_null(p.arg);
  p.x = buf, p.y = p.x + nx, p.r = p.y + ny;
  float *dx = p.r + ny;
  dp_rng r;
  dp_rng_seed(&r, 21, (uint64_t)(k * 10 + s) * 2 + (uint64_t)max);
  for (size_t i = 0; i < nx; i++) p.x[i] = 0.05f * (float)i - 0.02f * (float)nx; /* distinct, then shuffled */
  for (size_t i = nx - 1; i > 0; i--) {
    size_t j = (size_t)dp_rng_below(&r, i + 1);
    float t = p.x[i];
    p.x[i] = p.x[j], p.x[j] = t;
  }
  fill(&r, p.r, ny, -1, 1);
  dp_pool_forward(&p.g, p.x, PB, p.y, p.arg);
  size_t o = 0;
  for (int b = 0; b < PB; b++) /* against the definition */
    for (int oy = 0; oy < p.g.oh; oy++)
      for (int ox = 0; ox < p.g.ow; ox++)
        for (int ci = 0; ci < c; ci++, o++) {
          double acc = max ? -INFINITY : 0;
          for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
              double v = p.x[(((size_t)b * h + oy * s + i) * w + ox * s + j) * c + ci];
              acc = max ? fmax(acc, v) : acc + v / (k * k);
            }
          assert_true(fabs(p.y[o] - acc) <= 1e-5 * (1 + fabs(acc)));
          if (max)
            assert_true(p.x[p.arg[o]] == p.y[o]);
        }
  fill(&r, dx, nx, 3, 4);
  dp_pool_backward(&p.g, p.r, PB, p.arg, dx);
  gradcheck(p.x, dx, nx, pool_loss, &p, "%s k%d s%d", max ? "maxpool" : "avgpool", k, s);
  free(p.arg);
  free(buf);
}

static void test_pool(void **state) {
  (void)state;
  for (int max = 0; max <= 1; max++) {
    check_pool(3, 6, 8, 2, 2, max);
    check_pool(2, 7, 7, 3, 2, max); /* overlapping windows */
    check_pool(2, 5, 7, 2, 2, max); /* odd sizes leave a border out */
  }
  /* A NaN anywhere in a max window wins (the first one, for the gradient). */
  dp_pool_geom gm;
  assert_int_equal(dp_pool_geom_init(&gm, 1, 2, 2, 2, 2, 1), 0);
  for (int at = 0; at < 4; at++) {
    float xn[4] = {1, 5, 2, 3}, yn;
    int32_t an;
    xn[at] = NAN;
    dp_pool_forward(&gm, xn, 1, &yn, &an);
    assert_true(isnan(yn) && an == at);
  }
  /* Average pooling's gradient ignores arg entirely. */
  dp_pool_geom g;
  assert_int_equal(dp_pool_geom_init(&g, 1, 2, 2, 2, 2, 0), 0);
  float x[4] = {1, 2, 3, 6}, y, dy = 2, dx[4];
  dp_pool_forward(&g, x, 1, &y, NULL);
  assert_true(y == 3);
  dp_pool_backward(&g, &dy, 1, NULL, dx);
  for (int i = 0; i < 4; i++) assert_true(dx[i] == 0.5f);
}

/* ---- dropout ---- */

typedef struct {
  float *x;
  const float *m, *r;
  size_t n;
} drop_ctx;

static double drop_loss(void *p) {
  drop_ctx *c = p;
  double s = 0;
  for (size_t i = 0; i < c->n; i++) s += (double)c->r[i] * (c->x[i] * c->m[i]);
  return s;
}

static void test_dropout(void **state) {
  (void)state;
  enum { R = 400, U = 250, N = R * U }; /* 1e5 draws */
  float *m = malloc(sizeof(float) * N * 2), *m2 = m + N;
  assert_non_null(m);
  const float rates[] = {0.0f, 0.1f, 0.5f, 0.9f};
  for (size_t k = 0; k < sizeof rates / sizeof *rates; k++) {
    float rate = rates[k], keep = 1.0f / (1.0f - rate);
    dp_dropout_mask(7, 123, 2, 1000, R, U, rate, m);
    size_t kept = 0;
    for (int i = 0; i < N; i++) {
      assert_true(m[i] == 0.0f || m[i] == keep);
      kept += m[i] != 0.0f;
    }
    double frac = (double)kept / N;
    if (!(fabs(frac - (1.0 - rate)) < 0.01))
      fail_msg("rate %g: kept %.4f", rate, frac);
  }
  /* A row's mask depends on its global index only: one call = two calls split anywhere. */
  enum { SR = 9, SU = 37 };
  float one[SR * SU], two[SR * SU];
  dp_dropout_mask(11, 5, 1, 0, SR, SU, 0.5f, one);
  for (int s = 0; s <= SR; s++) {
    dp_dropout_mask(11, 5, 1, 0, s, SU, 0.5f, two);
    dp_dropout_mask(11, 5, 1, s, SR - s, SU, 0.5f, two + s * SU);
    assert_memory_equal(one, two, sizeof one);
  }
  /* Another step, layer, seed or row gives another mask. */
  dp_dropout_mask(7, 123, 2, 1000, R, U, 0.5f, m);
  const struct {
    uint64_t seed;
    int64_t step;
    int layer;
    int64_t row0;
  } other[] = {{7, 124, 2, 1000}, {7, 123, 3, 1000}, {8, 123, 2, 1000}, {7, 123, 2, 1001}};
  for (size_t k = 0; k < sizeof other / sizeof *other; k++) {
    dp_dropout_mask(other[k].seed, other[k].step, other[k].layer, other[k].row0, R, U, 0.5f, m2);
    size_t same = 0;
    for (int i = 0; i < N; i++) same += m[i] == m2[i];
    if (!(fabs((double)same / N - 0.5) < 0.01))
      fail_msg("variant %zu: %.4f of the mask agrees (independent masks agree on half)", k, (double)same / N);
  }
  /* The gradient of x·mask with the mask held fixed. */
  enum { DN = 64 };
  float x[DN], rr[DN], dx[DN], dm[DN];
  dp_rng r;
  dp_rng_seed(&r, 22, 0);
  fill(&r, x, DN, -1, 1);
  fill(&r, rr, DN, -1, 1);
  dp_dropout_mask(3, 0, 0, 0, 1, DN, 0.3f, dm);
  for (int i = 0; i < DN; i++) dx[i] = rr[i] * dm[i];
  drop_ctx c = {x, dm, rr, DN};
  gradcheck(x, dx, DN, drop_loss, &c, "dropout");
  free(m);
}

/* ---- flatten ---- */

typedef struct {
  float *x;
  const float *r;
  float *y;
} flat_ctx;

enum { TB = 2, TC = 3, TH = 4, TW = 5 };

static double flat_loss(void *p) {
  flat_ctx *c = p;
  dp_nhwc_to_nchw(c->x, TB, TC, TH, TW, c->y);
  return dot(c->y, c->r, TB * TC * TH * TW);
}

static void test_transpose(void **state) {
  (void)state;
  enum { B = TB, C = TC, Hh = TH, W = TW, N = B * C * Hh * W };
  float x[N], y[N], z[N];
  for (int i = 0; i < N; i++) x[i] = (float)i;
  dp_nhwc_to_nchw(x, B, C, Hh, W, y);
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++)
      for (int h = 0; h < Hh; h++)
        for (int w = 0; w < W; w++)
          assert_true(y[((b * C + c) * Hh + h) * W + w] == x[((b * Hh + h) * W + w) * C + c]);
  dp_nchw_to_nhwc(y, B, C, Hh, W, z);
  assert_memory_equal(x, z, sizeof x);
  dp_nchw_to_nhwc(x, B, C, Hh, W, y);
  dp_nhwc_to_nchw(y, B, C, Hh, W, z);
  assert_memory_equal(x, z, sizeof x);
  /* flatten's backward is the inverse transpose: the gradient of Σ r·flatten(x) */
  dp_rng r;
  dp_rng_seed(&r, 23, 0);
  float rr[N], dx[N];
  fill(&r, x, N, -1, 1);
  fill(&r, rr, N, -1, 1);
  dp_nchw_to_nhwc(rr, B, C, Hh, W, dx);
  flat_ctx c = {x, rr, y};
  gradcheck(x, dx, N, flat_loss, &c, "flatten");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_geometry), cmocka_unit_test(test_im2col), cmocka_unit_test(test_conv),
      cmocka_unit_test(test_conv_empty), cmocka_unit_test(test_pool), cmocka_unit_test(test_dropout),
      cmocka_unit_test(test_transpose),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
