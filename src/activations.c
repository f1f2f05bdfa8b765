#include "dptrain/activations.h"

#include <math.h>

#include "vec.h"

const char *dp_act_name(dp_act a) {
#define DP_ACT_NAME(e, name) name,
  static const char *const names[] = {DP_ACT_MAP(DP_ACT_NAME)};
#undef DP_ACT_NAME
  return (unsigned)a < sizeof names / sizeof names[0] ? names[a] : "?";
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

DP_VECTOR_LOOP
void dp_act_forward(dp_act a, float *x, size_t n) {
  switch (a) {
  case DP_ACT_IDENTITY:
    break;
  case DP_ACT_RELU:
    for (size_t i = 0; i < n; i++)
      x[i] = x[i] > 0.0f ? x[i] : 0.0f;
    break;
  case DP_ACT_TANH:
    for (size_t i = 0; i < n; i++)
      x[i] = tanhf(x[i]);
    break;
  case DP_ACT_SIGMOID:
    for (size_t i = 0; i < n; i++)
      x[i] = sigmoidf(x[i]);
    break;
  }
}

DP_VECTOR_LOOP
void dp_act_backward(dp_act a, const float *y, float *dy, size_t n) {
  switch (a) {
  case DP_ACT_IDENTITY:
    break;
  case DP_ACT_RELU:
    for (size_t i = 0; i < n; i++)
      dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    break;
  case DP_ACT_TANH:
    for (size_t i = 0; i < n; i++)
      dy[i] *= 1.0f - y[i] * y[i];
    break;
  case DP_ACT_SIGMOID:
    for (size_t i = 0; i < n; i++)
      dy[i] *= y[i] * (1.0f - y[i]);
    break;
  }
}

DP_VECTOR_LOOP
void dp_act_bias_forward(dp_act a, float *z, const float *b, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; r++) {
    float *zr = z + r * cols;
    if (b)
      for (size_t c = 0; c < cols; c++)
        zr[c] += b[c];
    /* Per row, while the row is still in L1. */
    dp_act_forward(a, zr, cols);
  }
}

/* The row sums go into db row after row, as a separate pass over dz would add them: the same bits. */
DP_VECTOR_LOOP
void dp_act_bias_backward(dp_act a, const float *y, float *dy, float *restrict db, size_t rows, size_t cols,
                          int accumulate) {
  if (!accumulate)
    for (size_t c = 0; c < cols; c++)
      db[c] = 0.0f;
  for (size_t r = 0; r < rows; r++) {
    float *restrict dr = dy + r * cols;
    dp_act_backward(a, y + r * cols, dr, cols);
    for (size_t c = 0; c < cols; c++)
      db[c] += dr[c];
  }
}
