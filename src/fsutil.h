/* Files that are either wholly written or not there: the one tmp + fsync + rename writer (private to
 * src/), used by checkpoints, `dptrain convert`, the run's config.ini, metrics.jsonl rewrites and the
 * timeline. */
#ifndef DPTRAIN_FSUTIL_H
#define DPTRAIN_FSUTIL_H

#include <stdio.h>

#include "dptrain/config.h" /* DP_FILE_PATH_MAX */

/* Writes `path` durably: fill(tmp, ctx) writes the whole file at tmp ("<path>.tmp", by any means:
 * stdio, HDF5), then the temp file is fsynced, renamed over path and the directory fsynced. On any
 * failure the temp file is removed, path is untouched, and the message names the file and `what`
 * ("the checkpoint"). fill returns 0 or a DP_E code (errno may tell why). */
int dp_write_durable(const char *path, const char *what, int (*fill)(const char *tmp, void *ctx), void *ctx);

/* The same, with fill writing to an open stdio stream. */
int dp_write_durable_stdio(const char *path, const char *what, int (*fill)(FILE *f, void *ctx), void *ctx);

struct stat;
/* Refuses, before anything opens it, a path that is not a readable regular file (a FIFO would block
 * the open forever): err with "<path>: <what> must be a regular file, this is a FIFO". st (may be
 * NULL) receives the file's stat. */
int dp_check_regular(const char *path, const char *what, int err, struct stat *st);

#endif
