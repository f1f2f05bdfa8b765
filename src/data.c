/* Data sets in HDF5: validation on open, hyperslab reads of only the rows a rank needs. */
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dptrain/data.h"
#include "direct.h"
#include "dptrain/error.h"
#include "faults.h"
#include "fsutil.h"
#include "h5util.h"
#include "vec.h"

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

double dp_dataset_mem_bytes(const dp_dataset *ds, int64_t rows) {
  double y = ds->has_labels ? sizeof(int32_t) : sizeof(float) * (double)ds->k;
  return (double)rows * ((double)dp_row_bytes(ds->d, ds->x_u8) + y);
}

/* The memory limit of this process's cgroup (v2 memory.max or v1 memory.limit_in_bytes), 0 when
 * there is none: a batch system (SLURM's task/cgroup) gives a job less than the node has. */
static double cgroup_limit(void) {
  FILE *f = fopen("/proc/self/cgroup", "r");
  if (!f)
    return 0;
  char line[4096], path[4200];
  double limit = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
    if (!b)
      continue;
    if (b == a + 1) /* "0::/path": the v2 hierarchy */
      snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", b + 1);
    else if (strncmp(a + 1, "memory:", 7) == 0 || strstr(a + 1, ",memory:"))
      snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", b + 1);
    else
      continue;
    FILE *g = fopen(path, "r");
    double v = 0;
    if (g && fscanf(g, "%lf", &v) == 1 && v > 0 && (limit == 0 || v < limit))
      limit = v; /* "max" (no limit) does not scan */
    if (g)
      fclose(g);
  }
  fclose(f);
  return limit;
}

double dp_node_memory(void) {
  double pages = (double)sysconf(_SC_PHYS_PAGES), size = (double)sysconf(_SC_PAGESIZE);
  double phys = pages > 0 && size > 0 ? pages * size : 0, cg = cgroup_limit();
  return dp_fault_node_memory(cg > 0 && (phys == 0 || cg < phys) ? cg : phys);
}

void dp_dataset_init(dp_dataset *ds) {
  memset(ds, 0, sizeof *ds);
  ds->h5_file = ds->h5_x = ds->h5_y = -1;
  ds->scale = 1.0f;
}

void dp_dataset_standardize(dp_dataset *ds, double mean, double std) {
  for (int64_t j = 0; ds->x_scale && j < ds->d; j++) {
    ds->x_shift[j] = (float)(((double)ds->x_shift[j] - mean) / std);
    ds->x_scale[j] = (float)((double)ds->x_scale[j] / std);
  }
}

void dp_dataset_standardize_features(dp_dataset *ds, const double *mean, const double *std) {
  for (int64_t j = 0; ds->x_scale && j < ds->d; j++) {
    double sd = std[j] > 0 ? std[j] : 1.0; /* a constant feature: centred, not blown up */
    ds->x_shift[j] = (float)(((double)ds->x_shift[j] - mean[j]) / sd);
    ds->x_scale[j] = (float)((double)ds->x_scale[j] / sd);
  }
}

void dp_dataset_copy_transform(dp_dataset *dst, const dp_dataset *src) {
  if (dst->x_scale && src->x_scale && dst->d == src->d) {
    memcpy(dst->x_scale, src->x_scale, sizeof(float) * (size_t)dst->d);
    memcpy(dst->x_shift, src->x_shift, sizeof(float) * (size_t)dst->d);
  }
}

/* The file's scale for every feature, nothing shifted: the transform before standardisation. */
static int init_transform(dp_dataset *ds) {
  ds->x_scale = malloc(sizeof(float) * (size_t)ds->d);
  ds->x_shift = malloc(sizeof(float) * (size_t)ds->d);
  if (!ds->x_scale || !ds->x_shift)
    return dp_fail(DP_ENOMEM, "%s: no memory for the input transform of %lld features", ds->path, (long long)ds->d);
  for (int64_t j = 0; j < ds->d; j++)
    ds->x_scale[j] = ds->scale, ds->x_shift[j] = 0.0f;
  return 0;
}

void dp_dataset_close(dp_dataset *ds) {
  dp_direct_close(ds->direct);
  if (ds->h5_x >= 0)
    H5Dclose(ds->h5_x);
  if (ds->h5_y >= 0)
    H5Dclose(ds->h5_y);
  if (ds->h5_file >= 0)
    H5Fclose(ds->h5_file);
  free(ds->mem_x);
  free(ds->mem_labels);
  free(ds->mem_targets);
  free(ds->x_scale);
  free(ds->x_shift);
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

/* Bytes of one chunk of a chunked dataset (0 when not chunked). */
static size_t chunk_bytes(hid_t d, hid_t dcpl) {
  hsize_t c[2] = {1, 1};
  hid_t t = H5Dget_type(d);
  int r = H5Pget_chunk(dcpl, 2, c);
  size_t n = t < 0 || r < 1 ? 0 : H5Tget_size(t) * (size_t)c[0] * (r > 1 ? (size_t)c[1] : 1);
  if (t >= 0)
    H5Tclose(t);
  return n;
}

/* Shuffled rows are single-row reads. With the default chunk cache each one would first read its
 * whole chunk (1-4 MiB in files `dptrain convert` writes); without a cache, HDF5 reads unfiltered
 * chunks straight from the file, row by row, as it did contiguous data. Filtered (compressed or
 * checksummed) chunks must be read whole anyway: a cache of the whole dataset up to `budget`
 * (ROW_CACHE_MAX, at least 4 chunks) reads each chunk of a set that size once, however shuffled; the
 * default 1 MiB cache would hold none of them and read a chunk per row. A larger set read in shuffled
 * rows still reads a chunk per row: order = blocks reads it by whole chunks instead. */
#define ROW_CACHE_MAX (64u << 20)
static hid_t open_rows(hid_t file, const char *name, size_t budget) {
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  hid_t dcpl = d < 0 ? -1 : H5Dget_create_plist(d);
  int chunked = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED;
  int direct = chunked && H5Pget_nfilters(dcpl) == 0;
  size_t chunk = chunked ? chunk_bytes(d, dcpl) : 0, cache = budget;
  hid_t sp = chunked ? H5Dget_space(d) : -1;
  hssize_t elems = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
  hid_t t = chunked ? H5Dget_type(d) : -1;
  double whole = elems < 0 || t < 0 ? 0 : (double)elems * (double)H5Tget_size(t) + (double)chunk;
  if (whole > 0 && whole < (double)cache)
    cache = (size_t)whole;
  if (cache < 4 * chunk)
    cache = 4 * chunk;
  if (t >= 0)
    H5Tclose(t);
  if (sp >= 0)
    H5Sclose(sp);
  if (dcpl >= 0)
    H5Pclose(dcpl);
  hid_t dapl = chunked ? H5Pcreate(H5P_DATASET_ACCESS) : -1;
  if (dapl < 0 || H5Pset_chunk_cache(dapl, 10007, direct ? 0 : cache, H5D_CHUNK_CACHE_W0_DEFAULT) < 0) {
    if (dapl >= 0)
      H5Pclose(dapl);
    return d; /* with the default cache: slower for shuffled rows, still right */
  }
  H5Dclose(d); /* while it is open, HDF5 would hand back the same dataset, cache and all */
  d = H5Dopen2(file, name, dapl);
  H5Pclose(dapl);
  return d < 0 ? H5Dopen2(file, name, H5P_DEFAULT) : d;
}

/* A load reads in order and keeps the rows itself: x and y reopened with caches of 4 chunks, so that
 * the load does not also fill (and keep) caches as large as the set. */
static int small_chunk_cache(dp_dataset *ds) {
  char x[80], y[80];
  snprintf(x, sizeof x, "/%s/x", ds->group);
  snprintf(y, sizeof y, "/%s/y", ds->group);
  dp_h5_lock(); /* as read_rows: never beside a streaming reader's HDF5 calls */
  H5Dclose(ds->h5_x);
  H5Dclose(ds->h5_y);
  ds->h5_x = open_rows(ds->h5_file, x, 0);
  ds->h5_y = open_rows(ds->h5_file, y, 0);
  dp_h5_unlock();
  if (ds->h5_x < 0 || ds->h5_y < 0)
    return dp_fail(DP_EDATA, "%s: cannot open %s again to load it (file damaged?)", ds->path,
                   ds->h5_x < 0 ? x : y);
  return 0;
}

/* A flipped bit in a chunk's key in the (unchecksummed) v1 B-tree index makes HDF5 miss that chunk
 * and return fill values for its rows, silently; Fletcher32 never sees it. A whole split loaded into
 * memory is checked against its hash; for rows read from the file, every chunk the shape implies is
 * looked up in the index (a B-tree search each, as a read does). */
static int check_chunks(dp_dataset *ds, hid_t d, const char *name, int rank, const hsize_t dims[2]) {
  hid_t dcpl = H5Dget_create_plist(d);
  hsize_t c[2] = {1, 1};
  int chunked = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 2, c) == rank;
  if (dcpl >= 0)
    H5Pclose(dcpl);
  if (!chunked || c[0] == 0 || c[1] == 0)
    return 0;
  hsize_t at[2] = {0, 0};
  for (at[0] = 0; at[0] < dims[0]; at[0] += c[0])
    for (at[1] = 0; at[1] < (rank > 1 ? dims[1] : 1); at[1] += c[1]) {
      unsigned mask = 0;
      haddr_t addr = HADDR_UNDEF;
      hsize_t size = 0;
      if (H5Dget_chunk_info_by_coord(d, at, &mask, &addr, &size) < 0)
        return dp_fail(DP_EDATA, "%s: %s: cannot read its chunk index (file damaged?)", ds->path, name);
      hsize_t end = at[0] + c[0] < dims[0] ? at[0] + c[0] : dims[0];
      if (addr == HADDR_UNDEF || size == 0)
        return dp_fail(DP_EDATA, "%s: %s: the chunk of rows %llu..%llu is missing from the chunk index (damaged "
                       "file, or a dataset never fully written): HDF5 would read it as zeros", ds->path, name,
                       (unsigned long long)at[0], (unsigned long long)end - 1);
    }
  return 0;
}

static int open_x(dp_dataset *ds, const char *name) {
  ds->h5_x = open_rows(ds->h5_file, name, ROW_CACHE_MAX);
  if (ds->h5_x < 0)
    return dp_fail(DP_EDATA, "%s: missing dataset %s (expected an (N, D) array of uint8 or float32)", ds->path, name);
  int rank;
  hsize_t dims[2];
  DP_TRY(shape_of(ds, ds->h5_x, name, &rank, dims));
  DP_TRY(check_chunks(ds, ds->h5_x, name, rank, dims));
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
  ds->h5_y = open_rows(ds->h5_file, name, ROW_CACHE_MAX);
  if (ds->h5_y < 0)
    return dp_fail(DP_EDATA, "%s: missing dataset %s (expected (N) integer labels or (N, K) float32 targets)",
                   ds->path, name);
  int rank;
  hsize_t dims[2] = {0, 1};
  DP_TRY(shape_of(ds, ds->h5_y, name, &rank, dims));
  DP_TRY(check_chunks(ds, ds->h5_y, name, rank, dims));
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

static int64_t mtime_ns(const struct stat *st) {
  return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static void remember_identity(dp_dataset *ds, const struct stat *st) {
  ds->id_dev = (uint64_t)st->st_dev;
  ds->id_ino = (uint64_t)st->st_ino;
  ds->id_size = (int64_t)st->st_size;
  ds->id_mtime_ns = mtime_ns(st);
}

/* Whether the path still names the file as it was opened; a stat is cheap next to a read. */
static int check_unchanged(const dp_dataset *ds) {
  struct stat st;
  const char *what = NULL;
  char sizes[96] = "";
  if (stat(ds->path, &st) != 0)
    what = "was removed or renamed";
  else if ((uint64_t)st.st_dev != ds->id_dev || (uint64_t)st.st_ino != ds->id_ino)
    what = "was replaced by another file";
  else if ((int64_t)st.st_size != ds->id_size) {
    what = "changed size";
    snprintf(sizes, sizeof sizes, " (%lld bytes at open, now %lld)", (long long)ds->id_size, (long long)st.st_size);
  } else if (mtime_ns(&st) != ds->id_mtime_ns)
    what = "was rewritten";
  if (!what)
    return 0;
  return dp_fail(DP_EDATA, "%s: the data file %s during the run%s: rows read now would not be the ones checked at "
                 "start; restart (or resume) once it is complete", ds->path, what, sizes);
}

static int open_file(dp_dataset *ds, const char *path) {
  quiet_hdf5();
  struct stat st;
  DP_TRY(dp_check_regular(path, "data file", DP_EDATA, &st));
  if (H5Fis_hdf5(path) <= 0)
    return dp_fail(DP_EDATA, "%s: not an HDF5 file (convert data with `dptrain convert`)", path);
  ds->h5_file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (ds->h5_file < 0)
    return dp_fail(DP_EDATA, "%s: HDF5 cannot open the file (damaged or truncated?)", path);
  remember_identity(ds, &st);
  return check_unchanged(ds); /* replaced between the stat and the open */
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
  DP_TRY(init_transform(ds));
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
  dp_h5_lock(); /* a streaming reader may be reading the training set on its thread */
  herr_t st = x ? read_slab(ds->h5_x, lo, n, ds->d, x_type, x) : 0;
  if (st >= 0 && (labels || targets)) {
    which = "y";
    st = labels ? read_slab(ds->h5_y, lo, n, 1, H5T_NATIVE_INT32, labels)
                : read_slab(ds->h5_y, lo, n, ds->k, H5T_NATIVE_FLOAT, targets);
  }
  dp_h5_unlock();
  if (st < 0 && check_unchanged(ds) < 0)
    return DP_EDATA; /* the real cause of the failed read */
  if (st < 0)
    return dp_fail(DP_EIO, "%s: /%s/%s: reading rows %lld..%lld failed (checksum mismatch or damaged data)",
                   ds->path, ds->group, which, (long long)lo, (long long)(lo + n - 1));
  return 0;
}

/* A whole split read into memory is compared with the hash `dptrain convert` stored beside it (when
 * there is one), which catches what Fletcher32 cannot: a damaged chunk index, a zeroed chunk. */
static int check_hash(const dp_dataset *ds, hid_t d, const char *which, const void *buf, size_t bytes) {
  int exists = 0;
  int64_t want = 0;
  if (h5u_attr_exists(d, H5U_HASH_ATTR, &exists) < 0 || (exists && h5u_get_i64(d, H5U_HASH_ATTR, &want) < 0))
    return dp_fail(DP_EDATA, "%s: /%s/%s: its hash attribute is damaged", ds->path, ds->group, which);
  if (exists && (uint64_t)want != h5u_hash64(buf, bytes))
    return dp_fail(DP_EDATA, "%s: /%s/%s: the rows read do not match the stored hash (damaged file: a chunk or the "
                   "chunk index)", ds->path, ds->group, which);
  return 0;
}

static int check_hashes(const dp_dataset *ds, const void *x, const int32_t *labels, const float *targets) {
  DP_TRY(check_hash(ds, ds->h5_x, "x", x, (size_t)ds->n * dp_row_bytes(ds->d, ds->x_u8)));
  return labels ? check_hash(ds, ds->h5_y, "y", labels, (size_t)ds->n * sizeof *labels)
                : check_hash(ds, ds->h5_y, "y", targets, (size_t)(ds->n * ds->k) * sizeof *targets);
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
  int rc = small_chunk_cache(ds);
  hid_t xt = ds->x_u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT;
  for (int64_t c = 0; c < n && rc == 0; c += CHUNK_ROWS) {
    int64_t m = n - c < CHUNK_ROWS ? n - c : CHUNK_ROWS;
    char *xp = (char *)x + (size_t)c * row;
    rc = read_rows(ds, lo + c, m, xt, xp, labels ? labels + c : NULL, targets ? targets + c * ds->k : NULL);
  }
  if (rc == 0 && lo == 0 && hi == ds->n)
    rc = check_hashes(ds, x, labels, targets);
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

/* The transform in restrict locals: x could alias *ds as far as the compiler knows, which would stop
 * it from vectorising the conversion (it was 3% of a training step). A float src may be dst itself
 * (a row read from the file, converted in place): each element is read before it is written. */
DP_VECTOR_LOOP
void dp_dataset_convert_rows(const dp_dataset *ds, const void *src, int src_u8, int64_t n, float *dst) {
  int64_t d = ds->d;
  const float *restrict scale = ds->x_scale, *restrict shift = ds->x_shift;
  for (int64_t i = 0; i < n; i++) {
    float *x = dst + i * d;
    if (src_u8) {
      const uint8_t *restrict s = (const uint8_t *)src + i * d;
      for (int64_t j = 0; j < d; j++)
        x[j] = (float)s[j] * scale[j] + shift[j];
    } else {
      const float *s = (const float *)src + i * d;
      for (int64_t j = 0; j < d; j++)
        x[j] = s[j] * scale[j] + shift[j];
    }
  }
}

static void copy_from_memory(const dp_dataset *ds, int64_t row, float *x, int32_t *labels, float *targets) {
  int64_t r = row - ds->mem_lo;
  dp_dataset_convert_rows(ds, (const char *)ds->mem_x + (size_t)r * dp_row_bytes(ds->d, ds->x_u8), ds->x_u8, 1, x);
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

/* The first NaN or Inf of m rows of x (y: 0) or float targets (y: 1) starting at row `first`, as an
 * error naming the row and column. */
static int finite_rows(const dp_dataset *ds, int y, const float *v, int64_t first, int64_t m) {
  int64_t cols = y ? ds->k : ds->d, bad = -1;
  for (int64_t i = 0; i < m * cols; i++)
    bad = bad < 0 && !isfinite(v[i]) ? i : bad;
  if (bad < 0)
    return 0;
  return dp_fail(DP_EDATA, "%s: /%s/%s: row %lld, column %lld is %s (expected finite values%s)", ds->path, ds->group,
                 y ? "y" : "x", (long long)(first + bad / cols), (long long)(bad % cols),
                 isnan(v[bad]) ? "NaN" : "Inf", y && !isnan(v[bad]) ? " within float32's range" : "");
}

int dp_dataset_gather(dp_dataset *ds, const int64_t *rows, int n, float *x, int32_t *labels, float *targets) {
  int64_t d = ds->d, k = ds->k;
  int checked = 0;
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
    if (!checked++)
      DP_TRY(check_unchanged(ds));
    DP_TRY(read_rows(ds, r, run, H5T_NATIVE_FLOAT, x + i * d, labels ? labels + i : NULL,
                     targets ? targets + i * k : NULL));
    if (!ds->x_u8)
      DP_TRY(finite_rows(ds, 0, x + i * d, r, run));
    if (targets)
      DP_TRY(finite_rows(ds, 1, targets + i * k, r, run));
    dp_dataset_convert_rows(ds, x + i * d, 0, run, x + i * d);
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

/* Rows per pass of a check: CHUNK_ROWS, or fewer for wide rows, so a check holds at most 16 MiB. */
static int64_t check_rows(int64_t cols) {
  int64_t r = ((int64_t)1 << 22) / (cols > 0 ? cols : 1);
  return r < 1 ? 1 : r > CHUNK_ROWS ? CHUNK_ROWS : r;
}

/* NaN or Inf in x (y: 0) or in the float targets (y: 1) over rows [lo, hi), in passes of check_rows. */
static int check_finite_in(dp_dataset *ds, int y, int64_t lo, int64_t hi) {
  int64_t cols = y ? ds->k : ds->d, step = check_rows(cols);
  float *buf = malloc((size_t)step * (size_t)cols * sizeof *buf);
  if (!buf)
    return dp_fail(DP_ENOMEM, "%s: no memory to check values (%.1f MB)", ds->path, (double)step * cols * 4 / 1e6);
  int rc = 0;
  for (int64_t c = lo; c < hi && rc == 0; c += step) {
    int64_t m = hi - c < step ? hi - c : step;
    const float *v = buf;
    if (c >= ds->mem_lo && c + m <= ds->mem_hi)
      v = (y ? ds->mem_targets : (const float *)ds->mem_x) + (c - ds->mem_lo) * cols;
    else
      rc = read_rows(ds, c, m, H5T_NATIVE_FLOAT, y ? NULL : buf, NULL, y ? buf : NULL);
    if (rc == 0)
      rc = finite_rows(ds, y, v, c, m);
  }
  free(buf);
  return rc;
}

int dp_dataset_check_finite(dp_dataset *ds, int64_t lo, int64_t hi) {
  if (!(lo >= ds->mem_lo && hi <= ds->mem_hi) && strcmp(ds->group, "train") == 0)
    return 0; /* a training set read from the file: its rows are checked as they are read (a 5 GB set
                 would otherwise be read once at start-up only for this) */
  int rc = ds->x_u8 ? 0 : check_finite_in(ds, 0, lo, hi);
  return rc < 0 || ds->has_labels ? rc : check_finite_in(ds, 1, lo, hi);
}

/* One of the statistics datasets: (d) float64 values, finite (a std also non-negative). */
static int read_stat(const dp_dataset *ds, const char *name, int is_std, double *v) {
  int exists = 0, rank = 0;
  int64_t dims[2] = {0, 0};
  if (h5u_exists(ds->h5_file, name, &exists) < 0 || !exists)
    return dp_fail(DP_EDATA, "%s: no /%s: [data] standardize = per_feature needs the training split's per-feature "
                   "mean and std, which `dptrain convert` writes (convert the data again)", ds->path, name);
  if (h5u_shape(ds->h5_file, name, &rank, dims) < 0 || rank != 1 || dims[0] != ds->d)
    return dp_fail(DP_EDATA, "%s: /%s: expected (%lld) values, one per feature of /%s/x", ds->path, name,
                   (long long)ds->d, ds->group);
  if (h5u_read_f64(ds->h5_file, name, v) < 0)
    return dp_fail(DP_EDATA, "%s: /%s: checksum mismatch or damaged data", ds->path, name);
  for (int64_t j = 0; j < ds->d; j++)
    if (!isfinite(v[j]) || (is_std && v[j] < 0))
      return dp_fail(DP_EDATA, "%s: /%s: feature %lld is %g (expected a finite%s value)", ds->path, name, (long long)j,
                     v[j], is_std ? ", non-negative" : "");
  return 0;
}

int dp_dataset_read_stats(const dp_dataset *ds, double *mean, double *std) {
  DP_TRY(read_stat(ds, "train/x_mean", 0, mean));
  return read_stat(ds, "train/x_std", 1, std);
}

int dp_dataset_apply_standardize(dp_dataset *ds, const dp_config *cfg) {
  if (cfg->data.standardize == DP_STD_SCALAR)
    dp_dataset_standardize(ds, cfg->data.mean, cfg->data.std);
  if (cfg->data.standardize != DP_STD_PER_FEATURE)
    return 0;
  double *mean = malloc(sizeof(double) * (size_t)ds->d), *std = malloc(sizeof(double) * (size_t)ds->d);
  int rc = mean && std ? dp_dataset_read_stats(ds, mean, std)
                       : dp_fail(DP_ENOMEM, "%s: no memory for the statistics of %lld features", ds->path,
                                 (long long)ds->d);
  if (rc == 0)
    dp_dataset_standardize_features(ds, mean, std);
  free(mean);
  free(std);
  return rc;
}

int64_t dp_dataset_chunk_rows(const dp_dataset *ds) {
  hsize_t c[2] = {0, 0};
  dp_h5_lock();
  hid_t dcpl = H5Dget_create_plist(ds->h5_x);
  int chunked = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 2, c) >= 1;
  if (dcpl >= 0)
    H5Pclose(dcpl);
  dp_h5_unlock();
  return chunked ? (int64_t)c[0] : 0;
}

/* Reopens /<group>/<what> with no chunk cache; 0 or -1. */
static int reopen_uncached(dp_dataset *ds, int64_t *h, const char *what) {
  char name[80];
  snprintf(name, sizeof name, "/%s/%s", ds->group, what);
  hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
  int rc = dapl >= 0 && H5Pset_chunk_cache(dapl, 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT) >= 0 ? 0 : -1;
  if (rc == 0) {
    H5Dclose(*h); /* while it is open, HDF5 would hand back the same dataset, cache and all */
    *h = H5Dopen2(ds->h5_file, name, dapl);
    rc = *h < 0 ? -1 : 0;
  }
  if (dapl >= 0)
    H5Pclose(dapl);
  return rc;
}

/* Whole blocks are read once each per epoch: a chunk cache would only hold memory (HDF5 reads a
 * filtered chunk larger than its cache through a buffer of its own, and an unfiltered one straight
 * into ours). That holds for the labels too: convert writes them in chunks of the same rows as x, and
 * a file with larger label chunks costs one label chunk per block, not a cache as large as the set's
 * labels on every rank. */
int dp_dataset_larger_than_memory(const dp_dataset *ds) {
  double mem = dp_node_memory();
  return mem > 0 && (double)ds->id_size > mem / 2;
}

int dp_dataset_stream_x(dp_dataset *ds, dp_direct_io direct_io) {
  int want = direct_io == DP_DIRECT_TRUE || (direct_io == DP_DIRECT_AUTO && dp_dataset_larger_than_memory(ds));
  dp_h5_lock();
  int rc = reopen_uncached(ds, &ds->h5_x, "x");
  if (rc == 0)
    rc = reopen_uncached(ds, &ds->h5_y, "y");
  int direct = rc == 0 && want && !ds->direct
                   ? dp_direct_open(&ds->direct, ds->path, ds->h5_x, ds->n, dp_row_bytes(ds->d, ds->x_u8))
                   : 0;
  dp_h5_unlock();
  if (rc < 0)
    return dp_fail(DP_EHDF5, "%s: /%s: cannot reopen x and y for streaming", ds->path, ds->group);
  return direct < 0 ? direct : 0;
}

/* x straight from the file, chunk by chunk, when lo starts a chunk; 1 when it cannot (HDF5 reads). */
static int read_direct(dp_dataset *ds, int64_t lo, int64_t n, void *x) {
  int64_t cr = ds->direct ? dp_direct_chunk_rows(ds->direct) : 0;
  if (cr == 0 || lo % cr != 0)
    return 1;
  char what[80];
  snprintf(what, sizeof what, "/%s/x", ds->group);
  size_t rb = dp_row_bytes(ds->d, ds->x_u8);
  for (int64_t r = 0; r < n; r += cr) {
    int64_t m = n - r < cr ? n - r : cr;
    int rc = dp_direct_read(ds->direct, (lo + r) / cr, m, (char *)x + (size_t)r * rb, what);
    if (rc < 0)
      return check_unchanged(ds) < 0 ? DP_EDATA : rc; /* the real cause of the failed read */
  }
  return 0;
}

int dp_dataset_unchanged(const dp_dataset *ds) { return check_unchanged(ds); }

/* A file larger than the memory it could be cached in is read once per epoch: cached pages are never
 * hit again, and keeping them makes the kernel reclaim (in a memory cgroup, synchronously, on the
 * reading rank's core) for every read. posix_fadvise only hints; a failure changes nothing. */
void dp_dataset_drop_cache(dp_dataset *ds) {
  int *fd = NULL;
  dp_h5_lock();
  if (H5Fget_vfd_handle(ds->h5_file, H5P_DEFAULT, (void **)&fd) >= 0 && fd && *fd >= 0)
    (void)posix_fadvise(*fd, 0, 0, POSIX_FADV_DONTNEED);
  dp_h5_unlock();
}

int dp_dataset_read_block(dp_dataset *ds, int64_t lo, int64_t n, void *x, int32_t *labels, float *targets) {
  hid_t xt = ds->x_u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT;
  DP_TRY(check_unchanged(ds));
  int rc = read_direct(ds, lo, n, x);
  DP_TRY(rc);
  DP_TRY(read_rows(ds, lo, n, xt, rc == 0 ? NULL : x, labels, targets));
  DP_TRY(check_unchanged(ds)); /* changed during the read: what it read may be part old, part new */
  if (!ds->x_u8)
    DP_TRY(finite_rows(ds, 0, x, lo, n));
  return targets ? finite_rows(ds, 1, targets, lo, n) : 0;
}
