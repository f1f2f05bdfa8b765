/* Losses over a shard of a mini-batch. Each returns the SUM of the per-sample losses of the shard
 * and writes d(sum * scale)/d(outputs), so with scale = 1/global_batch the gradients that the ranks
 * then sum in one allreduce are exactly the gradient of the global batch's mean loss. */
#ifndef DPTRAIN_LOSS_H
#define DPTRAIN_LOSS_H

#include <stdint.h>

/* X(ENUM suffix, name in the config): the one list of losses, read by the config parser and
 * dp_loss_name. Append only: checkpoints and written configs store the values in this order. */
#define DP_LOSS_MAP(X) X(SOFTMAX_CE, "softmax_cross_entropy") X(MSE, "mse")
typedef enum {
#define DP_LOSS_ENUM(e, name) DP_LOSS_##e,
  DP_LOSS_MAP(DP_LOSS_ENUM)
#undef DP_LOSS_ENUM
} dp_loss_kind;

/* The config name of k; "?" for a value outside the enum. */
const char *dp_loss_name(dp_loss_kind k);

/* Softmax fused with cross-entropy, stable for any logits: per sample log(Σ exp z) - z_label.
 * logits (B, K); labels (B) in [0, K); dlogits (B, K) may alias logits. *correct counts argmax hits. */
double dp_loss_softmax_ce(const float *logits, const int32_t *labels, int B, int K, float scale,
                          float *dlogits, int *correct);

/* Mean squared error per sample: (1/K) Σ_k (y_k - t_k)², the per-element mean that common
 * frameworks use. y, t, dy: (B, K); dy may alias y. */
double dp_loss_mse(const float *y, const float *t, int B, int K, float scale, float *dy);

#endif
