/* The streaming reader (src/stream.c) against the order it follows: for blocks, windows, rings from
 * the smallest a step allows to the whole set, ranks 0..2 of 3, two epochs and an order with rows
 * left out (as held-out rows are), every step's copied rows are the rows of the order, in its
 * order, with their labels. The file's x holds each row's own index. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dptrain/comm.h"
#include "dptrain/data.h"
#include "dptrain/order.h"
#include "dptrain/stream.h"

enum { N = 1000, D = 3, B = 40 };
static char path[64];

static int setup(void **state) {
  (void)state;
  char dir[] = "/tmp/dptrain-stream-XXXXXX";
  if (!mkdtemp(dir))
    return -1;
  snprintf(path, sizeof path, "%s/s.h5", dir);
  float *x = malloc(sizeof(float) * N * D);
  int32_t *y = malloc(sizeof(int32_t) * N);
  for (int i = 0; i < N; i++) {
    for (int j = 0; j < D; j++)
      x[i * D + j] = (float)(i * 10 + j);
    y[i] = i % 7;
  }
  dp_split_view v = {.n = N, .d = D, .x_u8 = 0, .x = x, .scale = 1.0f, .labels = y, .k = 1};
  int rc = dp_data_write(path, &v, NULL);
  free(x);
  free(y);
  return rc;
}

static int teardown(void **state) {
  (void)state;
  unlink(path);
  *strrchr(path, '/') = '\0';
  rmdir(path);
  return 0;
}

/* Every other row of each block of 30 left out of the order, as a filter would leave gaps. */
static int64_t drop_some(int64_t *rows, int64_t n) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++)
    if (rows[i] % 30 != 7)
      rows[m++] = rows[i];
  return m;
}

static void check_run(dp_dataset *ds, int64_t br, int64_t window, int64_t slots, int rank, int size, int gaps) {
  dp_order o = {.seed = 9, .shuffle = 1, .blocks = 1, .block_rows = br, .window = window};
  int64_t *ord[2] = {malloc(sizeof(int64_t) * N), malloc(sizeof(int64_t) * N)}, n[2];
  for (int e = 0; e < 2; e++) {
    dp_order_epoch(&o, e, N, ord[e]);
    n[e] = gaps ? drop_some(ord[e], N) : N;
  }
  int64_t spe = (n[0] + B - 1) / B, max_rows = (B + size - 1) / size;
  dp_stream_cfg c = {.ds = ds, .block_rows = br, .slots = slots, .rank = rank, .size = size, .batch = B,
                     .steps_per_epoch = spe, .total_steps = 2 * spe, .epoch = 0, .pos = 0, .step = 0,
                     .max_rows = max_rows};
  dp_stream *s;
  assert_int_equal(dp_stream_start(&s, &c), 0);
  dp_stream_order(s, 0, ord[0], n[0]);
  dp_stream_order(s, 1, ord[1], n[1]);
  float x[B * D];
  int32_t y[B];
  for (int64_t step = 0; step < 2 * spe; step++) {
    int64_t e = step / spe, g0 = (step % spe) * B, g1 = g0 + B < n[e] ? g0 + B : n[e], lo, hi, got = -1;
    dp_split_range(g1 - g0, rank, size, &lo, &hi);
    assert_int_equal(dp_stream_acquire(s, step, &got), 0);
    assert_int_equal(got, hi - lo);
    dp_stream_copy(s, 0, (int)got, x, y, NULL);
    for (int64_t i = 0; i < got; i++) {
      int64_t want = ord[e][g0 + lo + i];
      if (x[i * D] != (float)(want * 10) || x[i * D + D - 1] != (float)(want * 10 + D - 1) || y[i] != want % 7)
        fail_msg("block_rows %lld, window %lld, %lld slots, rank %d of %d%s: step %lld row %lld: got %g (label %d), "
                 "want row %lld", (long long)br, (long long)window, (long long)slots, rank, size,
                 gaps ? ", gaps" : "", (long long)step, (long long)i, x[i * D], y[i], (long long)want);
    }
    dp_stream_release(s);
  }
  dp_stream_stop(s);
  free(ord[0]);
  free(ord[1]);
}

static void test_rows_follow_the_order(void **state) {
  (void)state;
  dp_dataset ds;
  assert_int_equal(dp_dataset_open(&ds, path, "train", NULL), 0);
  const int64_t cases[][2] = {{10, 4}, {7, 1}, {64, 2}, {1, 16}, {300, 3}};
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
    for (int size = 1; size <= 3; size++)
      for (int gaps = 0; gaps < 2; gaps++) {
        int64_t br = cases[k][0], w = cases[k][1], nb = (N + br - 1) / br;
        /* held-out rows lengthen a shard's span, as train.c's ring plan allows for */
        int64_t need = dp_stream_slots_needed((B + size - 1) / size + (gaps ? N / 30 + 1 : 0), br, w, 1, nb);
        int64_t shard = (B + size - 1) / size;
        need = need < shard ? need : shard;
        for (int64_t slots = need; slots <= nb; slots = slots * 3 > nb && slots < nb ? nb : slots * 3)
          for (int rank = 0; rank < size; rank++)
            check_run(&ds, br, w, slots, rank, size, gaps);
      }
  dp_dataset_close(&ds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rows_follow_the_order),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
