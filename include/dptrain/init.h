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

/* X(ENUM suffix, name in the config): the one list of each, read by the config parser and the name
 * functions. Append only: checkpoints and written configs store the values in this order. */
#define DP_INIT_RULE_MAP(X) \
  X(AUTO, "auto") X(UNIFORM_FANIN, "uniform_fanin") X(XAVIER_UNIFORM, "xavier_uniform") X(XAVIER_NORMAL, "xavier_normal")
typedef enum {
#define DP_INIT_RULE_ENUM(e, name) DP_INIT_##e,
  DP_INIT_RULE_MAP(DP_INIT_RULE_ENUM)
#undef DP_INIT_RULE_ENUM
} dp_init_rule;
#define DP_INIT_DIST_MAP(X) X(UNIFORM, "uniform") X(NORMAL, "normal")
typedef enum {
#define DP_INIT_DIST_ENUM(e, name) DP_DIST_##e,
  DP_INIT_DIST_MAP(DP_INIT_DIST_ENUM)
#undef DP_INIT_DIST_ENUM
} dp_init_dist;

/* The config names of a rule and a distribution; "?" for a value outside the enum. */
const char *dp_init_rule_name(dp_init_rule r);
const char *dp_init_dist_name(dp_init_dist d);

/* The distribution a rule gives: *is_normal, and the half-width r (uniform) or σ (normal). */
void dp_init_params(dp_init_rule rule, dp_init_dist dist, dp_act act, int n_in, int n_out, int *is_normal,
                    double *width);
/* Fills w (n_out, n_in) from the rule's distribution. */
void dp_init_weights(float *w, int n_in, int n_out, dp_init_rule rule, dp_init_dist dist, dp_act act, dp_rng *rng);

#endif
