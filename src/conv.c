/* Image-layer kernels: im2col/col2im, convolution through one sgemm, pooling, dropout masks, layout
 * transposes. See include/dptrain/conv.h for the layouts; nothing here allocates. */
#include "dptrain/conv.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "dptrain/error.h"

dp_img dp_img_nchw(int c, int h, int w) {
  return (dp_img){(int64_t)c * h * w, (int64_t)h * w, w, 1};
}

dp_img dp_img_nhwc(int c, int h, int w) {
  return (dp_img){(int64_t)c * h * w, 1, (int64_t)w * c, c};
}

int dp_conv_geom_init(dp_conv_geom *g, int c, int h, int w, int f, int kh, int kw, int stride, int pad) {
  if (c < 1 || h < 1 || w < 1 || f < 1 || kh < 1 || kw < 1 || stride < 1)
    return dp_fail(DP_EINVAL, "conv2d: input %dx%dx%d, %d filters of %dx%d, stride %d: every size must be at least 1",
                   c, h, w, f, kh, kw, stride);
  if (pad < 0 && (kh % 2 == 0 || kw % 2 == 0))
    return dp_fail(DP_EINVAL, "conv2d: padding 'same' needs an odd kernel, not %dx%d", kh, kw);
  int ph = pad < 0 ? (kh - 1) / 2 : pad, pw = pad < 0 ? (kw - 1) / 2 : pad;
  const int64_t hp = (int64_t)h + 2 * (int64_t)ph, wp = (int64_t)w + 2 * (int64_t)pw;
  if (kh > hp || kw > wp) {
    if (pad < 0)
      return dp_fail(DP_EINVAL, "conv2d: kernel %dx%d is larger than its input %dx%d (padding same)", kh, kw, h, w);
    return dp_fail(DP_EINVAL, "conv2d: kernel %dx%d is larger than its input %dx%d (padding %d)", kh, kw, h, w, pad);
  }
  /* BLAS and the window arithmetic index in int: keep one image's sizes and coordinates in range. */
  const int64_t oh = (hp - kh) / stride + 1, ow = (wp - kw) / stride + 1;
  if (hp + stride > INT32_MAX || wp + stride > INT32_MAX || oh * ow > INT32_MAX ||
      (int64_t)c * kh * kw > INT32_MAX || (int64_t)c * h * w > INT32_MAX)
    return dp_fail(DP_EINVAL, "conv2d: input %dx%dx%d with a %dx%d kernel and padding %d is too large", c, h, w, kh,
                   kw, pad);
  *g = (dp_conv_geom){.c = c, .h = h, .w = w, .f = f, .oh = (int)oh, .ow = (int)ow, .kh = kh, .kw = kw,
                      .stride = stride, .pad_h = ph, .pad_w = pw};
  return 0;
}

size_t dp_conv_col_floats(const dp_conv_geom *g, int B) {
  return (size_t)B * g->oh * g->ow * ((size_t)g->c * g->kh * g->kw);
}

/* The part of one output pixel's window that lies inside the image: kernel rows [i0, i1) and
 * columns [j0, j1); y0, x0 the image coordinates of kernel element (0, 0). */
typedef struct {
  int y0, x0, i0, i1, j0, j1;
} window;

static window window_at(const dp_conv_geom *g, int oy, int ox) {
  window v = {oy * g->stride - g->pad_h, ox * g->stride - g->pad_w, 0, g->kh, 0, g->kw};
  if (v.y0 < 0) v.i0 = -v.y0;
  if (v.y0 + g->kh > g->h) v.i1 = g->h - v.y0;
  if (v.x0 < 0) v.j0 = -v.x0;
  if (v.x0 + g->kw > g->w) v.j1 = g->w - v.x0;
  return v;
}

static int window_whole(const dp_conv_geom *g, const window *v) {
  return v->i0 == 0 && v->i1 == g->kh && v->j0 == 0 && v->j1 == g->kw;
}

/* With padding of at least the kernel size a window can lie wholly in the zeros. */
static int window_empty(const window *v) { return v->i0 >= v->i1 || v->j0 >= v->j1; }

/* One im2col row (c, i, j) from the image at xb. Channels-last input (sc == 1, c > 1) goes pixel by
 * pixel, reading each pixel's c contiguous floats once; otherwise channel by channel, where sx == 1
 * (NCHW) makes every kernel row one contiguous run of the image. */
static void gather_row(const dp_conv_geom *g, const float *xb, dp_img in, const window *v, float *row) {
  const int kk = g->kh * g->kw;
  if (window_empty(v))
    return;
  if (in.sc == 1 && g->c > 1) {
    for (int i = v->i0; i < v->i1; i++)
      for (int j = v->j0; j < v->j1; j++) {
        const float *src = xb + (v->y0 + i) * in.sy + (v->x0 + j) * in.sx;
        float *dst = row + i * g->kw + j;
        for (int ci = 0; ci < g->c; ci++)
          dst[ci * kk] = src[ci];
      }
    return;
  }
  const int n = v->j1 - v->j0;
  for (int ci = 0; ci < g->c; ci++)
    for (int i = v->i0; i < v->i1; i++) {
      const float *src = xb + ci * in.sc + (v->y0 + i) * in.sy + (v->x0 + v->j0) * in.sx;
      float *dst = row + (ci * g->kh + i) * g->kw + v->j0;
      if (in.sx == 1)
        for (int j = 0; j < n; j++) dst[j] = src[j];
      else
        for (int j = 0; j < n; j++) dst[j] = src[j * in.sx];
    }
}

/* The adjoint of gather_row: adds row into the image at dxb. */
static void scatter_row(const dp_conv_geom *g, const float *row, const window *v, float *dxb, dp_img in) {
  const int kk = g->kh * g->kw;
  if (window_empty(v))
    return;
  if (in.sc == 1 && g->c > 1) {
    for (int i = v->i0; i < v->i1; i++)
      for (int j = v->j0; j < v->j1; j++) {
        float *dst = dxb + (v->y0 + i) * in.sy + (v->x0 + j) * in.sx;
        const float *src = row + i * g->kw + j;
        for (int ci = 0; ci < g->c; ci++)
          dst[ci] += src[ci * kk];
      }
    return;
  }
  const int n = v->j1 - v->j0;
  for (int ci = 0; ci < g->c; ci++)
    for (int i = v->i0; i < v->i1; i++) {
      float *dst = dxb + ci * in.sc + (v->y0 + i) * in.sy + (v->x0 + v->j0) * in.sx;
      const float *src = row + (ci * g->kh + i) * g->kw + v->j0;
      if (in.sx == 1)
        for (int j = 0; j < n; j++) dst[j] += src[j];
      else
        for (int j = 0; j < n; j++) dst[j * in.sx] += src[j];
    }
}

void dp_im2col(const dp_conv_geom *g, const float *x, dp_img in, int B, float *col) {
  const size_t K = (size_t)g->c * g->kh * g->kw;
  float *row = col;
  for (int b = 0; b < B; b++) {
    const float *xb = x + b * in.sb;
    for (int oy = 0; oy < g->oh; oy++)
      for (int ox = 0; ox < g->ow; ox++, row += K) {
        window v = window_at(g, oy, ox);
        if (!window_whole(g, &v)) /* the overhang reads zeros */
          memset(row, 0, sizeof(float) * K);
        gather_row(g, xb, in, &v, row);
      }
  }
}

/* Zeroes B images laid out as in: one memset when they are packed NCHW or NHWC. */
static void zero_images(const dp_conv_geom *g, float *x, dp_img in, int B) {
  dp_img a = dp_img_nchw(g->c, g->h, g->w), b = dp_img_nhwc(g->c, g->h, g->w);
  if (!memcmp(&in, &a, sizeof in) || !memcmp(&in, &b, sizeof in)) {
    memset(x, 0, sizeof(float) * (size_t)B * a.sb);
    return;
  }
  for (int n = 0; n < B; n++)
    for (int ci = 0; ci < g->c; ci++)
      for (int y = 0; y < g->h; y++)
        for (int xx = 0; xx < g->w; xx++)
          x[n * in.sb + ci * in.sc + y * in.sy + xx * in.sx] = 0;
}

void dp_col2im(const dp_conv_geom *g, const float *col, int B, float *dx, dp_img in) {
  const size_t K = (size_t)g->c * g->kh * g->kw;
  zero_images(g, dx, in, B);
  const float *row = col;
  for (int b = 0; b < B; b++) {
    float *dxb = dx + b * in.sb;
    for (int oy = 0; oy < g->oh; oy++)
      for (int ox = 0; ox < g->ow; ox++, row += K) {
        window v = window_at(g, oy, ox);
        scatter_row(g, row, &v, dxb, in);
      }
  }
}

void dp_conv_forward(const dp_conv_geom *g, const float *x, dp_img in, int B, const float *w, const float *b,
                     float *z, float *col) {
  const int M = B * g->oh * g->ow, K = g->c * g->kh * g->kw, F = g->f;
  if (M == 0)
    return;
  dp_im2col(g, x, in, B, col);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, F, K, 1.0f, col, K, w, K, 0.0f, z, F);
  if (b)
    for (int r = 0; r < M; r++)
      for (int o = 0; o < F; o++) z[(size_t)r * F + o] += b[o];
}

void dp_conv_backward(const dp_conv_geom *g, const float *x, dp_img in, int B, const float *w, const float *dz,
                      float *dw, float *db, float *dx, float *col, int accumulate) {
  const int M = B * g->oh * g->ow, K = g->c * g->kh * g->kw, F = g->f;
  if (db && !accumulate)
    memset(db, 0, sizeof(float) * (size_t)F);
  if (M == 0) { /* no rows: zero gradients (BLAS need not scale by beta when the inner size is 0) */
    if (!accumulate)
      memset(dw, 0, sizeof(float) * (size_t)F * K);
    if (dx)
      zero_images(g, dx, in, B);
    return;
  }
  dp_im2col(g, x, in, B, col);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, F, K, M, 1.0f, dz, F, col, K, accumulate ? 1.0f : 0.0f, dw,
              K);
  if (db)
    for (int r = 0; r < M; r++)
      for (int o = 0; o < F; o++) db[o] += dz[(size_t)r * F + o];
  if (!dx)
    return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, F, 1.0f, dz, F, w, K, 0.0f, col, K);
  dp_col2im(g, col, B, dx, in);
}

int dp_pool_geom_init(dp_pool_geom *g, int c, int h, int w, int k, int stride, int max) {
  const char *name = max ? "maxpool" : "avgpool";
  if (c < 1 || h < 1 || w < 1 || k < 1 || stride < 1)
    return dp_fail(DP_EINVAL, "%s: input %dx%dx%d, window %d, stride %d: every size must be at least 1", name, c, h,
                   w, k, stride);
  if (k > h || k > w)
    return dp_fail(DP_EINVAL, "%s: window %dx%d is larger than its input %dx%d (nothing would be left)", name, k, k,
                   h, w);
  *g = (dp_pool_geom){.c = c, .h = h, .w = w, .k = k, .stride = stride, .oh = (h - k) / stride + 1,
                      .ow = (w - k) / stride + 1, .max = max ? 1 : 0};
  return 0;
}

/* Offsets (in floats) of image b's first pixel and of output pixel (oy, ox)'s window corner. */
static size_t pool_corner(const dp_pool_geom *g, int b, int oy, int ox) {
  return (((size_t)b * g->h + (size_t)oy * g->stride) * g->w + (size_t)ox * g->stride) * g->c;
}

/* Ties go to the first pixel of the window in (i, j) order. A NaN wins, like PyTorch's, so that a
 * diverging input reaches the loss instead of vanishing here. */
static void max_window(const dp_pool_geom *g, const float *x, size_t base, float *y, int32_t *arg) {
  const int c = g->c;
  for (int ci = 0; ci < c; ci++) y[ci] = x[base + ci], arg[ci] = (int32_t)(base + ci);
  for (int i = 0; i < g->k; i++)
    for (int j = 0; j < g->k; j++) {
      size_t p = base + ((size_t)i * g->w + j) * c;
      for (int ci = 0; ci < c; ci++)
        if (x[p + ci] > y[ci] || isnan(x[p + ci]))
          y[ci] = x[p + ci], arg[ci] = (int32_t)(p + ci);
    }
}

static void avg_window(const dp_pool_geom *g, const float *x, size_t base, float *y) {
  const int c = g->c;
  const float s = 1.0f / (float)(g->k * g->k);
  memset(y, 0, sizeof(float) * (size_t)c);
  for (int i = 0; i < g->k; i++)
    for (int j = 0; j < g->k; j++) {
      const float *p = x + base + ((size_t)i * g->w + j) * c;
      for (int ci = 0; ci < c; ci++) y[ci] += p[ci];
    }
  for (int ci = 0; ci < c; ci++) y[ci] *= s;
}

void dp_pool_forward(const dp_pool_geom *g, const float *x, int B, float *y, int32_t *arg) {
  size_t o = 0;
  for (int b = 0; b < B; b++)
    for (int oy = 0; oy < g->oh; oy++)
      for (int ox = 0; ox < g->ow; ox++, o += (size_t)g->c) {
        if (g->max)
          max_window(g, x, pool_corner(g, b, oy, ox), y + o, arg + o);
        else
          avg_window(g, x, pool_corner(g, b, oy, ox), y + o);
      }
}

void dp_pool_backward(const dp_pool_geom *g, const float *dy, int B, const int32_t *arg, float *dx) {
  const size_t n = (size_t)B * g->oh * g->ow * g->c;
  memset(dx, 0, sizeof(float) * (size_t)B * g->h * g->w * g->c);
  if (g->max) {
    for (size_t o = 0; o < n; o++) dx[arg[o]] += dy[o];
    return;
  }
  const float s = 1.0f / (float)(g->k * g->k);
  size_t o = 0;
  for (int b = 0; b < B; b++)
    for (int oy = 0; oy < g->oh; oy++)
      for (int ox = 0; ox < g->ow; ox++, o += (size_t)g->c) {
        size_t base = pool_corner(g, b, oy, ox);
        for (int i = 0; i < g->k; i++)
          for (int j = 0; j < g->k; j++) {
            float *p = dx + base + ((size_t)i * g->w + j) * g->c;
            for (int ci = 0; ci < g->c; ci++) p[ci] += s * dy[o + ci];
          }
      }
}

/* splitmix64's output function: a bijection whose every output bit depends on every input bit. */
static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

#define GOLDEN 0x9e3779b97f4a7c15ull

void dp_dropout_mask(uint64_t seed, int64_t step, int layer, int64_t row0, int B, int n, float rate, float *mask) {
  /* u = top 24 bits / 2^24 is kept when u >= rate, i.e. when the top bits reach ceil(rate·2^24). */
  const uint64_t thr = (uint64_t)ceil((double)rate * 16777216.0);
  const float keep = 1.0f / (1.0f - rate);
  const uint64_t key = mix64(mix64(mix64(seed + GOLDEN) ^ (uint64_t)step) + GOLDEN * (uint64_t)(uint32_t)layer);
  for (int r = 0; r < B; r++) {
    /* Each (row, unit) is a point of splitmix64's sequence from the row's own key. */
    const uint64_t rk = mix64(key ^ mix64((uint64_t)(row0 + r) + GOLDEN));
    float *m = mask + (size_t)r * n;
    for (int u = 0; u < n; u++)
      m[u] = (mix64(rk + GOLDEN * ((uint64_t)u + 1)) >> 40) >= thr ? keep : 0.0f;
  }
}

void dp_nhwc_to_nchw(const float *x, int B, int c, int h, int w, float *y) {
  const size_t hw = (size_t)h * w, img = hw * c;
  for (int b = 0; b < B; b++) {
    const float *xb = x + b * img;
    float *yb = y + b * img;
    for (size_t p = 0; p < hw; p++)
      for (int ci = 0; ci < c; ci++) yb[ci * hw + p] = xb[p * c + ci];
  }
}

void dp_nchw_to_nhwc(const float *x, int B, int c, int h, int w, float *y) {
  const size_t hw = (size_t)h * w, img = hw * c;
  for (int b = 0; b < B; b++) {
    const float *xb = x + b * img;
    float *yb = y + b * img;
    for (size_t p = 0; p < hw; p++)
      for (int ci = 0; ci < c; ci++) yb[p * c + ci] = xb[ci * hw + p];
  }
}
