/* HDF5 checkpoints of a training state (dp_state): everything registered there, written so that a
 * run killed at any moment never loses its last complete checkpoint.
 *
 * Layout (docs/checkpoint-format.md): each registered tensor is a dataset at its name
 * (/model/layer<i>/weight, /optimizer/m/layer<i>/weight, /optimizer/lbfgs/s, ...), each scalar an
 * attribute of its group; the file's own metadata (format, version, created) on the root group.
 * Every dataset carries HDF5's Fletcher32 checksum.
 *
 * Writing: rank 0 writes <dir>/ckpt-<step>.h5 through the durable writer (a .tmp file, fsynced and
 * renamed). A name without .tmp is therefore always complete. */
#ifndef DPTRAIN_CHECKPOINT_H
#define DPTRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dptrain/comm.h"
#include "dptrain/state.h"

#define DP_CKPT_FORMAT "dptrain-checkpoint"
#define DP_CKPT_VERSION 1

/* Writes every entry of s as <dir>/ckpt-<step>.h5 (atomically) and then removes all but the
 * keep_last newest (0 = keep all). Rank 0 only; the path written goes to path (may be NULL). On
 * failure the temp file is removed and earlier checkpoints are untouched. */
int dp_ckpt_save(const dp_state *s, const char *dir, int64_t step, int keep_last, char *path, size_t path_len);
/* The same written as <dir>/<name> (best.h5), just as atomically; keep_last never removes it and
 * --resume auto never picks it. */
int dp_ckpt_save_as(const dp_state *s, const char *dir, const char *name, char *path, size_t path_len);

/* The newest complete checkpoint in dir: *found = 0 when there is none (or no dir). */
int dp_ckpt_latest(const char *dir, char *path, size_t path_len, int *found);

/* Reads the entries of s selected by mask (0: the whole state, DP_ST_MODEL: the model's weights,
 * from any file with that layout) from path, validating before it changes anything: format and
 * version (whole state), every selected scalar's presence and range, the registered checks, every
 * tensor's shape, then every checksum. Rank-local. */
int dp_ckpt_read(dp_state *s, const char *path, unsigned mask);

/* dp_ckpt_read on rank 0, then every rank receives the state. Collective; every rank returns the
 * same status. */
int dp_ckpt_load(dp_state *s, const char *path, unsigned mask, dp_comm *c);

/* `dptrain inspect`: format, step, epoch, world size, optimizer, layers, config. */
int dp_ckpt_inspect(const char *path, FILE *out);

/* The configuration text stored in a checkpoint, into buf (NUL-terminated). */
int dp_ckpt_config_text(const char *path, char *buf, size_t len);

#endif
