/* dp_blas_share: a rank's BLAS threads are its cores, a core held by k ranks' masks counting 1/k
 * (at least one thread), so ranks that share cores never start more threads than there are cores. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "dptrain/blas.h"

/* Two words per mask: CPUs 0..127. */
enum { W = 2 };

/* Unbound ranks on a 2-core node: each of the two cores is held by both, one thread each. */
static void test_unbound_share(void **state) {
  (void)state;
  uint64_t m[2 * W] = {0x3, 0, 0x3, 0};
  assert_int_equal(dp_blas_share(m, W, 2, 0), 1);
  assert_int_equal(dp_blas_share(m, W, 2, 1), 1);
  assert_int_equal(dp_blas_share(m, W, 1, 0), 2); /* one rank alone gets both */
}

/* --bind-to core: one core each, never shared, one thread. */
static void test_bound_to_core(void **state) {
  (void)state;
  uint64_t m[4 * W] = {0x1, 0, 0x2, 0, 0x4, 0, 0x8, 0};
  for (int r = 0; r < 4; r++)
    assert_int_equal(dp_blas_share(m, W, 4, r), 1);
}

/* ppr:2:node:pe=8 on 16 cores, the second rank's cores above 64: 8 threads each. */
static void test_cores_per_rank(void **state) {
  (void)state;
  uint64_t m[2 * W] = {0xff, 0, 0, 0xff};
  assert_int_equal(dp_blas_share(m, W, 2, 0), 8);
  assert_int_equal(dp_blas_share(m, W, 2, 1), 8);
}

/* More ranks than cores (3 on 2) still get one thread; an overlap counts only the shared part. */
static void test_oversubscribed_and_overlap(void **state) {
  (void)state;
  uint64_t over[3 * W] = {0x3, 0, 0x3, 0, 0x3, 0};
  for (int r = 0; r < 3; r++)
    assert_int_equal(dp_blas_share(over, W, 3, r), 1);
  /* rank 0 holds cores 0-3, rank 1 cores 2-3: 2 + 2 * 1/2 = 3 threads, and 1 */
  uint64_t part[2 * W] = {0xf, 0, 0xc, 0};
  assert_int_equal(dp_blas_share(part, W, 2, 0), 3);
  assert_int_equal(dp_blas_share(part, W, 2, 1), 1);
}

/* An empty mask (the kernel said nothing) still gives one thread. */
static void test_empty_mask(void **state) {
  (void)state;
  uint64_t m[W] = {0, 0};
  assert_int_equal(dp_blas_share(m, W, 1, 0), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unbound_share),
      cmocka_unit_test(test_bound_to_core),
      cmocka_unit_test(test_cores_per_rank),
      cmocka_unit_test(test_oversubscribed_and_overlap),
      cmocka_unit_test(test_empty_mask),
  };
  return cmocka_run_group_tests_name("blas", tests, NULL, NULL);
}
