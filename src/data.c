/* Data sets in HDF5: validation on open, hyperslab reads of only the rows a rank needs. */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dptrain/data.h"
#include "dptrain/error.h"

#define CHUNK_ROWS 4096

/* HDF5 prints its own error stack to stderr by default; we report one line of our own instead. */
static void quiet_hdf5(void) {
  static int done;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    done = 1;
  }
}

size_t dp_row_bytes(int64_t d, int x_u8) { return (size_t)d * (x_u8 ? 1 : sizeof(float)); }

void dp_dataset_init(dp_dataset *ds) {
  memset(ds, 0, sizeof *ds);
  ds->h5_file = ds->h5_x = ds->h5_y = -1;
  ds->scale = 1.0f;
}

void dp_dataset_standardize(dp_dataset *ds, double mean, double std) {
  ds->shift = (float)(((double)ds->shift - mean) / std);
  ds->scale = (float)((double)ds->scale / std);
}

void dp_dataset_close(dp_dataset *ds) {
  if (ds->h5_x >= 0)
    H5Dclose(ds->h5_x);
  if (ds->h5_y >= 0)
    H5Dclose(ds->h5_y);
  if (ds->h5_file >= 0)
    H5Fclose(ds->h5_file);
  free(ds->mem_x);
  free(ds->mem_labels);
  free(ds->mem_targets);
  char path[sizeof ds->path];
  memcpy(path, ds->path, sizeof path);
  dp_dataset_init(ds);
  memcpy(ds->path, path, sizeof path);
}

/* Rank and dimensions of a dataset; dims has room for 2. */
static int shape_of(dp_dataset *ds, hid_t d, const char *name, int *rank, hsize_t dims[2]) {
  hid_t sp = H5Dget_space(d);
  int r = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
  if (r >= 1 && r <= 2 && H5Sget_simple_extent_dims(sp, dims, NULL) < 0)
    r = -1;
  if (sp >= 0)
    H5Sclose(sp);
  if (r < 0)
    return dp_fail(DP_EDATA, "%s: %s: cannot read its dimensions (file damaged?)", ds->path, name);
  if (r < 1 || r > 2)
    return dp_fail(DP_EDATA, "%s: %s: expected 1 or 2 dimensions, found %d", ds->path, name, r);
  *rank = r;
  return 0;
}

/* Element class, size and sign (H5T_SGN_ERROR unless an integer) of a dataset's type. */
static int type_of(dp_dataset *ds, hid_t d, const char *name, H5T_class_t *cls, size_t *size, H5T_sign_t *sign) {
  hid_t t = H5Dget_type(d);
  *cls = t < 0 ? H5T_NO_CLASS : H5Tget_class(t);
  *size = t < 0 ? 0 : H5Tget_size(t);
  *sign = *cls == H5T_INTEGER ? H5Tget_sign(t) : H5T_SGN_ERROR;
  if (t >= 0)
    H5Tclose(t);
  if (*cls == H5T_NO_CLASS || *size == 0)
    return dp_fail(DP_EDATA, "%s: %s: cannot read its element type (file damaged?)", ds->path, name);
  return 0;
}

/* Shuffled rows are single-row reads. With the default chunk cache each one would first read its
 * whole chunk (about 1 MiB in files `dptrain convert` writes); without a cache, HDF5 reads unfiltered
 * chunks straight from the file, row by row, as it did contiguous data. Filtered (compressed or
 * checksummed) chunks must be read whole anyway, so they keep the cache. */
static hid_t open_rows(hid_t file, const char *name) {
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  hid_t dcpl = d < 0 ? -1 : H5Dget_create_plist(d);
  int direct = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_nfilters(dcpl) == 0;
  if (dcpl >= 0)
    H5Pclose(dcpl);
  hid_t dapl = direct ? H5Pcreate(H5P_DATASET_ACCESS) : -1;
  if (dapl < 0 || H5Pset_chunk_cache(dapl, H5D_CHUNK_CACHE_NSLOTS_DEFAULT, 0, H5D_CHUNK_CACHE_W0_DEFAULT) < 0) {
    if (dapl >= 0)
      H5Pclose(dapl);
    return d; /* with the default cache: slower for shuffled rows, still right */
  }
  H5Dclose(d); /* while it is open, HDF5 would hand back the same dataset, cache and all */
  d = H5Dopen2(file, name, dapl);
  H5Pclose(dapl);
  return d < 0 ? H5Dopen2(file, name, H5P_DEFAULT) : d;
}

static int open_x(dp_dataset *ds, const char *name) {
  ds->h5_x = open_rows(ds->h5_file, name);
  if (ds->h5_x < 0)
    return dp_fail(DP_EDATA, "%s: missing dataset %s (expected an (N, D) array of uint8 or float32)", ds->path, name);
  int rank;
  hsize_t dims[2];
  DP_TRY(shape_of(ds, ds->h5_x, name, &rank, dims));
  if (rank != 2)
    return dp_fail(DP_EDATA, "%s: %s: expected 2 dimensions (N, D), found 1", ds->path, name);
  H5T_class_t cls;
  size_t size;
  H5T_sign_t sign;
  DP_TRY(type_of(ds, ds->h5_x, name, &cls, &size, &sign));
  ds->x_u8 = cls == H5T_INTEGER && size == 1 && sign == H5T_SGN_NONE;
  if (!ds->x_u8 && !(cls == H5T_FLOAT && size == 4))
    return dp_fail(DP_EDATA, "%s: %s: expected uint8 or float32 elements", ds->path, name);
  if (dims[0] == 0 || dims[1] == 0)
    return dp_fail(DP_EDATA, "%s: %s: expected at least one row and one column, found (%llu, %llu)", ds->path, name,
                   (unsigned long long)dims[0], (unsigned long long)dims[1]);
  ds->n = (int64_t)dims[0];
  ds->d = (int64_t)dims[1];
  return 0;
}

static int read_scale(dp_dataset *ds, const char *name) {
  ds->scale = 1.0f;
  htri_t has = H5Aexists(ds->h5_x, "scale");
  if (has <= 0)
    return has < 0 ? dp_fail(DP_EHDF5, "%s: %s: cannot read its attributes", ds->path, name) : 0;
  hid_t a = H5Aopen(ds->h5_x, "scale", H5P_DEFAULT);
  hid_t sp = a < 0 ? -1 : H5Aget_space(a);
  hssize_t npts = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
  herr_t st = npts == 1 ? H5Aread(a, H5T_NATIVE_FLOAT, &ds->scale) : -1;
  if (sp >= 0)
    H5Sclose(sp);
  if (a >= 0)
    H5Aclose(a);
  if (st < 0 || !isfinite(ds->scale) || ds->scale == 0.0f)
    return dp_fail(DP_EDATA, "%s: %s: attribute 'scale' must be one finite non-zero number", ds->path, name);
  return 0;
}

static int open_y(dp_dataset *ds, const char *name) {
  ds->h5_y = open_rows(ds->h5_file, name);
  if (ds->h5_y < 0)
    return dp_fail(DP_EDATA, "%s: missing dataset %s (expected (N) integer labels or (N, K) float32 targets)",
                   ds->path, name);
  int rank;
  hsize_t dims[2] = {0, 1};
  DP_TRY(shape_of(ds, ds->h5_y, name, &rank, dims));
  H5T_class_t cls;
  size_t size;
  H5T_sign_t sign;
  DP_TRY(type_of(ds, ds->h5_y, name, &cls, &size, &sign));
  if (cls == H5T_INTEGER && rank == 1 && size <= 4) {
    ds->has_labels = 1;
    ds->k = 1;
  } else if (cls == H5T_FLOAT) {
    ds->has_labels = 0;
    ds->k = rank == 2 ? (int64_t)dims[1] : 1;
    if (ds->k < 1)
      return dp_fail(DP_EDATA, "%s: %s: expected at least one target column", ds->path, name);
  } else {
    return dp_fail(DP_EDATA, "%s: %s: expected (N) integer labels of at most 32 bits or (N, K) float targets",
                   ds->path, name);
  }
  if ((int64_t)dims[0] != ds->n)
    return dp_fail(DP_EDATA, "%s: %s: expected %lld rows like its x, found %llu", ds->path, name, (long long)ds->n,
                   (unsigned long long)dims[0]);
  return 0;
}

static int open_file(dp_dataset *ds, const char *path) {
  quiet_hdf5();
  if (access(path, R_OK) != 0)
    return dp_fail(DP_EDATA, "%s: cannot open data file: %s", path, strerror(errno));
  if (H5Fis_hdf5(path) <= 0)
    return dp_fail(DP_EDATA, "%s: not an HDF5 file (convert data with `dptrain convert`)", path);
  ds->h5_file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (ds->h5_file < 0)
    return dp_fail(DP_EDATA, "%s: HDF5 cannot open the file (damaged or truncated?)", path);
  return 0;
}

/* The group's x and y, once the file is open; *found as in dp_dataset_open. */
static int open_group(dp_dataset *ds, const char *group, int *found) {
  char gname[80], xname[80], yname[80];
  snprintf(gname, sizeof gname, "/%s", group);
  htri_t exists = H5Lexists(ds->h5_file, gname, H5P_DEFAULT);
  if (exists < 0)
    return dp_fail(DP_EDATA, "%s: cannot look up group %s (file damaged?)", ds->path, gname);
  if (!exists && found)
    return 0;
  if (!exists)
    return dp_fail(DP_EDATA, "%s: missing group %s (expected %s/x and %s/y)", ds->path, gname, gname, gname);
  snprintf(xname, sizeof xname, "/%s/x", group);
  snprintf(yname, sizeof yname, "/%s/y", group);
  DP_TRY(open_x(ds, xname));
  DP_TRY(read_scale(ds, xname));
  DP_TRY(open_y(ds, yname));
  if (found)
    *found = 1;
  return 0;
}

int dp_dataset_open(dp_dataset *ds, const char *path, const char *group, int *found) {
  dp_dataset_init(ds);
  if (found)
    *found = 0;
  if (strlen(path) >= sizeof ds->path)
    return dp_fail(DP_EINVAL, "%s: path too long (at most %zu bytes)", path, sizeof ds->path - 1);
  if (strlen(group) + 3 >= sizeof ds->group)
    return dp_fail(DP_EINVAL, "%s: group name '%s' too long", path, group);
  strcpy(ds->path, path);
  strcpy(ds->group, group);
  int rc = open_file(ds, path);
  if (rc == 0)
    rc = open_group(ds, group, found);
  if (rc < 0 || (found && !*found))
    dp_dataset_close(ds);
  return rc;
}

/* Rows [lo, lo+n) of a dataset of `cols` columns into buf as mtype; the memory space has the file's
 * rank, so (N) float targets read as k = 1 and (N, k) ones as they are. */
static herr_t read_slab(hid_t d, int64_t lo, int64_t n, int64_t cols, hid_t mtype, void *buf) {
  hsize_t start[2] = {(hsize_t)lo, 0}, count[2] = {(hsize_t)n, (hsize_t)cols};
  hid_t fs = H5Dget_space(d);
  int rank = fs < 0 ? -1 : H5Sget_simple_extent_ndims(fs);
  hid_t ms = rank < 1 ? -1 : H5Screate_simple(rank, count, NULL);
  herr_t st = ms < 0 ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
  if (st >= 0)
    st = H5Dread(d, mtype, ms, fs, H5P_DEFAULT, buf);
  if (ms >= 0)
    H5Sclose(ms);
  if (fs >= 0)
    H5Sclose(fs);
  return st;
}

/* Reads rows [lo, lo+n) of x (as x_type) and y into the given buffers (each may be NULL). */
static int read_rows(dp_dataset *ds, int64_t lo, int64_t n, hid_t x_type, void *x, int32_t *labels, float *targets) {
  const char *which = "x";
  herr_t st = x ? read_slab(ds->h5_x, lo, n, ds->d, x_type, x) : 0;
  if (st >= 0 && (labels || targets)) {
    which = "y";
    st = labels ? read_slab(ds->h5_y, lo, n, 1, H5T_NATIVE_INT32, labels)
                : read_slab(ds->h5_y, lo, n, ds->k, H5T_NATIVE_FLOAT, targets);
  }
  if (st < 0)
    return dp_fail(DP_EIO, "%s: /%s/%s: reading rows %lld..%lld failed (file damaged or truncated?)", ds->path,
                   ds->group, which, (long long)lo, (long long)(lo + n - 1));
  return 0;
}

int dp_dataset_load(dp_dataset *ds, int64_t lo, int64_t hi) {
  int64_t n = hi - lo;
  size_t row = dp_row_bytes(ds->d, ds->x_u8), xbytes = (size_t)n * row;
  void *x = malloc(xbytes ? xbytes : 1);
  int32_t *labels = ds->has_labels ? malloc((size_t)(n ? n : 1) * sizeof *labels) : NULL;
  float *targets = ds->has_labels ? NULL : malloc((size_t)(n ? n : 1) * (size_t)ds->k * sizeof *targets);
  if (!x || (!labels && !targets)) {
    free(x);
    free(labels);
    free(targets);
    return dp_fail(DP_ENOMEM, "%s: /%s: cannot hold %lld rows in memory (%.1f MB); set [data] in_memory = false",
                   ds->path, ds->group, (long long)n, xbytes / 1e6);
  }
  int rc = 0;
  hid_t xt = ds->x_u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT;
  for (int64_t c = 0; c < n && rc == 0; c += CHUNK_ROWS) {
    int64_t m = n - c < CHUNK_ROWS ? n - c : CHUNK_ROWS;
    char *xp = (char *)x + (size_t)c * row;
    rc = read_rows(ds, lo + c, m, xt, xp, labels ? labels + c : NULL, targets ? targets + c * ds->k : NULL);
  }
  if (rc < 0) {
    free(x);
    free(labels);
    free(targets);
    return rc;
  }
  free(ds->mem_x);
  free(ds->mem_labels);
  free(ds->mem_targets);
  ds->mem_x = x;
  ds->mem_labels = labels;
  ds->mem_targets = targets;
  ds->mem_lo = lo;
  ds->mem_hi = hi;
  return 0;
}

/* scale and shift in locals: x could alias *ds as far as the compiler knows, which would stop it
 * from vectorising the conversion (it was 3% of a training step). */
static void copy_from_memory(const dp_dataset *ds, int64_t row, float *restrict x, int32_t *labels, float *targets) {
  int64_t r = row - ds->mem_lo, d = ds->d;
  const float scale = ds->scale, shift = ds->shift;
  if (ds->x_u8) {
    const uint8_t *restrict s = (const uint8_t *)ds->mem_x + r * d;
    for (int64_t j = 0; j < d; j++)
      x[j] = (float)s[j] * scale + shift;
  } else {
    const float *restrict s = (const float *)ds->mem_x + r * d;
    for (int64_t j = 0; j < d; j++)
      x[j] = s[j] * scale + shift;
  }
  if (labels)
    *labels = ds->mem_labels[r];
  if (targets)
    memcpy(targets, ds->mem_targets + r * ds->k, (size_t)ds->k * sizeof *targets);
}

/* Shuffled rows are random addresses the hardware prefetcher cannot guess: ask for the row four
 * ahead while this one converts (it was waiting on memory for 60% of the gather). */
static void prefetch_row(const dp_dataset *ds, int64_t row) {
  if (row < ds->mem_lo || row >= ds->mem_hi)
    return;
  size_t bytes = dp_row_bytes(ds->d, ds->x_u8);
  const char *p = (const char *)ds->mem_x + (size_t)(row - ds->mem_lo) * bytes;
  for (size_t o = 0; o < bytes; o += 64)
    __builtin_prefetch(p + o, 0, 0);
}

int dp_dataset_gather(dp_dataset *ds, const int64_t *rows, int n, float *x, int32_t *labels, float *targets) {
  int64_t d = ds->d, k = ds->k;
  for (int i = 0; i < n && i < 4; i++)
    prefetch_row(ds, rows[i]);
  for (int i = 0; i < n;) {
    int64_t r = rows[i];
    if (r >= ds->mem_lo && r < ds->mem_hi) {
      if (i + 4 < n)
        prefetch_row(ds, rows[i + 4]);
      copy_from_memory(ds, r, x + i * d, labels ? labels + i : NULL, targets ? targets + i * k : NULL);
      i++;
      continue;
    }
    int run = 1; /* consecutive rows outside memory: one read */
    while (i + run < n && rows[i + run] == r + run && !(r + run >= ds->mem_lo && r + run < ds->mem_hi))
      run++;
    DP_TRY(read_rows(ds, r, run, H5T_NATIVE_FLOAT, x + i * d, labels ? labels + i : NULL,
                     targets ? targets + i * k : NULL));
    const float scale = ds->scale, shift = ds->shift; /* in locals, as in copy_from_memory */
    if (scale != 1.0f || shift != 0.0f)
      for (int64_t j = 0; j < run * d; j++)
        x[i * d + j] = x[i * d + j] * scale + shift;
    i += run;
  }
  return 0;
}

int dp_dataset_label_range(dp_dataset *ds, int64_t lo, int64_t hi, int32_t *min, int32_t *max) {
  *min = INT32_MAX;
  *max = INT32_MIN;
  int32_t *buf = malloc(CHUNK_ROWS * sizeof *buf);
  if (!buf)
    return dp_fail(DP_ENOMEM, "%s: no memory to check labels", ds->path);
  int rc = 0;
  for (int64_t c = lo; c < hi && rc == 0; c += CHUNK_ROWS) {
    int64_t m = hi - c < CHUNK_ROWS ? hi - c : CHUNK_ROWS;
    const int32_t *l = buf;
    if (c >= ds->mem_lo && c + m <= ds->mem_hi)
      l = ds->mem_labels + (c - ds->mem_lo);
    else
      rc = read_rows(ds, c, m, H5T_NATIVE_FLOAT, NULL, buf, NULL);
    for (int64_t i = 0; rc == 0 && i < m; i++) {
      if (l[i] < *min)
        *min = l[i];
      if (l[i] > *max)
        *max = l[i];
    }
  }
  free(buf);
  return rc;
}

int dp_dataset_check_finite(dp_dataset *ds, int64_t lo, int64_t hi) {
  if (ds->x_u8)
    return 0;
  float *buf = malloc((size_t)CHUNK_ROWS * (size_t)ds->d * sizeof *buf);
  if (!buf)
    return dp_fail(DP_ENOMEM, "%s: no memory to check values", ds->path);
  int rc = 0;
  for (int64_t c = lo; c < hi && rc == 0; c += CHUNK_ROWS) {
    int64_t m = hi - c < CHUNK_ROWS ? hi - c : CHUNK_ROWS;
    const float *x = buf;
    if (c >= ds->mem_lo && c + m <= ds->mem_hi)
      x = (const float *)ds->mem_x + (c - ds->mem_lo) * ds->d;
    else
      rc = read_rows(ds, c, m, H5T_NATIVE_FLOAT, buf, NULL, NULL);
    for (int64_t i = 0; rc == 0 && i < m * ds->d; i++)
      if (!isfinite(x[i]))
        rc = dp_fail(DP_EDATA, "%s: /%s/x: row %lld, column %lld is %s (expected finite values)", ds->path,
                     ds->group, (long long)(c + i / ds->d), (long long)(i % ds->d), isnan(x[i]) ? "NaN" : "Inf");
  }
  free(buf);
  return rc;
}
