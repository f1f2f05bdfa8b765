/* The order in which an epoch visits the training rows: a pure function of (seed, epoch, n, and the
 * order's settings), never of the rank count, so every rank — and a run resumed at another rank
 * count — computes the same order without a message, and a global batch is a contiguous slice of it.
 *
 * random: a Fisher-Yates permutation of all rows (the order dptrain always had).
 * blocks: the rows are cut into blocks of block_rows consecutive rows (the file's chunks), the
 * blocks are permuted, and the rows are shuffled within each window of `window` consecutive blocks
 * of that permutation. A streaming reader then needs only a window's blocks at a time, each read
 * whole and once per epoch.
 *
 * One place owns the epoch's list: the trainer (train.c, draw_order) fills its array with
 * dp_order_epoch and hands that same array to the reader (dp_stream_order), which follows it row
 * for row. Anything that changes the list — removing held-out rows, say — is applied to that array
 * there, and the reader follows it without knowing. */
#ifndef DPTRAIN_ORDER_H
#define DPTRAIN_ORDER_H

#include <stdint.h>

typedef struct {
  uint64_t seed;
  int shuffle;        /* 0: the rows in file order every epoch (both kinds) */
  int blocks;         /* 1: the block order, 0: random */
  int64_t block_rows; /* blocks: rows per block (>= 1; the last block may be shorter) */
  int64_t window;     /* blocks: blocks whose rows are shuffled together (>= 1) */
} dp_order;

/* Writes epoch's order of the rows 0..n-1 into out[0..n). */
void dp_order_epoch(const dp_order *o, int64_t epoch, int64_t n, int64_t *out);

#endif
