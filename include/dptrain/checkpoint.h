/* HDF5 checkpoints: everything needed to continue a run exactly, written so that a run killed at
 * any moment never loses its last complete checkpoint.
 *
 * Layout (docs/checkpoint-format.md): /model/layer<i>/{weight,bias} float32 [out, in], [out];
 * /optimizer/<slot>/layer<i>/{weight,bias} in the same shapes (momentum, m, v, ...);
 * /optimizer/lbfgs/... for L-BFGS; /config the effective configuration text; metadata as
 * attributes of the root group. Every dataset carries HDF5's Fletcher32 checksum.
 *
 * Writing: rank 0 writes <dir>/ckpt-<step>.h5.tmp, fsyncs it, renames it to ckpt-<step>.h5 and
 * fsyncs the directory. A name without .tmp is therefore always complete. */
#ifndef DPTRAIN_CHECKPOINT_H
#define DPTRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dptrain/train.h"

#define DP_CKPT_FORMAT "dptrain-checkpoint"
#define DP_CKPT_VERSION 1

/* Run state that lives outside the trainer: the open logging interval, so that a resumed run logs
 * the same metrics.jsonl lines as an uninterrupted one. */
typedef struct {
  double interval_loss, interval_acc; /* sums over the interval's steps */
  int64_t interval_steps, interval_samples;
} dp_ckpt_extra;

/* Writes the trainer's state as <dir>/ckpt-<step>.h5 (atomically) and then removes all but the
 * keep_last newest (0 = keep all). Rank 0 only; the path written goes to path (may be NULL).
 * On failure the temp file is removed and earlier checkpoints are untouched. */
int dp_ckpt_save(const dp_trainer *t, const char *dir, const dp_ckpt_extra *x, int keep_last, char *path,
                 size_t path_len);

/* The newest complete checkpoint in dir into path: 0, or 1 when there is none (or no dir). */
int dp_ckpt_latest(const char *dir, char *path, size_t path_len);

/* Restores the trainer from a checkpoint: rank 0 reads and validates it against the trainer's
 * model and optimizer (format, version, checksums, layer shapes, optimizer kind), then every rank
 * receives the state. Collective; every rank returns the same status. */
int dp_ckpt_load(dp_trainer *t, const char *path, dp_ckpt_extra *x);

/* Reads only /model into m (for [model] init_from and `dptrain eval`): shapes must match. Rank-local. */
int dp_ckpt_load_weights(dp_model *m, const char *path);

/* `dptrain inspect`: format, step, epoch, world size, optimizer, layers, config. */
int dp_ckpt_inspect(const char *path, FILE *out);

/* The configuration text stored in a checkpoint, into buf (NUL-terminated). */
int dp_ckpt_config_text(const char *path, char *buf, size_t len);

#endif
