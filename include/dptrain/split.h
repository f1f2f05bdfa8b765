/* The validation rows of [data] val_fraction: a fraction of the training set held out of every
 * epoch and evaluated instead. The choice is a pure function of (n, fraction, seed) drawn on a
 * stream of its own (a fixed salt), so every rank, any rank count and a resumed run hold the same
 * rows without a message. */
#ifndef DPTRAIN_SPLIT_H
#define DPTRAIN_SPLIT_H

#include <stdint.h>

typedef struct {
  int64_t n;         /* rows of the training set */
  int64_t n_val;     /* rows held out: round(fraction · n), at least 1 when fraction > 0 */
  uint8_t *held;     /* (n) 1 for a held-out row; NULL when none */
  int64_t *rows;     /* (n_val) the held-out rows, ascending */
} dp_val_split;

/* Chooses round(fraction · n) rows by selection sampling (each subset of that size equally likely);
 * fraction 0 holds out none. 0 or DP_ENOMEM / DP_ECONFIG (nothing left to train on; naming cfg_file). */
int dp_val_split_make(dp_val_split *v, int64_t n, double fraction, uint64_t seed, const char *cfg_file);
/* Removes the held-out rows from order[0..n) in place, keeping the order of the rest; returns how
 * many remain (n - n_val for an order of all n rows). */
int64_t dp_val_split_filter(const dp_val_split *v, int64_t *order, int64_t n);
void dp_val_split_free(dp_val_split *v);

#endif
