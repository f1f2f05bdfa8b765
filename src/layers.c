#include "dptrain/layers.h"

#include <cblas.h>
#include <string.h>

#include "vec.h"

/* Products of a deterministic pass run chunk by chunk: the same shapes whatever rows share the pass,
 * so the same kernel and blocking produce the same bits. */
static int piece(const dp_dense *l, int B) { return l->chunk > 0 ? l->chunk : B; }

int dp_dense_forward(dp_dense *l, const float *x, int B) {
  for (int r = 0; r < B; r += piece(l, B)) { /* y (B, out) = x (B, in) · Wᵀ (in, out) */
    int m = B - r < piece(l, B) ? B - r : piece(l, B);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, l->out, l->in, 1.0f, x + (size_t)r * l->in, l->in, l->w,
                l->in, 0.0f, l->y + (size_t)r * l->out, l->out);
  }
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

DP_VECTOR_LOOP
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
  /* A bias (there is no norm then) is summed while dz's rows are in L1; a chunked pass sums it per
   * chunk (dp_dense_chunk_grads). */
  if (l->db && !l->chunk)
    dp_act_bias_backward(l->act, l->y, l->dy, l->db, (size_t)B, (size_t)l->out, accumulate);
  else
    dp_act_backward(l->act, l->y, l->dy, (size_t)B * l->out); /* dy -> d(norm output) or dz */
  if (l->norm.kind != DP_NORM_NONE) {
    int rc = dp_norm_backward(&l->norm, l->dy, B, accumulate); /* -> dz; collective with sync */
    if (rc < 0)
      return rc;
  }
  if (l->chunk) {
    for (int r = 0; dx && r < B; r += l->chunk) { /* dx (B, in) = dz (B, out) · W (out, in) */
      int m = B - r < l->chunk ? B - r : l->chunk;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, l->in, l->out, 1.0f, l->dy + (size_t)r * l->out,
                  l->out, l->w, l->in, 0.0f, dx + (size_t)r * l->in, l->in);
    }
    return 0;
  }
  if (B == 0) {
    /* An empty shard still contributes (zero) gradients to the allreduce; db's were set above. */
    if (!accumulate)
      memset(l->dw, 0, sizeof(float) * (size_t)l->out * l->in);
    return 0;
  }
  /* dW (out, in) = dzᵀ (out, B) · x (B, in) */
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l->out, l->in, B, 1.0f, l->dy, l->out, x, l->in,
              accumulate ? 1.0f : 0.0f, l->dw, l->in);
  if (dx) /* dx (B, in) = dz (B, out) · W (out, in) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, l->in, l->out, 1.0f, l->dy, l->out, l->w, l->in, 0.0f,
                dx, l->in);
  return 0;
}

void dp_dense_chunk_grads(dp_dense *l, const float *x, int B, int c) {
  int r = c * l->chunk, m = B - r < l->chunk ? B - r : l->chunk;
  const float *dz = l->dy + (size_t)r * l->out;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l->out, l->in, m, 1.0f, dz, l->out, x + (size_t)r * l->in,
              l->in, 0.0f, l->dw, l->in);
  if (l->db)
    bias_grad(l->db, dz, m, l->out, 0);
  else
    dp_norm_chunk_grads(&l->norm, c);
}

void dp_dense_input_grad(const dp_dense *l, int B, float *dx) {
  for (int r = 0; r < B; r += piece(l, B)) { /* dx (B, in) = dz (B, out) · W (out, in) */
    int m = B - r < piece(l, B) ? B - r : piece(l, B);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, l->in, l->out, 1.0f, l->dy + (size_t)r * l->out, l->out,
                l->w, l->in, 0.0f, dx + (size_t)r * l->in, l->in);
  }
}
