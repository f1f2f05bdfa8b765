#include "dptrain/layers.h"

#include <cblas.h>
#include <string.h>

void dp_dense_forward(dp_dense *l, const float *x, int B) {
  if (B == 0)
    return;
  /* y (B, out) = x (B, in) · Wᵀ (in, out) */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, l->out, l->in, 1.0f, x, l->in, l->w, l->in, 0.0f, l->y,
              l->out);
  dp_act_bias_forward(l->act, l->y, l->b, (size_t)B, (size_t)l->out);
}

static void bias_grad(float *db, const float *dz, int B, int out, int accumulate) {
  if (!accumulate)
    memset(db, 0, sizeof(float) * (size_t)out);
  for (int r = 0; r < B; r++) {
    const float *row = dz + (size_t)r * out;
    for (int c = 0; c < out; c++)
      db[c] += row[c];
  }
}

void dp_dense_backward(dp_dense *l, const float *x, int B, float *dx, int accumulate) {
  if (B == 0) {
    /* An empty shard still contributes (zero) gradients to the allreduce. */
    if (!accumulate) {
      memset(l->dw, 0, sizeof(float) * (size_t)l->out * l->in);
      memset(l->db, 0, sizeof(float) * (size_t)l->out);
    }
    return;
  }
  dp_act_backward(l->act, l->y, l->dy, (size_t)B * l->out); /* dy -> dz */
  /* dW (out, in) = dzᵀ (out, B) · x (B, in) */
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l->out, l->in, B, 1.0f, l->dy, l->out, x, l->in,
              accumulate ? 1.0f : 0.0f, l->dw, l->in);
  bias_grad(l->db, l->dy, B, l->out, accumulate);
  if (dx) /* dx (B, in) = dz (B, out) · W (out, in) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, l->in, l->out, 1.0f, l->dy, l->out, l->w, l->in, 0.0f,
                dx, l->in);
}
