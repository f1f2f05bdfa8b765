/* Exact, order-independent sums: the arithmetic of [train] deterministic.
 *
 * A value v becomes the integer round(v · 2^e) at an exponent e that every contributor uses alike;
 * int64 addition is exact and associative (no partial sum can overflow: the limit below bounds each
 * term by 2^63 / n_terms), so the sum of those integers depends only on the set of values, never on
 * their order, their grouping or the rank that added them. Converting the sum back rounds once. This is
 * E3SM's shr_reprosum with one integer per value: e is chosen from the largest |v| so that any sum
 * of n_terms values fits in 63 bits, which leaves at least 51 - log2(n_terms) bits below the
 * largest value (float32 has 24).
 *
 * A value that does not fit (NaN, ±Inf, or larger than the limit the exponent allows) adds nothing
 * and is counted, so that the caller can propagate it or redo the sum at a larger exponent. */
#ifndef DPTRAIN_REPROSUM_H
#define DPTRAIN_REPROSUM_H

#include <stddef.h>
#include <stdint.h>

#include "dptrain/comm.h"

/* |v · 2^e| stays below 2^51 whatever n_terms is: the conversion below is exact up to there. */
enum { DP_REPROSUM_MAX_BITS = 51 };

/* The bound on one term's |v · 2^e| that lets n_terms of them add up without overflow: 2^b with
 * b = min(51, 62 - ceil(log2 n_terms)). */
double dp_reprosum_limit(int64_t n_terms);
/* The exponent for values up to maxabs · 2^headroom (maxabs finite, >= 0; 0 gives 0), clamped to
 * ±1000 so that 2^e is a normal double. */
int dp_reprosum_exponent(double maxabs, int64_t n_terms, int headroom);
/* round(v · 2^e), ties to even; |v · 2^e| must be below 2^51. */
int64_t dp_reprosum_fixed(double v, int e);
/* s · 2^-e, rounded once to double. */
double dp_reprosum_value(int64_t s, int e);

/* acc[i] += round(v[i] · 2^e) for every v[i] with |v[i] · 2^e| < limit; returns how many were not
 * (NaN, ±Inf, too large), which add nothing. *maxabs becomes the larger of itself and every finite
 * |v[i]|. */
size_t dp_reprosum_add_f32(int64_t *acc, const float *v, size_t n, int e, double limit, float *maxabs);
/* The same, with acc[i] = instead of += (the first term: no zeroing pass before it). */
size_t dp_reprosum_set_f32(int64_t *acc, const float *v, size_t n, int e, double limit, float *maxabs);
/* The count and *maxabs of dp_reprosum_set_f32 without storing: v is converted later, by
 * dp_reprosum_fixed_sum_to_f32. */
size_t dp_reprosum_scan_f32(const float *v, size_t n, int e, double limit, float *maxabs);
/* out[i] = acc[i] · 2^-e as float. */
void dp_reprosum_to_f32(float *out, const int64_t *acc, size_t n, int e);
/* out[i] = (a[i] + b[i]) · 2^-e as float: a sum's last term added as it is read. */
void dp_reprosum_sum_to_f32(float *out, const int64_t *a, const int64_t *b, size_t n, int e);
/* The same with a[i] = round(v[i] · 2^e), 0 where it does not fit (as dp_reprosum_set_f32 makes it):
 * a term converted only when it is added. out may be v. */
void dp_reprosum_fixed_sum_to_f32(float *out, const float *v, const int64_t *b, size_t n, int e, double limit);
/* The same for two floats: out[i] = (round(v[i] · 2^e) + round(w[i] · 2^e)) · 2^-e, each 0 where it
 * does not fit. */
void dp_reprosum_fixed2_to_f32(float *out, const float *v, const float *w, size_t n, int e, double limit);

/* Scratch for dp_reprosum_chunks: room for vectors of up to cap doubles. */
typedef struct {
  dp_comm *comm;
  int cap;
  double *max;
  int64_t *sum;
  double *all; /* with few ranks: (ranks · (1 + cap)) every rank's chunk, gathered */
} dp_reprosum;

int dp_reprosum_init(dp_reprosum *r, dp_comm *comm, int cap);
void dp_reprosum_free(dp_reprosum *r);
/* out[j] = the exact sum over every rank's chunks c of x[c·n + j] (n_chunks rows of n doubles here),
 * rounded once; n_terms bounds the number of chunks of all ranks together. Each element gets its own
 * exponent from one MAX allreduce, then one int64 SUM allreduce adds them: the same bits for any
 * number of ranks and any split of the chunks among them. A non-finite x anywhere makes out[j] NaN.
 * When there are no more chunks than ranks (each rank has at most one, dp_split_range), up to 64
 * ranks gather the chunks and every rank makes the same sum itself: one collective, the same bits.
 * Collective; 0 or DP_EMPI. */
int dp_reprosum_chunks(dp_reprosum *r, const double *x, int n_chunks, int n, int64_t n_terms, double *out);

#endif
