/* The streaming reader: a thread per rank that reads, ahead of the trainer, the blocks of the
 * training set holding this rank's rows of the next steps into a bounded ring, so that a set read
 * from the file (order = blocks) trains at in-memory speed.
 *
 * It follows the trainer's own epoch order (dp_stream_order hands it the trainer's array; see
 * order.h) and the rank's shard of every global batch (dp_split_range, as the trainer takes it). A
 * block is read whole (blocks are the file's chunks), in ascending file order within a step, only
 * when it holds some of this rank's rows and is not in the ring already, and the file's identity is
 * checked before and after each read. Every HDF5 call it makes holds dp_h5_lock. A failure (the file
 * changed, a read error) is recorded with its message; the trainer's next dp_stream_acquire that the
 * reader cannot serve returns it, so the step fails on this rank and, through the step's allreduce,
 * on every rank — never a wait for a slot a dead reader will not fill. */
#ifndef DPTRAIN_STREAM_H
#define DPTRAIN_STREAM_H

#include <stdint.h>

#include "dptrain/data.h"

typedef struct dp_stream dp_stream;

typedef struct {
  dp_dataset *ds;          /* the training set (not held in memory); x is reopened without a cache */
  int64_t block_rows;      /* rows per block (the order's) */
  int64_t slots;           /* blocks the ring holds (dp_stream_slots) */
  int rank, size;          /* this rank's shard of each global batch */
  int64_t batch, steps_per_epoch, total_steps;
  int64_t epoch, pos, step; /* where the trainer is: the first step read is this one */
  int64_t max_rows;        /* the most rows of a shard */
} dp_stream_cfg;

/* Blocks a step's shard of `shard` rows may need at most in an unfiltered epoch order (window
 * blocks shuffled together; shuffle 0: rows in file order), of nblocks in all. */
int64_t dp_stream_slots_needed(int64_t shard, int64_t block_rows, int64_t window, int shuffle, int64_t nblocks);
/* Bytes of one ring slot: block_rows rows of x in the file's dtype and their labels or targets. */
double dp_stream_block_bytes(const dp_dataset *ds, int64_t block_rows);

/* 1 when the reader drops the file's cached pages behind it (dp_dataset_drop_cache): x is read
 * through HDF5 (not directly, src/direct.h) and the file is larger than half the memory the node's
 * ranks may use (dp_node_memory), so nothing it caches would be read again before being evicted, and
 * evicting costs the reading core. */
int dp_stream_drops_cache(const dp_dataset *ds);
/* Allocates the ring and starts the thread (all signals blocked there: they reach the main thread). */
int dp_stream_start(dp_stream **s, const dp_stream_cfg *c);
/* The order of epoch `epoch` (n rows): the reader plans that epoch's steps from rows, which must stay
 * unchanged until the trainer has released the epoch's last step. */
void dp_stream_order(dp_stream *s, int64_t epoch, const int64_t *rows, int64_t n);
/* Waits until `step` is in the ring, without taking it: 0, or the reader's error. */
int dp_stream_wait(dp_stream *s, int64_t step);
/* Waits until `step` (the trainer's next) is in the ring: 0 with *n its rows, or the reader's error
 * (DP_EDATA, DP_EIO, DP_ECONFIG) with its message. */
int dp_stream_acquire(dp_stream *s, int64_t step, int64_t *n);
/* Rows [c, c + nb) of the acquired step into x (nb, d) as the model's inputs (dp_dataset_convert_rows)
 * and labels (nb) or targets (nb, k). */
void dp_stream_copy(const dp_stream *s, int64_t c, int nb, float *x, int32_t *labels, float *targets);
/* The trainer is done with the acquired step: its blocks may be replaced. */
void dp_stream_release(dp_stream *s);
/* Stops and joins the thread, frees everything; s may be NULL. */
void dp_stream_stop(dp_stream *s);

#endif
