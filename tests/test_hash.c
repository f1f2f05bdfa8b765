/* h5u_hasher: a dataset hashed in pieces (rechunk and synthetic write them so) gets exactly the
 * h5u_hash64 of the whole, the value a reader that loads the split compares with, for any cut. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "../src/h5util.h"
#include "dptrain/rng.h"

static uint64_t in_pieces(const unsigned char *b, size_t n, dp_rng *r, size_t max_piece) {
  h5u_hasher h;
  h5u_hash_init(&h, n);
  for (size_t at = 0; at < n;) {
    size_t len = (size_t)dp_rng_below(r, max_piece + 1);
    if (len > n - at)
      len = n - at;
    h5u_hash_add(&h, b + at, len);
    at += len;
  }
  return h5u_hash_end(&h);
}

static void test_pieces_equal_whole(void **state) {
  (void)state;
  dp_rng r;
  dp_rng_seed(&r, 5, 0);
  unsigned char *b = malloc(5000);
  assert_non_null(b);
  for (size_t i = 0; i < 5000; i++)
    b[i] = (unsigned char)dp_rng_next(&r);
  size_t sizes[] = {0, 1, 7, 8, 9, 63, 64, 65, 1000, 4999, 5000};
  size_t pieces[] = {1, 3, 8, 13, 200, 6000};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
    for (size_t j = 0; j < sizeof pieces / sizeof *pieces; j++)
      assert_true(in_pieces(b, sizes[i], &r, pieces[j]) == h5u_hash64(b, sizes[i]));
  free(b);
}

/* The hash covers the length it was started with: the same bytes announced as another length differ. */
static void test_length_counts(void **state) {
  (void)state;
  unsigned char b[16] = {0};
  h5u_hasher h;
  h5u_hash_init(&h, 17);
  h5u_hash_add(&h, b, 16);
  assert_true(h5u_hash_end(&h) != h5u_hash64(b, 16));
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_pieces_equal_whole), cmocka_unit_test(test_length_counts)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
