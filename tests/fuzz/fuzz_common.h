/* Shared helpers for the fuzz targets (tests/fuzz/fuzz_*.c): a private temp directory, created once
 * per process and removed at exit, and writing an input to a file in it.
 *
 * The directory is $DPTRAIN_FUZZ_TMPDIR, else /dev/shm (tmpfs: no disk I/O per input), else /tmp,
 * with a unique dptrain-fuzz-<pid>-XXXXXX below it. Every target includes this once. */
#ifndef DPTRAIN_FUZZ_COMMON_H
#define DPTRAIN_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "dptrain/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fz_dir[512];

static inline void fz_rm(const char *name) {
  char p[640];
  snprintf(p, sizeof p, "%s/%s", fz_dir, name);
  unlink(p);
}

static const char *const fz_names[] = {"in0", "in1", "in2", "in3", "out.h5", "out.h5.tmp", NULL};

static inline void fz_cleanup(void) {
  if (!fz_dir[0])
    return;
  for (int i = 0; fz_names[i]; i++)
    fz_rm(fz_names[i]);
  rmdir(fz_dir);
}

/* The temp directory (created on first use), or exits: nothing can be tested without it. */
static inline const char *fz_tmpdir(void) {
  if (fz_dir[0])
    return fz_dir;
  const char *base = getenv("DPTRAIN_FUZZ_TMPDIR");
  if (!base || !*base)
    base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(fz_dir, sizeof fz_dir, "%s/dptrain-fuzz-%ld-XXXXXX", base, (long)getpid());
  if (!mkdtemp(fz_dir)) {
    perror(fz_dir);
    exit(1);
  }
  atexit(fz_cleanup);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* HDF5 would print an error stack for every bad input */
  return fz_dir;
}

/* <tmpdir>/<name> into buf. */
static inline const char *fz_path(char *buf, size_t len, const char *name) {
  snprintf(buf, len, "%s/%s", fz_tmpdir(), name);
  return buf;
}

/* Writes data to <tmpdir>/<name>; its path into buf. */
static inline const char *fz_write(char *buf, size_t len, const char *name, const uint8_t *data, size_t size) {
  fz_path(buf, len, name);
  FILE *f = fopen(buf, "wb");
  if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
    perror(buf);
    exit(1);
  }
  return buf;
}

/* With DPTRAIN_FUZZ_DEBUG set, each step's status and message to stderr (checking what seeds reach). */
static inline void fz_log(const char *what, int rc) {
  static int on = -1;
  if (on < 0)
    on = getenv("DPTRAIN_FUZZ_DEBUG") != NULL;
  if (on)
    fprintf(stderr, "  %s: %d%s%s\n", what, rc, rc < 0 ? " " : "", rc < 0 ? dp_errmsg(rc) : "");
}

#endif
