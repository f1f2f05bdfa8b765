/* The vectorised loops (src/vec.h: built for AVX2 and for the baseline, the CPU choosing) against
 * the same formulas written as plain one-element-at-a-time C: identical bits, for lengths around
 * every vector width and misaligned starts, so neither the clone the CPU picked nor a loop's
 * remainder changes a result; and the optimizers' non-finite flag wherever the bad element sits. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dptrain/activations.h"
#include "dptrain/data.h"
#include "dptrain/optim.h"

enum { MAXN = 80, PAD = 3 };

static const int LENGTHS[] = {0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 67};
#define N_LENGTHS (int)(sizeof LENGTHS / sizeof LENGTHS[0])

static uint32_t seed = 12345u;
static float uniform(float lo, float hi) { /* deterministic, so a failure reproduces */
  seed = seed * 1664525u + 1013904223u;
  return lo + (hi - lo) * (float)(seed >> 8) / 16777216.0f;
}

static void fill(float *x, int n, float lo, float hi) {
  for (int i = 0; i < n; i++)
    x[i] = uniform(lo, hi);
}

static void same_bits(const float *got, const float *want, int n, const char *what, int len, int off) {
  for (int i = 0; i < n; i++)
    if (memcmp(&got[i], &want[i], sizeof(float)))
      fail_msg("%s n=%d offset=%d [%d]: got %.9g, want %.9g", what, len, off, i, got[i], want[i]);
}

/* One optimizer state: w, g and up to two slots, as the kernel sees them and as the reference does. */
typedef struct {
  float g[MAXN + PAD], w[MAXN + PAD], a[MAXN + PAD], b[MAXN + PAD];
  float rw[MAXN + PAD], ra[MAXN + PAD], rb[MAXN + PAD];
} opt_case;

static void opt_fill(opt_case *c) {
  fill(c->g, MAXN + PAD, -2.0f, 2.0f);
  fill(c->w, MAXN + PAD, -1.0f, 1.0f);
  fill(c->a, MAXN + PAD, -0.5f, 0.5f);
  fill(c->b, MAXN + PAD, 0.0f, 0.3f); /* positive: it is a mean square in RMSprop and Adam */
  memcpy(c->rw, c->w, sizeof c->w);
  memcpy(c->ra, c->a, sizeof c->a);
  memcpy(c->rb, c->b, sizeof c->b);
}

static void opt_check(const opt_case *c, int n, int off, const char *what, int slots) {
  same_bits(c->w + off, c->rw + off, n, what, n, off);
  if (slots > 0)
    same_bits(c->a + off, c->ra + off, n, what, n, off);
  if (slots > 1)
    same_bits(c->b + off, c->rb + off, n, what, n, off);
}

static void test_sgd_kernels(void **state) {
  (void)state;
  const float lr = 0.05f, beta = 0.9f, damp = 0.1f, wd = 1e-3f;
  for (int k = 0; k < N_LENGTHS; k++)
    for (int off = 0; off < PAD; off++) {
      int n = LENGTHS[k];
      opt_case c;
      opt_fill(&c);
      float *g = c.g + off;
      assert_int_equal(dp_sgd_momentum((size_t)n, lr, beta, g, c.w + off, c.a + off), 0);
      for (int i = off; i < off + n; i++) {
        c.ra[i] = beta * c.ra[i] + c.g[i];
        c.rw[i] -= lr * c.ra[i];
      }
      opt_check(&c, n, off, "sgd momentum", 1);

      for (int variant = 0; variant < 4; variant++) {
        int nesterov = variant & 1, first = variant >> 1;
        opt_fill(&c);
        assert_int_equal(dp_sgd_full((size_t)n, lr, beta, damp, wd, nesterov, first, g, c.w + off, c.a + off), 0);
        float keep = first ? 0.0f : beta, take = first ? 1.0f : 1.0f - damp, look = nesterov ? beta : 0.0f;
        float direct = nesterov ? 1.0f : 0.0f, via_p = nesterov ? 0.0f : 1.0f;
        for (int i = off; i < off + n; i++) {
          float gi = c.g[i] + wd * c.rw[i];
          c.ra[i] = keep * c.ra[i] + take * gi;
          c.rw[i] -= lr * (direct * gi + look * c.ra[i] + via_p * c.ra[i]);
        }
        opt_check(&c, n, off, nesterov ? "sgd full, nesterov" : "sgd full", 1);
      }

      opt_fill(&c);
      assert_int_equal(dp_sgd_difference((size_t)n, lr, beta, g, c.w + off, c.a + off), 0);
      for (int i = off; i < off + n; i++) {
        float d = c.rw[i] - c.ra[i];
        c.ra[i] = c.rw[i];
        c.rw[i] += beta * d - lr * c.g[i];
      }
      opt_check(&c, n, off, "sgd difference", 1);
    }
}

static void test_adaptive_kernels(void **state) {
  (void)state;
  const float lr = 1e-3f, alpha = 0.99f, eps = 1e-8f, mu = 0.5f, l2 = 1e-4f;
  for (int k = 0; k < N_LENGTHS; k++)
    for (int off = 0; off < PAD; off++) {
      int n = LENGTHS[k];
      opt_case c;
      float *g = c.g + off;
      for (int with_b = 0; with_b < 2; with_b++) {
        opt_fill(&c);
        assert_int_equal(dp_rmsprop((size_t)n, lr, alpha, eps, mu, l2, g, c.w + off, c.b + off,
                                    with_b ? c.a + off : NULL), 0);
        for (int i = off; i < off + n; i++) {
          float gi = c.g[i] + l2 * c.rw[i];
          c.rb[i] = alpha * c.rb[i] + (1.0f - alpha) * gi * gi;
          if (with_b) {
            c.ra[i] = mu * c.ra[i] + gi / (sqrtf(c.rb[i]) + eps);
            c.rw[i] -= lr * c.ra[i];
          } else {
            c.rw[i] -= lr * gi / (sqrtf(c.rb[i]) + eps);
          }
        }
        opt_check(&c, n, off, with_b ? "rmsprop with momentum" : "rmsprop", 2);
      }
      for (int inside = 0; inside < 2; inside++) {
        const float b1 = 0.9f, b2 = 0.999f, c1 = 0.19f, c2 = 0.002f, decoupled = 0.01f;
        opt_fill(&c);
        assert_int_equal(dp_adam((size_t)n, lr, b1, b2, eps, inside, c1, c2, l2, decoupled, g, c.w + off, c.a + off,
                                 c.b + off), 0);
        float shrink = 1.0f - lr * decoupled, step = lr / c1, inv_c2 = 1.0f / c2;
        for (int i = off; i < off + n; i++) {
          float gi = c.g[i] + l2 * c.rw[i];
          c.ra[i] = b1 * c.ra[i] + (1.0f - b1) * gi;
          c.rb[i] = b2 * c.rb[i] + (1.0f - b2) * gi * gi;
          c.rw[i] = inside ? shrink * c.rw[i] - step * c.ra[i] / sqrtf(c.rb[i] * inv_c2 + eps)
                           : shrink * c.rw[i] - step * c.ra[i] / (sqrtf(c.rb[i] * inv_c2) + eps);
        }
        opt_check(&c, n, off, inside ? "adam, eps inside" : "adam", 2);
      }
    }
}

/* A NaN or an Inf anywhere in g, in the vector body or in the remainder, is reported by every kernel. */
static void test_nonfinite_anywhere(void **state) {
  (void)state;
  const float bad_values[2] = {NAN, INFINITY};
  for (int n = 1; n <= 35; n += 2)
    for (int at = 0; at < n; at += 3)
      for (int v = 0; v < 2; v++) {
        opt_case c;
        opt_fill(&c);
        c.g[at] = bad_values[v];
        assert_int_equal(dp_sgd_momentum((size_t)n, 0.1f, 0.9f, c.g, c.w, c.a), 1);
        assert_int_equal(dp_sgd_full((size_t)n, 0.1f, 0.9f, 0, 0, 1, 0, c.g, c.w, c.a), 1);
        assert_int_equal(dp_sgd_difference((size_t)n, 0.1f, 0.9f, c.g, c.w, c.a), 1);
        assert_int_equal(dp_rmsprop((size_t)n, 0.1f, 0.99f, 1e-8f, 0, 0, c.g, c.w, c.b, NULL), 1);
        assert_int_equal(dp_adam((size_t)n, 0.1f, 0.9f, 0.999f, 1e-8f, 0, 1, 1, 0, 0, c.g, c.w, c.a, c.b), 1);
      }
}

static float act_ref(dp_act a, float x) {
  switch (a) {
  case DP_ACT_RELU:
    return x > 0.0f ? x : 0.0f;
  case DP_ACT_TANH:
    return tanhf(x);
  case DP_ACT_SIGMOID:
    return 1.0f / (1.0f + expf(-x));
  case DP_ACT_IDENTITY:
    break;
  }
  return x;
}

static float act_grad_ref(dp_act a, float y, float dy) {
  switch (a) {
  case DP_ACT_RELU:
    return y > 0.0f ? dy : 0.0f;
  case DP_ACT_TANH:
    return dy * (1.0f - y * y);
  case DP_ACT_SIGMOID:
    return dy * (y * (1.0f - y));
  case DP_ACT_IDENTITY:
    break;
  }
  return dy;
}

/* The fused bias passes of a dense layer against the element-at-a-time definition: f(z + b) forward;
 * backward dy · f'(y) and the bias gradient as the column sums taken row after row. */
static void test_bias_activation_passes(void **state) {
  (void)state;
  enum { ROWS = 5 };
  static float z[ROWS * MAXN], rz[ROWS * MAXN], y[ROWS * MAXN], dy[ROWS * MAXN], rdy[ROWS * MAXN];
  float b[MAXN], db[MAXN], rdb[MAXN];
  for (int a = DP_ACT_IDENTITY; a <= DP_ACT_SIGMOID; a++)
    for (int k = 1; k < N_LENGTHS; k++)
      for (int rows = 0; rows <= ROWS; rows += 2)
        for (int acc = 0; acc < 2; acc++) {
          int cols = LENGTHS[k];
          fill(z, rows * cols, -3.0f, 3.0f);
          fill(b, cols, -1.0f, 1.0f);
          memcpy(rz, z, sizeof(float) * (size_t)(rows * cols));
          dp_act_bias_forward((dp_act)a, z, b, (size_t)rows, (size_t)cols);
          for (int i = 0; i < rows * cols; i++)
            rz[i] = act_ref((dp_act)a, rz[i] + b[i % cols]);
          same_bits(z, rz, rows * cols, dp_act_name((dp_act)a), cols, rows);

          memcpy(y, z, sizeof(float) * (size_t)(rows * cols));
          fill(dy, rows * cols, -1.0f, 1.0f);
          fill(db, cols, -1.0f, 1.0f);
          memcpy(rdy, dy, sizeof(float) * (size_t)(rows * cols));
          memcpy(rdb, db, sizeof(float) * (size_t)cols);
          dp_act_bias_backward((dp_act)a, y, dy, db, (size_t)rows, (size_t)cols, acc);
          for (int c = 0; !acc && c < cols; c++)
            rdb[c] = 0.0f;
          for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
              int i = r * cols + c;
              rdy[i] = act_grad_ref((dp_act)a, y[i], rdy[i]);
              rdb[c] += rdy[i];
            }
          same_bits(dy, rdy, rows * cols, "backward dy", cols, rows);
          same_bits(db, rdb, cols, acc ? "backward db, accumulated" : "backward db", cols, rows);
        }
}

/* Rows of uint8 or float through the input transform x · scale + shift. */
static void test_convert_rows(void **state) {
  (void)state;
  enum { ROWS = 3 };
  float scale[MAXN], shift[MAXN], src[ROWS * MAXN], got[ROWS * MAXN], want[ROWS * MAXN];
  uint8_t u8[ROWS * MAXN];
  for (int k = 1; k < N_LENGTHS; k++) {
    int d = LENGTHS[k];
    dp_dataset ds;
    dp_dataset_init(&ds);
    ds.d = d, ds.x_scale = scale, ds.x_shift = shift;
    fill(scale, d, 0.001f, 0.02f);
    fill(shift, d, -1.0f, 1.0f);
    fill(src, ROWS * d, -10.0f, 10.0f);
    for (int i = 0; i < ROWS * d; i++)
      u8[i] = (uint8_t)(i * 37 + d);
    dp_dataset_convert_rows(&ds, u8, 1, ROWS, got);
    for (int i = 0; i < ROWS * d; i++)
      want[i] = (float)u8[i] * scale[i % d] + shift[i % d];
    same_bits(got, want, ROWS * d, "convert uint8", d, 0);
    dp_dataset_convert_rows(&ds, src, 0, ROWS, got);
    for (int i = 0; i < ROWS * d; i++)
      want[i] = src[i] * scale[i % d] + shift[i % d];
    same_bits(got, want, ROWS * d, "convert float", d, 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sgd_kernels),        cmocka_unit_test(test_adaptive_kernels),
      cmocka_unit_test(test_nonfinite_anywhere), cmocka_unit_test(test_bias_activation_passes),
      cmocka_unit_test(test_convert_rows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
