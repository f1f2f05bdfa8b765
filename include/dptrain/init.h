/* Weight initialisation heuristics.
 *
 * uniform_fanin:  U(±1/√n_in)
 * xavier_uniform: U(±r), r = √(6/(n_in+n_out))      (Glorot & Bengio 2010)
 * xavier_normal:  N(0, σ²), σ = √(2/(n_in+n_out))
 * auto: the per-activation table: tanh/identity use the Xavier value, sigmoid 4× it, ReLU √2× it;
 *       uniform unless dist = normal. Biases start at zero. */
#ifndef DPTRAIN_INIT_H
#define DPTRAIN_INIT_H

#include "dptrain/activations.h"
#include "dptrain/rng.h"

typedef enum { DP_INIT_AUTO, DP_INIT_UNIFORM_FANIN, DP_INIT_XAVIER_UNIFORM, DP_INIT_XAVIER_NORMAL } dp_init_rule;
typedef enum { DP_DIST_UNIFORM, DP_DIST_NORMAL } dp_init_dist;

/* The distribution a rule gives: *is_normal, and the half-width r (uniform) or σ (normal). */
void dp_init_params(dp_init_rule rule, dp_init_dist dist, dp_act act, int n_in, int n_out, int *is_normal,
                    double *width);
/* Fills w (n_out, n_in) from the rule's distribution. */
void dp_init_weights(float *w, int n_in, int n_out, dp_init_rule rule, dp_init_dist dist, dp_act act, dp_rng *rng);

#endif
