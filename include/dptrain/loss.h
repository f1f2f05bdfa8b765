/* Losses over a shard of a mini-batch. Each returns the SUM of the per-sample losses of the shard
 * and writes d(sum * scale)/d(outputs), so with scale = 1/global_batch the gradients that the ranks
 * then sum in one allreduce are exactly the gradient of the global batch's mean loss. */
#ifndef DPTRAIN_LOSS_H
#define DPTRAIN_LOSS_H

#include <stdint.h>

typedef enum { DP_LOSS_SOFTMAX_CE, DP_LOSS_MSE } dp_loss_kind;

const char *dp_loss_name(dp_loss_kind k);

/* Softmax fused with cross-entropy, stable for any logits: per sample log(Σ exp z) - z_label.
 * logits (B, K); labels (B) in [0, K); dlogits (B, K) may alias logits. *correct counts argmax hits. */
double dp_loss_softmax_ce(const float *logits, const int32_t *labels, int B, int K, float scale,
                          float *dlogits, int *correct);

/* Mean squared error per sample: (1/K) Σ_k (y_k - t_k)², the per-element mean that common
 * frameworks use. y, t, dy: (B, K); dy may alias y. */
double dp_loss_mse(const float *y, const float *t, int B, int K, float scale, float *dy);

#endif
