/* The validation rows held out of the training set. */
#include "dptrain/split.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"
#include "dptrain/rng.h"

/* The stream of the choice: apart from the weights' (layer numbers) and the epochs' (0x5eed0000 + epoch). */
#define VAL_SALT 0x7a11da7e0000ULL

int dp_val_split_make(dp_val_split *v, int64_t n, double fraction, uint64_t seed, const char *cfg_file) {
  memset(v, 0, sizeof *v);
  v->n = n;
  if (fraction <= 0 || n <= 0)
    return 0;
  int64_t want = (int64_t)llround(fraction * (double)n);
  if (want < 1)
    want = 1;
  if (want >= n)
    return dp_fail(DP_ECONFIG, "%s: [data] val_fraction = %g holds out all %lld training rows: nothing left to train on",
                   cfg_file, fraction, (long long)n);
  v->held = calloc((size_t)n, 1);
  v->rows = malloc(sizeof(int64_t) * (size_t)want);
  if (!v->held || !v->rows) {
    dp_val_split_free(v);
    return dp_fail(DP_ENOMEM, "no memory to choose %lld validation rows", (long long)want);
  }
  /* Knuth's selection sampling: row i is taken with probability (still needed)/(rows left). */
  dp_rng rng;
  dp_rng_seed(&rng, seed, VAL_SALT);
  for (int64_t i = 0; i < n && v->n_val < want; i++)
    if ((int64_t)dp_rng_below(&rng, (uint64_t)(n - i)) < want - v->n_val) {
      v->held[i] = 1;
      v->rows[v->n_val++] = i;
    }
  return 0;
}

int64_t dp_val_split_filter(const dp_val_split *v, int64_t *order, int64_t n) {
  if (!v->held)
    return n;
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++)
    if (!v->held[order[i]])
      order[k++] = order[i];
  return k;
}

void dp_val_split_free(dp_val_split *v) {
  free(v->held);
  free(v->rows);
  memset(v, 0, sizeof *v);
}
