#include "dptrain/init.h"

#include <math.h>

#define DP_INIT_NAME(e, name) name,
const char *dp_init_rule_name(dp_init_rule r) {
  static const char *const names[] = {DP_INIT_RULE_MAP(DP_INIT_NAME)};
  return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "?";
}

const char *dp_init_dist_name(dp_init_dist d) {
  static const char *const names[] = {DP_INIT_DIST_MAP(DP_INIT_NAME)};
  return (unsigned)d < sizeof names / sizeof names[0] ? names[d] : "?";
}
#undef DP_INIT_NAME

void dp_init_params(dp_init_rule rule, dp_init_dist dist, dp_act act, int n_in, int n_out, int *is_normal,
                    double *width) {
  double fan = (double)n_in + (double)n_out;
  switch (rule) {
  case DP_INIT_UNIFORM_FANIN:
    *is_normal = 0;
    *width = 1.0 / sqrt((double)n_in);
    return;
  case DP_INIT_XAVIER_UNIFORM:
    *is_normal = 0;
    *width = sqrt(6.0 / fan);
    return;
  case DP_INIT_XAVIER_NORMAL:
    *is_normal = 1;
    *width = sqrt(2.0 / fan);
    return;
  case DP_INIT_AUTO:
    break;
  }
  /* The per-activation table: the Xavier value is right for tanh (slope 1 at 0); sigmoid's slope at 0
   * is 1/4, so 4× keeps the signal's variance; ReLU zeroes half the inputs, so √2× restores it. */
  double gain = act == DP_ACT_SIGMOID ? 4.0 : act == DP_ACT_RELU ? sqrt(2.0) : 1.0;
  *is_normal = dist == DP_DIST_NORMAL;
  *width = gain * (*is_normal ? sqrt(2.0 / fan) : sqrt(6.0 / fan));
}

void dp_init_weights(float *w, int n_in, int n_out, dp_init_rule rule, dp_init_dist dist, dp_act act, dp_rng *rng) {
  int is_normal;
  double width;
  dp_init_params(rule, dist, act, n_in, n_out, &is_normal, &width);
  size_t n = (size_t)n_in * n_out;
  for (size_t i = 0; i < n; i++)
    w[i] = (float)(is_normal ? width * dp_rng_normal(rng) : width * (2.0 * dp_rng_uniform(rng) - 1.0));
}
