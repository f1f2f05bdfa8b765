/* The validation rows of [data] val_fraction (include/dptrain/split.h): how many, which (a pure
 * function of n, fraction and seed), and the epoch order's filter. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"
#include "dptrain/split.h"

static void test_count_and_rows(void **state) {
  (void)state;
  static const struct {
    int64_t n;
    double fraction;
    int64_t want;
  } cases[] = {{1000, 0.2, 200}, {7, 0.1, 1}, {10, 0.25, 3}, {5, 0.0, 0}, {100000, 0.013, 1300}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    dp_val_split v;
    assert_int_equal(dp_val_split_make(&v, cases[c].n, cases[c].fraction, 1, "t.ini"), 0);
    assert_int_equal(v.n_val, cases[c].want);
    int64_t held = 0;
    for (int64_t i = 0; i < v.n_val; i++) {
      assert_true(v.rows[i] >= 0 && v.rows[i] < v.n);
      assert_true(i == 0 || v.rows[i] > v.rows[i - 1]); /* ascending, no repeats */
      assert_int_equal(v.held[v.rows[i]], 1);
    }
    for (int64_t i = 0; v.held && i < v.n; i++)
      held += v.held[i];
    assert_int_equal(held, v.n_val);
    dp_val_split_free(&v);
  }
}

/* The same (n, fraction, seed) always holds out the same rows; another seed others. */
static void test_deterministic(void **state) {
  (void)state;
  dp_val_split a, b, c;
  assert_int_equal(dp_val_split_make(&a, 5000, 0.1, 42, "t.ini"), 0);
  assert_int_equal(dp_val_split_make(&b, 5000, 0.1, 42, "t.ini"), 0);
  assert_int_equal(dp_val_split_make(&c, 5000, 0.1, 43, "t.ini"), 0);
  assert_memory_equal(a.rows, b.rows, sizeof(int64_t) * (size_t)a.n_val);
  assert_true(memcmp(a.rows, c.rows, sizeof(int64_t) * (size_t)a.n_val) != 0);
  /* spread over the whole set, not its start: a tenth of each half */
  int64_t low = 0;
  for (int64_t i = 0; i < a.n_val; i++)
    low += a.rows[i] < 2500;
  assert_true(low > 200 && low < 300);
  dp_val_split_free(&a);
  dp_val_split_free(&b);
  dp_val_split_free(&c);
}

/* The filter keeps the order of the rest and removes exactly the held-out rows. */
static void test_filter(void **state) {
  (void)state;
  enum { N = 300 };
  dp_val_split v;
  assert_int_equal(dp_val_split_make(&v, N, 0.3, 7, "t.ini"), 0);
  int64_t order[N];
  for (int i = 0; i < N; i++)
    order[i] = (int64_t)(N - 1 - i) * 7 % N; /* a permutation (7 and 300 are coprime) */
  int64_t kept = dp_val_split_filter(&v, order, N);
  assert_int_equal(kept, N - v.n_val);
  int64_t pos_prev = -1;
  for (int64_t i = 0; i < kept; i++) {
    assert_int_equal(v.held[order[i]], 0);
    int64_t pos = (N - 1) - (order[i] * 43 % N); /* 43 = 7^-1 mod 300: the row's place in the input */
    assert_true(pos > pos_prev);
    pos_prev = pos;
  }
  dp_val_split_free(&v);
  dp_val_split none;
  assert_int_equal(dp_val_split_make(&none, N, 0, 7, "t.ini"), 0);
  assert_null(none.held);
  assert_int_equal(dp_val_split_filter(&none, order, N), N);
}

static void test_nothing_left(void **state) {
  (void)state;
  dp_val_split v;
  assert_int_equal(dp_val_split_make(&v, 1, 0.5, 1, "t.ini"), DP_ECONFIG);
  assert_non_null(strstr(dp_errmsg(DP_ECONFIG), "t.ini: [data] val_fraction = 0.5 holds out all 1 training rows"));
  assert_null(v.held);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_count_and_rows),
      cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_filter),
      cmocka_unit_test(test_nothing_left),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
