/* Data sets in HDF5.
 *
 * Layout: /train/x (N, D) uint8 or float32, with an optional float attribute `scale` applied when
 * loading (1/255 for images); /train/y (N) integer class labels, or (N, K) float32 regression
 * targets; optionally /test/x and /test/y of the same kinds. /train/x_mean and /train/x_std (D)
 * float64: the training split's per-feature mean and (population) std of x · scale.
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
  float scale;     /* the file's `scale` attribute of x (1 when absent) */
  /* The input transform every row read goes through, x_model = x_raw · x_scale + x_shift per feature
   * (d each): the file's scale at open, standardisation folded in after. The trainer registers them
   * as the model's /input/scale and /input/shift, so a model load replaces them. */
  float *x_scale, *x_shift;
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
  struct dp_direct *direct; /* streaming: x's chunks read straight from the file (src/direct.h), or NULL */
} dp_dataset;

/* Marks every handle closed and every buffer empty, so dp_dataset_close is always safe. */
void dp_dataset_init(dp_dataset *ds);
/* Bytes of one stored row of x: d features of uint8 (x_u8) or float32. */
size_t dp_row_bytes(int64_t d, int x_u8);

/* Bytes that holding `rows` rows in memory takes: x in its stored dtype, and the labels or targets. */
double dp_dataset_mem_bytes(const dp_dataset *ds, int64_t rows);
/* The memory this node's ranks share, in bytes (0 when unknown): the physical memory, or the
 * memory cgroup's limit when that is lower (a batch system's allocation). */
double dp_node_memory(void);

/* Opens <path>:/<group>/{x,y} and validates shapes, types and (chunked) that the chunk index holds
 * every chunk; reads no rows. Errors name the file and the dataset ("data/f.h5: /train/y: expected
 * 60000 rows like /train/x, found 59999"). found NULL:
 * the group must exist. Otherwise a missing group is no error: 0 with *found = 0 and ds closed.
 * On failure ds is closed too (dp_dataset_close stays safe). */
int dp_dataset_open(dp_dataset *ds, const char *path, const char *group, int *found);
/* Loads x as (x · scale − mean) / std from now on: the affine map folds into x_scale and x_shift. */
void dp_dataset_standardize(dp_dataset *ds, double mean, double std);
/* The same per feature: mean and std (d each) of the scaled features; a std of 0 counts as 1. */
void dp_dataset_standardize_features(dp_dataset *ds, const double *mean, const double *std);
/* The training split's per-feature mean and std (d each) that `dptrain convert` stores in ds's file
 * (/train/x_mean, /train/x_std); DP_EDATA naming the file when it has none. */
int dp_dataset_read_stats(const dp_dataset *ds, double *mean, double *std);
/* [data] standardize, mean and std applied to ds's transform (per_feature reads the file's statistics). */
int dp_dataset_apply_standardize(dp_dataset *ds, const dp_config *cfg);
/* dst's rows go through src's transform from now on (the same d). */
void dp_dataset_copy_transform(dp_dataset *dst, const dp_dataset *src);
/* n rows of src (stored dtype when src_u8, else float32; may alias dst when float) into dst as float,
 * through the input transform: the one place a row becomes the model's input. */
void dp_dataset_convert_rows(const dp_dataset *ds, const void *src, int src_u8, int64_t n, float *dst);
/* Holds rows [lo, hi) in memory, in the file's dtype, so later gathers of those rows read no file. */
int dp_dataset_load(dp_dataset *ds, int64_t lo, int64_t hi);
/* Copies rows[0..n) into x (n, d) as float (scaled and shifted), and labels (n) or targets (n, k).
 * Rows held in memory are copied; others are read from the file (runs of consecutive rows in one
 * read), after checking that the file is still the one opened (DP_EDATA naming it otherwise). */
int dp_dataset_gather(dp_dataset *ds, const int64_t *rows, int n, float *x, int32_t *labels, float *targets);
/* Rows of one chunk of x along its first dimension; 0 when x is not chunked. */
int64_t dp_dataset_chunk_rows(const dp_dataset *ds);
/* Reopens x and y for reads of whole blocks only (the streaming reader's): no chunk cache; and x's
 * chunks read past the page cache (src/direct.h) with direct_io = true, or auto and a file larger
 * than memory, where the layout and the file system allow it (ds->direct). */
int dp_dataset_stream_x(dp_dataset *ds, dp_direct_io direct_io);
/* 1 when the file is larger than half the memory the node's ranks may use (dp_node_memory): read once
 * an epoch, no page it caches would be read again. */
int dp_dataset_larger_than_memory(const dp_dataset *ds);
/* 0 when the path still names the file opened, unchanged; DP_EDATA naming it otherwise. */
int dp_dataset_unchanged(const dp_dataset *ds);
/* Asks the kernel to drop the file's cached pages (posix_fadvise DONTNEED): for a file read once per
 * epoch that is larger than the memory that could cache it. A hint: nothing fails. */
void dp_dataset_drop_cache(dp_dataset *ds);
/* Rows [lo, lo+n) of x in the file's dtype, and their labels (n) or targets (n, k), after checking and
 * again after reading that the file is still the one opened (DP_EDATA naming it otherwise). Takes the
 * HDF5 lock, like every read here; safe on the reader thread (dp_fail's message is per thread). */
int dp_dataset_read_block(dp_dataset *ds, int64_t lo, int64_t n, void *x, int32_t *labels, float *targets);
/* The smallest and largest label over rows [lo, hi) (reads the file in chunks). */
int dp_dataset_label_range(dp_dataset *ds, int64_t lo, int64_t hi, int32_t *min, int32_t *max);
/* Validates that x (float32; uint8 cannot) and float targets over rows [lo, hi) hold no NaN or Inf
 * (a stored float64 beyond float32's range reads as Inf), in passes of at most 16 MiB. Rows of a
 * training set not held in memory are not read here: dp_dataset_gather and dp_dataset_read_block
 * check every row they read from the file, with the same error. */
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
 * name. Datasets are chunked by whole rows (about 2 MiB of x a chunk, y by the same rows) with
 * Fletcher32 checksums, which every read verifies; a file up to 256 MB is built in memory and written
 * in one piece (h5u_mem_create), so a full disk is a plain error, a larger one is written by HDF5. */
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

/* `dptrain convert rechunk IN OUT [--chunk-mb X]`: IN (any layout dptrain reads) re-laid for
 * streaming: x and y of each split in chunks of whole rows of about chunk_mb (<= 0: the default),
 * checksummed, as convert writes them (x uint8 or float32, labels int32, targets float32), every other
 * attribute and dataset copied as it is. Streamed in pieces of a few chunks, so memory stays small
 * however large the file; IN's hashes are checked on the way. */
int dp_convert_rechunk(const char *in, const char *out, double chunk_mb);

typedef struct {
  const char *out;
  int64_t rows, test_rows, features, classes;
  uint64_t seed;
  double chunk_mb; /* <= 0: the default */
} dp_synth_options;

/* `dptrain convert synthetic`: a learnable classification set (each class a mixture of Gaussian
 * clusters; float32 features, int32 labels, deterministic for a seed), generated and written in
 * pieces like rechunk, with /train/x_mean and x_std. */
int dp_convert_synthetic(const dp_synth_options *o);

#endif
