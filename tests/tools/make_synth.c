/* make_synth OUT.h5 N_TRAIN N_TEST DIM CLASSES SEED
 * Writes a synthetic classification set: each class has its own mean in uint8 pixel space plus
 * Gaussian noise, so a small MLP can learn it in a few epochs. Used by the command-line tests. */
#include <stdio.h>
#include <stdlib.h>

#include "dptrain/data.h"
#include "dptrain/error.h"
#include "dptrain/rng.h"

static void fill(dp_rng *r, uint8_t *x, int32_t *y, const double *means, long n, int d, int k) {
  for (long i = 0; i < n; i++) {
    y[i] = (int32_t)dp_rng_below(r, (uint64_t)k);
    for (int j = 0; j < d; j++) {
      double v = means[y[i] * d + j] + 25.0 * dp_rng_normal(r);
      x[i * d + j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: make_synth OUT.h5 N_TRAIN N_TEST DIM CLASSES SEED\n");
    return 2;
  }
  long n = atol(argv[2]), nt = atol(argv[3]);
  int d = atoi(argv[4]), k = atoi(argv[5]);
  dp_rng r;
  dp_rng_seed(&r, (uint64_t)atoll(argv[6]), 1);
  double *means = malloc(sizeof(double) * (size_t)(k * d));
  for (int i = 0; i < k * d; i++)
    means[i] = 60.0 + 140.0 * dp_rng_uniform(&r);
  uint8_t *x = malloc((size_t)(n + nt) * d);
  int32_t *y = malloc(sizeof(int32_t) * (size_t)(n + nt));
  fill(&r, x, y, means, n + nt, d, k);
  dp_split_view tr = {.n = n, .d = d, .x_u8 = 1, .x = x, .scale = 1.0f / 255, .labels = y, .k = 1};
  dp_split_view te = {.n = nt, .d = d, .x_u8 = 1, .x = x + n * d, .scale = 1.0f / 255, .labels = y + n, .k = 1};
  int rc = dp_data_write(argv[1], &tr, nt > 0 ? &te : NULL);
  if (rc)
    fprintf(stderr, "make_synth: %s\n", dp_errmsg(rc));
  free(means);
  free(x);
  free(y);
  return rc ? 1 : 0;
}
