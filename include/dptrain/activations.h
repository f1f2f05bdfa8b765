/* Element-wise activations. The backward pass is written in terms of the activation's OUTPUT y,
 * which is all the forward pass keeps: relu' = [y > 0], tanh' = 1 - y², sigmoid' = y(1 - y). */
#ifndef DPTRAIN_ACTIVATIONS_H
#define DPTRAIN_ACTIVATIONS_H

#include <stddef.h>

/* X(ENUM suffix, name in the config): the one list of activations, read by the config parser and
 * dp_act_name. Append only: checkpoints and written configs store the values in this order. */
#define DP_ACT_MAP(X) X(IDENTITY, "identity") X(RELU, "relu") X(TANH, "tanh") X(SIGMOID, "sigmoid")
typedef enum {
#define DP_ACT_ENUM(e, name) DP_ACT_##e,
  DP_ACT_MAP(DP_ACT_ENUM)
#undef DP_ACT_ENUM
} dp_act;

/* The config name of a; "?" for a value outside the enum. */
const char *dp_act_name(dp_act a);
/* In place: x <- f(x), n elements. */
void dp_act_forward(dp_act a, float *x, size_t n);
/* In place: dy <- dy * f'(x), where y = f(x) is the forward output. */
void dp_act_backward(dp_act a, const float *y, float *dy, size_t n);
/* Fused forward for a dense layer: z (B, out) <- f(z + b), one pass over the output. */
void dp_act_bias_forward(dp_act a, float *z, const float *b, size_t rows, size_t cols);
/* Fused backward for a dense layer: dy (B, out) <- dy * f'(y) and db (out) <- its column sums (added
 * to db when accumulate), one pass over dy. */
void dp_act_bias_backward(dp_act a, const float *y, float *dy, float *db, size_t rows, size_t cols, int accumulate);

#endif
