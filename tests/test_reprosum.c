/* The exact sum of [train] deterministic (include/dptrain/reprosum.h):
 * - the same int64 sums and floats for every order and grouping of the terms (random permutations,
 *   random splits into partial sums added afterwards, as ranks do);
 * - close to the true sum; zeros, denormals, ±large values that cancel, the limit and the exponent's
 *   guarantee, ties to even;
 * - NaN and ±Inf add nothing, are counted, and do not change the maximum; the collective sum (one
 *   rank) turns them into NaN;
 * - the conversion back with a last term added on the way, or with floats converted only as they are
 *   added, gives the same floats. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"
#include "dptrain/reprosum.h"

enum { TERMS = 37, LEN = 301 };

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t next_u64(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}
/* Signed values over 40 binades: the cancellations and magnitudes of gradients. */
static float random_value(void) {
  double u = (double)(next_u64() >> 11) / 9007199254740992.0;
  int exp = (int)(next_u64() % 40) - 30;
  return (float)((next_u64() & 1 ? -1 : 1) * ldexp(0.5 + u / 2, exp));
}

static float terms[TERMS][LEN];

static float max_of_all(void) {
  float mx = 0.0f;
  for (int c = 0; c < TERMS; c++)
    for (int j = 0; j < LEN; j++)
      mx = fabsf(terms[c][j]) > mx ? fabsf(terms[c][j]) : mx;
  return mx;
}

/* Adds the terms in the order given, split into `groups` partial sums that are added at the end. */
static void sum_in(const int *order, int groups, int e, int64_t *out) {
  static int64_t part[TERMS][LEN];
  memset(part, 0, sizeof part);
  double limit = dp_reprosum_limit(TERMS);
  for (int i = 0; i < TERMS; i++) {
    float mx = 0.0f;
    int g = (int)(next_u64() % (uint64_t)groups);
    assert_int_equal(dp_reprosum_add_f32(part[g], terms[order[i]], LEN, e, limit, &mx), 0);
  }
  memset(out, 0, sizeof(int64_t) * LEN);
  for (int g = groups - 1; g >= 0; g--)
    for (int j = 0; j < LEN; j++)
      out[j] += part[g][j];
}

static void test_order_and_grouping_independent(void **state) {
  (void)state;
  for (int c = 0; c < TERMS; c++)
    for (int j = 0; j < LEN; j++)
      terms[c][j] = random_value();
  int e = dp_reprosum_exponent(max_of_all(), TERMS, 0), order[TERMS];
  for (int i = 0; i < TERMS; i++)
    order[i] = i;
  int64_t ref[LEN], got[LEN];
  sum_in(order, 1, e, ref);
  float ref_f[LEN], got_f[LEN];
  dp_reprosum_to_f32(ref_f, ref, LEN, e);
  for (int trial = 0; trial < 50; trial++) {
    for (int i = TERMS - 1; i > 0; i--) {
      int k = (int)(next_u64() % (uint64_t)(i + 1)), tmp = order[i];
      order[i] = order[k], order[k] = tmp;
    }
    sum_in(order, 1 + trial % 7, e, got);
    assert_memory_equal(got, ref, sizeof ref);
    dp_reprosum_to_f32(got_f, got, LEN, e);
    assert_memory_equal(got_f, ref_f, sizeof ref_f);
  }
  /* ... and as accurate as a float can be: the double sum differs by far less than the float's ulp. */
  for (int j = 0; j < LEN; j++) {
    double s = 0.0;
    for (int c = 0; c < TERMS; c++)
      s += terms[c][j];
    assert_true(fabs((double)ref_f[j] - s) <= fabs(s) * 1.2e-7 + ldexp(1.0, -e) * TERMS);
  }
}

static void test_zeros_denormals_large(void **state) {
  (void)state;
  float v[4] = {0.0f, -0.0f, 1e-45f, 3e-45f}, mx = 0.0f, out[4];
  int64_t acc[4] = {0};
  int e = dp_reprosum_exponent(3e-45, 8, 0);
  for (int k = 0; k < 8; k++)
    assert_int_equal(dp_reprosum_add_f32(acc, v, 4, e, dp_reprosum_limit(8), &mx), 0);
  dp_reprosum_to_f32(out, acc, 4, e);
  assert_true(out[0] == 0.0f && out[1] == 0.0f);
  assert_true(out[2] == 8 * 1e-45f && out[3] == 8 * 3e-45f); /* denormals are exact */
  assert_true(mx == 3e-45f);
  /* Huge values of both signs cancel exactly, leaving the small ones. */
  float big[3] = {3e38f, -3e38f, 1.0f};
  int64_t a2[1] = {0};
  mx = 0.0f;
  int eb = dp_reprosum_exponent(3e38, 3, 0);
  for (int k = 0; k < 3; k++)
    assert_int_equal(dp_reprosum_add_f32(a2, &big[k], 1, eb, dp_reprosum_limit(3), &mx), 0);
  assert_true(mx == 3e38f);
  float r;
  dp_reprosum_to_f32(&r, a2, 1, eb);
  assert_true(r == 0.0f); /* 1 is far below 3e38's resolution: rounded away, alike in every order */
}

static void test_nonfinite_counted(void **state) {
  (void)state;
  float v[5] = {1.0f, NAN, INFINITY, -INFINITY, 2.0f}, mx = 0.0f;
  int64_t acc[5] = {0};
  int e = dp_reprosum_exponent(2.0, 1, 0);
  assert_int_equal(dp_reprosum_add_f32(acc, v, 5, e, dp_reprosum_limit(1), &mx), 3);
  assert_true(mx == 2.0f); /* the largest finite value */
  assert_true(acc[1] == 0 && acc[2] == 0 && acc[3] == 0);
  /* A value beyond the exponent's range is counted, not added: the caller redoes with a larger one. */
  float w = 5.0f;
  int64_t a = 0;
  assert_int_equal(dp_reprosum_add_f32(&a, &w, 1, e, dp_reprosum_limit(1), &mx), 1);
  assert_true(a == 0 && mx == 5.0f);
}

static void test_limit_and_exponent(void **state) {
  (void)state;
  assert_true(dp_reprosum_limit(1) == ldexp(1.0, 51));
  assert_true(dp_reprosum_limit(2048) == ldexp(1.0, 51));
  assert_true(dp_reprosum_limit(4096) == ldexp(1.0, 50));
  assert_true(dp_reprosum_limit((int64_t)1 << 30) == ldexp(1.0, 32));
  assert_int_equal(dp_reprosum_exponent(0.0, 10, 0), 0);
  assert_int_equal(dp_reprosum_exponent(NAN, 10, 0), 0);
  double maxes[] = {1.0, 0.75, 1e-30, 3e38, 1e-300, 7.0};
  for (size_t i = 0; i < sizeof maxes / sizeof maxes[0]; i++)
    for (int h = 0; h <= 8; h += 8) {
      int e = dp_reprosum_exponent(maxes[i], 1000, h);
      double top = ldexp(maxes[i], e + h);
      assert_true(top < dp_reprosum_limit(1000));
      assert_true(top >= dp_reprosum_limit(1000) / 2 || e == 1000); /* no bit wasted */
    }
}

static void test_fixed_rounds_to_even(void **state) {
  (void)state;
  assert_true(dp_reprosum_fixed(2.5, 0) == 2 && dp_reprosum_fixed(3.5, 0) == 4);
  assert_true(dp_reprosum_fixed(-2.5, 0) == -2 && dp_reprosum_fixed(-0.75, 1) == -2);
  assert_true(dp_reprosum_fixed(ldexp(1.0, 50) + 1, 0) == ((int64_t)1 << 50) + 1);
  assert_true(dp_reprosum_value(3, 1) == 1.5 && dp_reprosum_value(-((int64_t)1 << 62), 62) == -1.0);
  /* Back to float: rounded once from the exact integer, for either sign and any size. */
  int64_t big[6] = {-((int64_t)1 << 62) + 12345, ((int64_t)1 << 62) - 1, -1, 0, ((int64_t)1 << 40) + 3, -123456789};
  float f[6];
  dp_reprosum_to_f32(f, big, 6, 20);
  for (int i = 0; i < 6; i++)
    assert_true(f[i] == (float)ldexp((double)big[i], -20));
  float v = 2.5f, mx = 0.0f;
  int64_t a = 0;
  dp_reprosum_add_f32(&a, &v, 1, 0, dp_reprosum_limit(1), &mx);
  assert_true(a == 2);
  a = 99; /* the first term stores */
  dp_reprosum_set_f32(&a, &v, 1, 0, dp_reprosum_limit(1), &mx);
  assert_true(a == 2);
}

/* A sum's last term added as the floats are made (the reduce-scatter's last step): the same floats
 * as converting the finished sum, and as the scalar conversion, on whichever clone this CPU runs. */
static void test_sum_to_f32(void **state) {
  (void)state;
  enum { N = 1000 };
  static int64_t a[N], b[N], ab[N];
  static float got[N], ref[N];
  for (int i = 0; i < N; i++) {
    a[i] = (int64_t)(next_u64() >> (i % 40 + 13)) * (i % 3 ? 1 : -1);
    b[i] = (int64_t)(next_u64() >> (i % 29 + 14)) * (i % 5 ? -1 : 1);
    ab[i] = a[i] + b[i];
  }
  for (int e = -30; e <= 60; e += 45) {
    dp_reprosum_sum_to_f32(got, a, b, N, e);
    dp_reprosum_to_f32(ref, ab, N, e);
    assert_memory_equal(got, ref, sizeof got);
    for (int i = 0; i < N; i++)
      assert_true(got[i] == (float)dp_reprosum_value(ab[i], e));
  }
}

/* Floats converted only as they are added (the exchange of floats, a rank's own slice): the same
 * floats as storing their integers first; the scan counts and measures as the store does. */
static void test_fixed_then_added(void **state) {
  (void)state;
  enum { N = 777 };
  static float v[N], w[N], got[N], ref[N];
  static int64_t a[N], b[N];
  for (int i = 0; i < N; i++)
    v[i] = random_value(), w[i] = random_value(); /* below 2^10 */
  v[5] = NAN, w[9] = INFINITY, v[11] = 1e30f; /* do not fit: they add nothing */
  int e = dp_reprosum_exponent(1024.0, 2, 0);
  double limit = dp_reprosum_limit(2);
  float m_set = 0.0f, m_scan = 0.0f, m_w = 0.0f;
  size_t bad_set = dp_reprosum_set_f32(a, v, N, e, limit, &m_set);
  assert_int_equal(dp_reprosum_scan_f32(v, N, e, limit, &m_scan), bad_set);
  assert_true(bad_set == 2 && m_scan == m_set);
  dp_reprosum_set_f32(b, w, N, e, limit, &m_w);
  dp_reprosum_sum_to_f32(ref, a, b, N, e);
  dp_reprosum_fixed_sum_to_f32(got, v, b, N, e, limit);
  assert_memory_equal(got, ref, sizeof got);
  dp_reprosum_fixed2_to_f32(got, v, w, N, e, limit);
  assert_memory_equal(got, ref, sizeof got);
  memcpy(got, v, sizeof got); /* in place, as on the gradient block */
  dp_reprosum_fixed_sum_to_f32(got, got, b, N, e, limit);
  assert_memory_equal(got, ref, sizeof got);
}

/* The collective at one rank: per-element exponents, NaN for an element with a non-finite term. */
static void test_chunks_collective(void **state) {
  (void)state;
  dp_comm comm;
  assert_int_equal(dp_comm_init(&comm, MPI_COMM_WORLD), 0);
  dp_reprosum r;
  assert_int_equal(dp_reprosum_init(&r, &comm, 3), 0);
  double x[4][3] = {{1e-20, 1e20, 1.0}, {3e-20, -1e20, NAN}, {-1e-20, 5.0, 2.0}, {0.0, 0.0, 0.0}};
  double out[3], again[3];
  assert_int_equal(dp_reprosum_chunks(&r, &x[0][0], 4, 3, 4, out), 0);
  assert_true(fabs(out[0] - 3e-20) < 1e-33); /* the small element keeps its own precision */
  assert_true(out[1] == 0.0); /* 5 is below the resolution of 1e20 - 1e20 */
  assert_true(isnan(out[2]));
  /* The same chunks in another order: the same bits. */
  double y[4][3];
  for (int c = 0; c < 4; c++)
    memcpy(y[c], x[3 - c], sizeof y[c]);
  assert_int_equal(dp_reprosum_chunks(&r, &y[0][0], 4, 3, 4, again), 0);
  assert_memory_equal(out, again, 2 * sizeof(double));
  assert_int_equal(dp_reprosum_chunks(&r, &x[0][0], 4, 4, 4, out), DP_EINVAL);
  dp_reprosum_free(&r);
  dp_comm_free(&comm);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_order_and_grouping_independent), cmocka_unit_test(test_zeros_denormals_large),
      cmocka_unit_test(test_nonfinite_counted),              cmocka_unit_test(test_limit_and_exponent),
      cmocka_unit_test(test_fixed_rounds_to_even),           cmocka_unit_test(test_chunks_collective),
      cmocka_unit_test(test_sum_to_f32),                     cmocka_unit_test(test_fixed_then_added),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  MPI_Finalize();
  return rc;
}
