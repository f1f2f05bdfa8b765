#include "dptrain/layers.h"

#include <cblas.h>
#include <string.h>

int dp_dense_forward(dp_dense *l, const float *x, int B) {
  if (B > 0) /* y (B, out) = x (B, in) · Wᵀ (in, out) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, l->out, l->in, 1.0f, x, l->in, l->w, l->in, 0.0f, l->y,
                l->out);
  if (l->norm.kind == DP_NORM_NONE) {
    dp_act_bias_forward(l->act, l->y, l->b, (size_t)B, (size_t)l->out);
    return 0;
  }
  if (l->eval) {
    dp_norm_forward_eval(&l->norm, l->y, B);
  } else {
    int rc = dp_norm_forward_train(&l->norm, l->y, B); /* collective with sync: also when B == 0 */
    if (rc < 0)
      return rc;
  }
  dp_act_forward(l->act, l->y, (size_t)B * (size_t)l->out);
  return 0;
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

int dp_dense_backward(dp_dense *l, const float *x, int B, float *dx, int accumulate) {
  dp_act_backward(l->act, l->y, l->dy, (size_t)B * l->out); /* dy -> d(norm output) or dz */
  if (l->norm.kind != DP_NORM_NONE) {
    int rc = dp_norm_backward(&l->norm, l->dy, B, accumulate); /* -> dz; collective with sync */
    if (rc < 0)
      return rc;
  }
  if (B == 0) {
    /* An empty shard still contributes (zero) gradients to the allreduce. */
    if (!accumulate) {
      memset(l->dw, 0, sizeof(float) * (size_t)l->out * l->in);
      if (l->db)
        memset(l->db, 0, sizeof(float) * (size_t)l->out);
    }
    return 0;
  }
  /* dW (out, in) = dzᵀ (out, B) · x (B, in) */
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l->out, l->in, B, 1.0f, l->dy, l->out, x, l->in,
              accumulate ? 1.0f : 0.0f, l->dw, l->in);
  if (l->db)
    bias_grad(l->db, l->dy, B, l->out, accumulate);
  if (dx) /* dx (B, in) = dz (B, out) · W (out, in) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, l->in, l->out, 1.0f, l->dy, l->out, l->w, l->in, 0.0f,
                dx, l->in);
  return 0;
}
