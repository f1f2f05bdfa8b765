/* Data sets in HDF5.
 *
 * Layout: /train/x (N, D) uint8 or float32, with an optional float attribute `scale` applied when
 * loading (1/255 for images); /train/y (N) integer class labels, or (N, K) float32 regression
 * targets; optionally /test/x and /test/y of the same kinds.
 *
 * A rank never reads more than it needs: rows come from the file by hyperslab reads, or from an
 * in-memory copy of the rows it was asked to hold. */
#ifndef DPTRAIN_DATA_H
#define DPTRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "dptrain/config.h" /* DP_PATH_MAX */

typedef struct {
  char path[DP_PATH_MAX];
  char group[64];  /* "train" or "test" */
  int64_t n;       /* rows */
  int64_t d;       /* features per row */
  int x_u8;        /* 1: x stored as uint8, 0: float32 */
  float scale;     /* multiplies x when loading (1 when absent) */
  float shift;     /* added after scale (0 unless standardised) */
  int has_labels;  /* 1: y is (N) integer labels; 0: y is (N, k) float32 targets */
  int64_t k;       /* target width (1 for labels) */

  int64_t mem_lo, mem_hi; /* rows [mem_lo, mem_hi) are held in memory (none when equal) */
  void *mem_x;            /* (mem_hi - mem_lo, d) in the file's dtype */
  int32_t *mem_labels;    /* (mem_hi - mem_lo) */
  float *mem_targets;     /* (mem_hi - mem_lo, k) */

  int64_t h5_file, h5_x, h5_y; /* hid_t handles (int64_t in HDF5 >= 1.10), < 0 when closed */
  /* The file as opened (device, inode, size, mtime in ns): a read from the file first checks that the
   * path still names it, unchanged, so a file replaced or rewritten under a run is never trained on. */
  uint64_t id_dev, id_ino;
  int64_t id_size, id_mtime_ns;
} dp_dataset;

/* Marks every handle closed and every buffer empty, so dp_dataset_close is always safe. */
void dp_dataset_init(dp_dataset *ds);
/* Bytes of one stored row of x: d features of uint8 (x_u8) or float32. */
size_t dp_row_bytes(int64_t d, int x_u8);

/* Bytes that holding `rows` rows in memory takes: x in its stored dtype, and the labels or targets. */
double dp_dataset_mem_bytes(const dp_dataset *ds, int64_t rows);
/* This node's physical memory in bytes (0 when unknown), which all its ranks share. */
double dp_node_memory(void);

/* Opens <path>:/<group>/{x,y} and validates shapes and types; reads no rows. Errors name the file and
 * the dataset ("data/f.h5: /train/y: expected 60000 rows like /train/x, found 59999"). found NULL:
 * the group must exist. Otherwise a missing group is no error: 0 with *found = 0 and ds closed.
 * On failure ds is closed too (dp_dataset_close stays safe). */
int dp_dataset_open(dp_dataset *ds, const char *path, const char *group, int *found);
/* Loads x as (x · scale − mean) / std from now on: the affine map folds into scale and shift. */
void dp_dataset_standardize(dp_dataset *ds, double mean, double std);
/* Holds rows [lo, hi) in memory, in the file's dtype, so later gathers of those rows read no file. */
int dp_dataset_load(dp_dataset *ds, int64_t lo, int64_t hi);
/* Copies rows[0..n) into x (n, d) as float (scaled and shifted), and labels (n) or targets (n, k).
 * Rows held in memory are copied; others are read from the file (runs of consecutive rows in one
 * read), after checking that the file is still the one opened (DP_EDATA naming it otherwise). */
int dp_dataset_gather(dp_dataset *ds, const int64_t *rows, int n, float *x, int32_t *labels, float *targets);
/* The smallest and largest label over rows [lo, hi) (reads the file in chunks). */
int dp_dataset_label_range(dp_dataset *ds, int64_t lo, int64_t hi, int32_t *min, int32_t *max);
/* Validates that x (float32; uint8 cannot) and float targets over rows [lo, hi) hold no NaN or Inf
 * (a stored float64 beyond float32's range reads as Inf), in passes of at most 16 MiB. */
int dp_dataset_check_finite(dp_dataset *ds, int64_t lo, int64_t hi);
void dp_dataset_close(dp_dataset *ds);

/* One split to write: x is (n, d) uint8 (x_u8) or float32; labels (n) or targets (n, k). */
typedef struct {
  int64_t n, d;
  int x_u8;
  const void *x;
  float scale; /* written as the `scale` attribute when != 1 */
  const int32_t *labels;
  const float *targets;
  int64_t k;
} dp_split_view;

/* Writes a data file with /train and optionally /test (test may be NULL), durably (dp_write_durable:
 * path.tmp, fsync, rename), so a failed conversion never leaves a half-written file under the final
 * name. Datasets are chunked (about 1 MiB) with Fletcher32 checksums, which every read verifies; the
 * file is built in memory and written in one piece (h5u_mem_create), so a full disk is a plain error. */
int dp_data_write(const char *path, const dp_split_view *train, const dp_split_view *test);

/* `dptrain convert idx IMAGES LABELS [TEST_IMAGES TEST_LABELS] -o OUT`: gzip'd or plain IDX files
 * (MNIST family). Images become uint8 with scale 1/255, labels int32. */
int dp_convert_idx(const char *images, const char *labels, const char *test_images, const char *test_labels,
                   const char *out);

typedef struct {
  const char *train_csv;
  const char *test_csv;  /* may be NULL */
  int label_col;         /* column index of the label (0-based; negative counts from the end) */
  int header;            /* 1: first line is a header and is skipped */
  int regression;        /* 1: the label column is a float target (k = 1), not a class */
  float scale;           /* stored as the `scale` attribute of x (0 means 1) */
  const char *out;
} dp_csv_options;

/* `dptrain convert csv ...`: numeric CSV, one row per sample, features as float32. */
int dp_convert_csv(const dp_csv_options *o);

#endif
