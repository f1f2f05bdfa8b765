#include "dptrain/reprosum.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"

static int ceil_log2(int64_t n) {
  int b = 0;
  while (b < 62 && ((int64_t)1 << b) < n)
    b++;
  return b;
}

double dp_reprosum_limit(int64_t n_terms) {
  int b = 62 - ceil_log2(n_terms > 1 ? n_terms : 1);
  return ldexp(1.0, b < DP_REPROSUM_MAX_BITS ? b : DP_REPROSUM_MAX_BITS);
}

int dp_reprosum_exponent(double maxabs, int64_t n_terms, int headroom) {
  if (!(maxabs > 0.0) || !isfinite(maxabs))
    return 0;
  int k;
  frexp(maxabs, &k); /* maxabs < 2^k */
  int b;
  frexp(dp_reprosum_limit(n_terms), &b); /* limit = 2^(b-1) */
  long e = (long)(b - 1) - k - headroom;
  return (int)(e > 1000 ? 1000 : e < -1000 ? -1000 : e);
}

/* Adding 1.5 · 2^52 puts the integer part of |x| < 2^51 in the low mantissa bits, rounded to nearest
 * even by the addition itself: a conversion that vectorises, unlike llrint. */
static const double MAGIC = 0x1.8p52;

static int64_t bits_of(double x) {
  int64_t b;
  memcpy(&b, &x, sizeof b);
  return b;
}

/* Two's-complement wrap-around arithmetic, done in uint64 (signed overflow is undefined in C): the
 * exact sums rely on it being associative, and the conversions below compute results they then mask. */
static inline int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }

int64_t dp_reprosum_fixed(double v, int e) { return wrap_sub(bits_of(ldexp(v, e) + MAGIC), bits_of(MAGIC)); }

double dp_reprosum_value(int64_t s, int e) { return ldexp((double)s, -e); }

static uint32_t float_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return b;
}

/* |v| < the float with these bits exactly when |v · 2^e| < limit (a power of two); zero always fits. */
static int32_t fit_bound(int e, double limit) {
  double bound_v = ldexp(limit, -e);
  int32_t bound = bound_v > FLT_MAX ? 0x7f800000 : (int32_t)float_bits((float)bound_v);
  return bound > 0 ? bound : 1;
}

/* Integer comparisons of |v|'s bits (non-negative floats order as their bits do, NaN above Inf): the
 * loop if-converts and vectorises, which floating comparisons (they may trap) would prevent. mode
 * SET stores instead of adding (no zeroing pass before), SCAN only counts and takes the maximum
 * (inlined with a constant: one loop each). */
enum { ADD, SET, SCAN };

static inline size_t to_fixed(int64_t *restrict acc, const float *restrict v, size_t n, int e, double limit,
                              float *maxabs, int mode) {
  const double scale = ldexp(1.0, e);
  const int64_t magic = bits_of(MAGIC);
  const int32_t bound = fit_bound(e, limit);
  int32_t top = (int32_t)float_bits(*maxabs), bad = 0;
  for (size_t i = 0; i < n; i++) {
    int32_t a = (int32_t)(float_bits(v[i]) & 0x7fffffffu);
    int32_t ok = a < bound;
    if (mode != SCAN) {
      int64_t q = wrap_sub(bits_of((double)v[i] * scale + MAGIC), magic);
      q &= -(int64_t)ok; /* a mask, not a branch: the conversion above may not be conditional */
      acc[i] = mode == ADD ? wrap_add(acc[i], q) : q;
    }
    bad += 1 - ok;
    a = a < 0x7f800000 ? a : 0;
    top = a > top ? a : top;
  }
  uint32_t t = (uint32_t)top;
  memcpy(maxabs, &t, sizeof t);
  return (size_t)bad;
}

/* The conversions are a pass over the whole gradient each step: a wider vector unit where the CPU has
 * one. Every operation in them is exact or correctly rounded, so each clone gives the same bits. */
#define WIDE __attribute__((target_clones("avx512f", "avx2", "default")))

WIDE size_t dp_reprosum_add_f32(int64_t *acc, const float *v, size_t n, int e, double limit, float *maxabs) {
  return to_fixed(acc, v, n, e, limit, maxabs, ADD);
}

WIDE size_t dp_reprosum_set_f32(int64_t *acc, const float *v, size_t n, int e, double limit, float *maxabs) {
  return to_fixed(acc, v, n, e, limit, maxabs, SET);
}

WIDE size_t dp_reprosum_scan_f32(const float *v, size_t n, int e, double limit, float *maxabs) {
  return to_fixed(NULL, v, n, e, limit, maxabs, SCAN);
}

/* (double)s in two exact halves and one rounding addition: int32 conversions vectorise, int64 ones
 * do not before AVX-512. b = NULL: no second term (inlined with a constant: two loops). */
static inline void to_float(float *restrict out, const int64_t *restrict a, const int64_t *restrict b, size_t n,
                            int e, int two) {
  const double scale = ldexp(1.0, -e);
  for (size_t i = 0; i < n; i++) {
    uint64_t u = two ? (uint64_t)a[i] + (uint64_t)b[i] : (uint64_t)a[i];
    int32_t hi = (int32_t)(uint32_t)(u >> 32), lo = (int32_t)(uint32_t)(u ^ 0x80000000u);
    out[i] = (float)(((double)hi * 4294967296.0 + ((double)lo + 2147483648.0)) * scale);
  }
}

WIDE void dp_reprosum_to_f32(float *out, const int64_t *acc, size_t n, int e) { to_float(out, acc, NULL, n, e, 0); }

WIDE void dp_reprosum_sum_to_f32(float *out, const int64_t *a, const int64_t *b, size_t n, int e) {
  to_float(out, a, b, n, e, 1);
}

/* to_fixed's integers and to_float's conversion in one loop: v's integer plus b, or (two) plus w's
 * (inlined with a constant: two loops). out may be v. */
static inline void fixed_to_float(float *out, const float *v, const float *w, const int64_t *b, size_t n, int e,
                                  double limit, int two) {
  const double scale = ldexp(1.0, e), inv = ldexp(1.0, -e);
  const int64_t magic = bits_of(MAGIC);
  const int32_t bound = fit_bound(e, limit);
  for (size_t i = 0; i < n; i++) {
    int32_t ok = (int32_t)(float_bits(v[i]) & 0x7fffffffu) < bound;
    int64_t q = wrap_sub(bits_of((double)v[i] * scale + MAGIC), magic) & -(int64_t)ok;
    if (two) {
      int32_t ok_w = (int32_t)(float_bits(w[i]) & 0x7fffffffu) < bound;
      q = wrap_add(q, wrap_sub(bits_of((double)w[i] * scale + MAGIC), magic) & -(int64_t)ok_w);
    } else {
      q += b[i];
    }
    uint64_t u = (uint64_t)q;
    int32_t hi = (int32_t)(uint32_t)(u >> 32), lo = (int32_t)(uint32_t)(u ^ 0x80000000u);
    out[i] = (float)(((double)hi * 4294967296.0 + ((double)lo + 2147483648.0)) * inv);
  }
}

WIDE void dp_reprosum_fixed_sum_to_f32(float *out, const float *v, const int64_t *b, size_t n, int e, double limit) {
  fixed_to_float(out, v, NULL, b, n, e, limit, 0);
}

WIDE void dp_reprosum_fixed2_to_f32(float *out, const float *v, const float *w, size_t n, int e, double limit) {
  fixed_to_float(out, v, w, NULL, n, e, limit, 1);
}

/* Up to this many ranks, a sum of one chunk a rank gathers the chunks (GATHER_RANKS · (1 + cap)
 * doubles at most) instead of making two collectives. */
enum { GATHER_RANKS = 64 };

int dp_reprosum_init(dp_reprosum *r, dp_comm *comm, int cap) {
  r->comm = comm;
  r->cap = cap;
  r->max = malloc(sizeof(double) * (size_t)cap);
  r->sum = malloc(sizeof(int64_t) * (size_t)cap);
  r->all = comm->size <= GATHER_RANKS ? malloc(sizeof(double) * (size_t)comm->size * (size_t)(1 + cap)) : NULL;
  if (!r->max || !r->sum || (comm->size <= GATHER_RANKS && !r->all))
    return dp_fail(DP_ENOMEM, "deterministic sums: cannot allocate %d elements", cap);
  return 0;
}

void dp_reprosum_free(dp_reprosum *r) {
  free(r->max);
  free(r->sum);
  free(r->all);
  memset(r, 0, sizeof *r);
}

/* out[j] from the gathered chunks: their maximum, the exponent and the integer sum as
 * dp_reprosum_chunks makes them from its two collectives. */
static void sum_gathered(const dp_reprosum *r, int n, int64_t n_terms, double *out) {
  const double *all = r->all;
  int P = r->comm->size;
  for (int j = 0; j < n; j++) {
    double m = 0.0;
    for (int q = 0; q < P; q++) {
      double a = fabs(all[(size_t)q * (1 + n) + 1 + j]);
      m = all[(size_t)q * (1 + n)] == 0.0 ? m : isfinite(a) ? (a > m ? a : m) : INFINITY;
    }
    int e = dp_reprosum_exponent(m, n_terms, 0);
    double scale = ldexp(1.0, e);
    int64_t s = 0;
    for (int q = 0; isfinite(m) && q < P; q++)
      if (all[(size_t)q * (1 + n)] != 0.0)
        s = wrap_add(s, wrap_sub(bits_of(all[(size_t)q * (1 + n) + 1 + j] * scale + MAGIC), bits_of(MAGIC)));
    out[j] = isfinite(m) ? dp_reprosum_value(s, e) : NAN;
  }
}

/* A rank's slot: whether it has a chunk, then the chunk. */
static int chunks_gathered(dp_reprosum *r, const double *x, int n_chunks, int n, int64_t n_terms, double *out) {
  double *mine = r->all + (size_t)r->comm->rank * (size_t)(1 + n);
  mine[0] = n_chunks > 0;
  if (n_chunks > 0)
    memcpy(mine + 1, x, sizeof(double) * (size_t)n);
  else
    memset(mine + 1, 0, sizeof(double) * (size_t)n);
  DP_TRY(dp_comm_allgather_f64(r->comm, mine, r->all, 1 + n));
  sum_gathered(r, n, n_terms, out);
  if (n_chunks > 1) /* after the collective: the caller agrees on it with the others */
    return dp_fail(DP_EINVAL, "deterministic sums: %d chunks on a rank, %lld in all on %d ranks", n_chunks,
                   (long long)n_terms, r->comm->size);
  return 0;
}

int dp_reprosum_chunks(dp_reprosum *r, const double *x, int n_chunks, int n, int64_t n_terms, double *out) {
  if (n > r->cap)
    return dp_fail(DP_EINVAL, "deterministic sums: %d elements, room for %d", n, r->cap);
  if (r->all && n_terms <= r->comm->size)
    return chunks_gathered(r, x, n_chunks, n, n_terms, out);
  /* A non-finite value makes its element's maximum +Inf: every rank then knows to give NaN. */
  for (int j = 0; j < n; j++) {
    double m = 0.0;
    for (int c = 0; c < n_chunks; c++) {
      double a = fabs(x[(size_t)c * n + j]);
      m = isfinite(a) ? (a > m ? a : m) : INFINITY;
    }
    r->max[j] = m;
  }
  DP_TRY(dp_comm_allreduce_max_f64(r->comm, r->max, n));
  for (int j = 0; j < n; j++) {
    /* v · 2^e as a product: 2^e is a normal double (|e| <= 1000), the same rounding as ldexp */
    double scale = ldexp(1.0, dp_reprosum_exponent(r->max[j], n_terms, 0));
    int64_t s = 0;
    for (int c = 0; isfinite(r->max[j]) && c < n_chunks; c++)
      s = wrap_add(s, wrap_sub(bits_of(x[(size_t)c * n + j] * scale + MAGIC), bits_of(MAGIC)));
    r->sum[j] = s;
  }
  DP_TRY(dp_comm_allreduce_i64(r->comm, r->sum, (size_t)n));
  for (int j = 0; j < n; j++)
    out[j] = isfinite(r->max[j]) ? dp_reprosum_value(r->sum[j], dp_reprosum_exponent(r->max[j], n_terms, 0)) : NAN;
  return 0;
}
