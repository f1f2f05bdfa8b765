/* The epochs' row orders (include/dptrain/order.h): random is the permutation dptrain always drew;
 * blocks is a permutation of all rows whose windows are whole blocks; both depend on (seed, epoch)
 * only; the reader's ring bound covers every shard of an epoch. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dptrain/comm.h"
#include "dptrain/order.h"
#include "dptrain/rng.h"
#include "dptrain/stream.h"

/* The permutation draw_permutation in train.c drew before order.c existed. */
static void old_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *p) {
  for (int64_t i = 0; i < n; i++)
    p[i] = i;
  dp_rng rng;
  dp_rng_seed(&rng, seed, 0x5eed0000ULL + (uint64_t)epoch);
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)dp_rng_below(&rng, (uint64_t)i + 1), t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
}

static void test_random_is_the_old_permutation(void **state) {
  (void)state;
  int64_t n = 1000, a[1000], b[1000];
  dp_order o = {.seed = 7, .shuffle = 1, .blocks = 0, .block_rows = 10, .window = 4};
  for (int64_t e = 0; e < 3; e++) {
    dp_order_epoch(&o, e, n, a);
    old_permutation(7, e, n, b);
    assert_memory_equal(a, b, sizeof a);
  }
}

static void assert_permutation(const int64_t *p, int64_t n) {
  char *seen = calloc((size_t)n, 1);
  for (int64_t i = 0; i < n; i++) {
    assert_true(p[i] >= 0 && p[i] < n);
    assert_false(seen[p[i]]);
    seen[p[i]] = 1;
  }
  free(seen);
}

/* Each window holds whole blocks, at most `window` of them, and all but the last exactly that many. */
static void assert_windows(const int64_t *p, int64_t n, int64_t br, int64_t window) {
  int64_t nb = (n + br - 1) / br, *count = calloc((size_t)nb, sizeof *count);
  for (int64_t pos = 0; pos < n;) {
    int64_t blocks = 0, rows = 0, whole = 0, i = pos;
    for (; i < n; i++) {
      int64_t b = p[i] / br, size = b == nb - 1 ? n - b * br : br;
      if (count[b] == 0) {
        if (blocks == window)
          break; /* a new block: the window must be complete here */
        blocks++;
        whole += size;
      }
      count[b]++;
      rows++;
      if (blocks == window && rows == whole) {
        i++;
        break;
      }
    }
    assert_int_equal(rows, whole); /* every block of the window complete within it */
    assert_true(blocks == window || i == n);
    pos = i;
  }
  free(count);
}

static void test_blocks_permute_whole_blocks_in_windows(void **state) {
  (void)state;
  const int64_t cases[][3] = {{1000, 10, 4}, {1003, 10, 4}, {997, 33, 1}, {50, 7, 16}, {64, 1, 8}, {5, 10, 2}};
  int64_t *p = malloc(1003 * sizeof *p);
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    dp_order o = {.seed = 3, .shuffle = 1, .blocks = 1, .block_rows = cases[c][1], .window = cases[c][2]};
    for (int64_t e = 0; e < 3; e++) {
      dp_order_epoch(&o, e, cases[c][0], p);
      assert_permutation(p, cases[c][0]);
      assert_windows(p, cases[c][0], cases[c][1], cases[c][2]);
    }
  }
  free(p);
}

static void test_orders_depend_on_seed_and_epoch_only(void **state) {
  (void)state;
  int64_t n = 2000, *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
  for (int blocks = 0; blocks < 2; blocks++) {
    dp_order o = {.seed = 11, .shuffle = 1, .blocks = blocks, .block_rows = 50, .window = 4};
    dp_order_epoch(&o, 2, n, a);
    dp_order_epoch(&o, 2, n, b);
    assert_memory_equal(a, b, n * sizeof *a);
    dp_order_epoch(&o, 3, n, b);
    assert_memory_not_equal(a, b, n * sizeof *a);
    o.seed = 12;
    dp_order_epoch(&o, 2, n, b);
    assert_memory_not_equal(a, b, n * sizeof *a);
    o.shuffle = 0;
    dp_order_epoch(&o, 2, n, b);
    for (int64_t i = 0; i < n; i++)
      assert_int_equal(b[i], i);
  }
  free(a);
  free(b);
}

/* The ring's size check: no shard of any step, at 1 to 3 ranks, needs more blocks than the bound. */
static void test_ring_bound_covers_every_shard(void **state) {
  (void)state;
  const int64_t n = 3001, *sizes = (const int64_t[]){1, 7, 64, 256, 1000};
  int64_t *p = malloc(n * sizeof *p), nb_max = n;
  char *mark = malloc((size_t)nb_max);
  for (int s = 0; s < 5; s++)
    for (int64_t br = 1; br <= 100; br *= 10)
      for (int64_t w = 1; w <= 16; w *= 4)
        for (int shuffle = 0; shuffle < 2; shuffle++) {
          dp_order o = {.seed = 5, .shuffle = shuffle, .blocks = 1, .block_rows = br, .window = w};
          int64_t B = sizes[s], nb = (n + br - 1) / br;
          dp_order_epoch(&o, 1, n, p);
          for (int ranks = 1; ranks <= 3; ranks++) {
            int64_t bound = dp_stream_slots_needed((B + ranks - 1) / ranks, br, w, shuffle, nb);
            for (int64_t g0 = 0; g0 < n; g0 += B)
              for (int r = 0; r < ranks; r++) {
                int64_t lo, hi, g1 = g0 + B < n ? g0 + B : n, used = 0;
                dp_split_range(g1 - g0, r, ranks, &lo, &hi);
                memset(mark, 0, (size_t)nb);
                for (int64_t i = g0 + lo; i < g0 + hi; i++)
                  used += !mark[p[i] / br], mark[p[i] / br] = 1;
                if (used > bound)
                  fail_msg("B %lld, block_rows %lld, window %lld, shuffle %d, %d ranks: a shard needs %lld blocks, "
                           "bound %lld", (long long)B, (long long)br, (long long)w, shuffle, ranks, (long long)used,
                           (long long)bound);
              }
          }
        }
  free(p);
  free(mark);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_random_is_the_old_permutation),
      cmocka_unit_test(test_blocks_permute_whole_blocks_in_windows),
      cmocka_unit_test(test_orders_depend_on_seed_and_epoch_only),
      cmocka_unit_test(test_ring_bound_covers_every_shard),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
