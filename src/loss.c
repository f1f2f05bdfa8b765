#include "dptrain/loss.h"

#include <math.h>
#include <stddef.h>

const char *dp_loss_name(dp_loss_kind k) {
#define DP_LOSS_NAME(e, name) name,
  static const char *const names[] = {DP_LOSS_MAP(DP_LOSS_NAME)};
#undef DP_LOSS_NAME
  return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

double dp_loss_softmax_ce(const float *logits, const int32_t *labels, int B, int K, float scale,
                          float *dlogits, int *correct) {
  double total = 0.0;
  int hits = 0;
  for (int i = 0; i < B; i++) {
    const float *z = logits + (size_t)i * K;
    float *dz = dlogits ? dlogits + (size_t)i * K : NULL;
    int arg = 0;
    float zmax = z[0];
    for (int k = 1; k < K; k++)
      if (z[k] > zmax) {
        zmax = z[k];
        arg = k;
      }
    /* Subtracting the max keeps exp() in range whatever the logits are. */
    double sum = 0.0;
    for (int k = 0; k < K; k++)
      sum += exp((double)(z[k] - zmax));
    double lse = log(sum) + zmax;
    int y = labels[i];
    total += lse - z[y];
    hits += arg == y;
    if (dz) {
      for (int k = 0; k < K; k++)
        dz[k] = (float)(exp((double)z[k] - lse) * scale);
      dz[y] -= scale;
    }
  }
  if (correct)
    *correct = hits;
  return total;
}

double dp_loss_mse(const float *y, const float *t, int B, int K, float scale, float *dy) {
  double total = 0.0;
  for (int i = 0; i < B; i++) {
    double s = 0.0;
    for (int k = 0; k < K; k++) {
      size_t j = (size_t)i * K + k;
      float e = y[j] - t[j];
      s += (double)e * e;
      if (dy)
        dy[j] = 2.0f * e * scale / (float)K;
    }
    total += s / K;
  }
  return total;
}
