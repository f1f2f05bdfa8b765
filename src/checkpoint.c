/* HDF5 checkpoints: the registered state, written atomically, read after validation. */
#include "dptrain/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "dptrain/config.h"
#include "dptrain/error.h"
#include "dptrain/metrics.h"
#include "dptrain/model.h"
#include "faults.h"
#include "fsutil.h"
#include "h5util.h"

enum { CONFIG_MAX = 1 << 20 }; /* the stored config text is read into a buffer of at most this */

/* An entry's group and its last name component: "optimizer/lbfgs/count" -> "optimizer/lbfgs", "count". */
static const char *split_name(const char *name, char *group, size_t len) {
  const char *slash = strrchr(name, '/');
  size_t n = slash ? (size_t)(slash - name) : 0;
  snprintf(group, len, "%.*s", (int)n, name);
  return slash ? slash + 1 : name;
}

/* ---- writing ---- */

static int write_scalar(hid_t g, const char *attr, const dp_state_entry *e) {
  switch (e->type) {
  case DP_T_I64:
    return h5u_attr_i64(g, attr, *(const int64_t *)e->ptr);
  case DP_T_INT:
    return h5u_attr_i64(g, attr, *(const int *)e->ptr);
  case DP_T_F64:
    return h5u_attr_f64(g, attr, *(const double *)e->ptr);
  case DP_T_STR:
    return h5u_attr_str(g, attr, (const char *)e->ptr);
  default:
    return dp_fail(DP_EINVAL, "state: scalar %s of a tensor type", e->name);
  }
}

/* ---- whole-tensor hashes ----
 * Fletcher32 covers each chunk, but not the chunk index (a v1 B-tree carries no checksum): a damaged
 * index makes HDF5 miss a chunk and return the fill value, and a chunk zeroed with its checksum
 * passes. So each dataset also carries H5U_HASH_ATTR, a 64-bit hash of all its elements' bytes (as
 * they are in memory here, little-endian), which a read recomputes. */

static size_t tensor_bytes(const dp_state_entry *e) {
  return (size_t)e->dims[0] * (size_t)(e->rank > 1 ? e->dims[1] : 1) * dp_dtype_size(e->type);
}

/* 0 when dataset `name` has no hash (older files) or its hash matches data; DP_ECKPT naming it. */
static int check_hash(hid_t f, const char *path, const char *name, const void *data, size_t bytes) {
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  int exists = 0;
  int64_t want = 0;
  int rc = d < 0 ? -1 : h5u_attr_exists(d, H5U_HASH_ATTR, &exists);
  if (rc == 0 && exists)
    rc = h5u_get_i64(d, H5U_HASH_ATTR, &want);
  if (d >= 0)
    H5Dclose(d);
  if (rc < 0)
    return dp_fail(DP_ECKPT, "%s: /%s: its hash attribute is damaged", path, name);
  if (exists && (uint64_t)want != h5u_hash64(data, bytes))
    return dp_fail(DP_ECKPT, "%s: /%s: the data does not match its stored hash (damaged file: a chunk or the chunk "
                   "index)", path, name);
  return 0;
}

static int write_tensor(hid_t f, const dp_state_entry *e) {
  int rc;
  switch (e->type) {
  case DP_T_F32:
    rc = h5u_write(f, e->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, e->ptr, e->rank, e->dims, &h5u_checksummed);
    break;
  case DP_T_F64:
    rc = h5u_write(f, e->name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, e->ptr, e->rank, e->dims, &h5u_checksummed);
    break;
  case DP_T_U8:
    rc = h5u_write(f, e->name, H5T_STD_U8LE, H5T_NATIVE_UCHAR, e->ptr, e->rank, e->dims, &h5u_checksummed);
    break;
  default:
    return dp_fail(DP_EINVAL, "state: tensor %s of a scalar type", e->name);
  }
  return rc < 0 ? rc : h5u_write_hash(f, e->name, e->ptr, tensor_bytes(e));
}

/* Datasets are created at their full name (make_groups made the parents); scalars are attributes of
 * their group. */
static int write_entry(hid_t f, const dp_state_entry *e) {
  if (e->rank > 0)
    return write_tensor(f, e);
  char group[DP_STATE_NAME_MAX];
  const char *attr = split_name(e->name, group, sizeof group);
  hid_t g = f;
  if (group[0])
    DP_TRY(h5u_group(f, group, &g));
  int rc = write_scalar(g, attr, e);
  if (g != f)
    H5Gclose(g);
  return rc;
}
static int write_meta(hid_t f) {
  char when[64];
  time_t now = time(NULL);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  DP_TRY(h5u_attr_str(f, "format", DP_CKPT_FORMAT));
  DP_TRY(h5u_attr_i64(f, "version", DP_CKPT_VERSION));
  return h5u_attr_str(f, "created", when);
}

/* Intermediate groups for datasets: h5u_write does not create them. */
static int make_groups(hid_t f, const dp_state *s) {
  for (int i = 0; i < s->n; i++) {
    char group[DP_STATE_NAME_MAX];
    split_name(s->e[i].name, group, sizeof group);
    if (s->e[i].rank > 0 && group[0]) {
      hid_t g;
      DP_TRY(h5u_group(f, group, &g));
      H5Gclose(g);
    }
  }
  return 0;
}

/* A full disk is a plain write error whenever it happens (h5u_mem_close): this only saves building
 * the file when it cannot fit: the state's bytes, a little over for checksums, indices and metadata. */
static int check_space(const dp_state *s, const char *dir) {
  struct statvfs v;
  double need = dp_state_bytes(s, 0) * 1.02 + (1 << 16);
  if (dp_fault_no_space_check())
    return 0;
  if (statvfs(dir, &v) == 0 && (double)v.f_bavail * (double)v.f_frsize < need) {
    errno = ENOSPC;
    return DP_EIO;
  }
  return 0;
}

typedef struct {
  const dp_state *s;
  const char *dir;
} save_ctx;

static int write_file(const char *tmp, void *arg) {
  const save_ctx *c = arg;
  DP_TRY(check_space(c->s, c->dir));
  /* The 1.8+ file format checksums the metadata too (object headers, B-trees): a damaged header is
   * then refused by its checksum instead of being parsed (HDF5 1.10's parser of the old headers
   * can be made to read freed memory by a damaged file). h5py and HDF5 >= 1.8 read it. */
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0) {
    if (fapl >= 0)
      H5Pclose(fapl);
    return dp_fail(DP_EHDF5, "HDF5 H5Pset_libver_bounds failed");
  }
  h5u_memfile m;
  int rc = h5u_mem_create(&m, tmp, fapl, dp_state_bytes(c->s, 0) * 1.05 + (1 << 16));
  H5Pclose(fapl);
  DP_TRY(rc);
  rc = write_meta(m.f);
  if (rc == 0)
    rc = make_groups(m.f, c->s);
  for (int i = 0; i < c->s->n && rc == 0; i++)
    rc = write_entry(m.f, &c->s->e[i]);
  int wrc = h5u_mem_close(&m, tmp, rc == 0);
  return rc < 0 ? rc : wrc;
}

/* Parses "ckpt-<step>.h5" exactly (no .tmp); returns the step or -1. Only the name a save would give
 * that step counts ("ckpt-007.h5" or "ckpt-+7.h5" do not): the callers rebuild names from steps, which
 * must name the files found. */
static long long ckpt_step(const char *name) {
  long long step;
  int end = 0;
  char again[64];
  if (sscanf(name, "ckpt-%lld.h5%n", &step, &end) == 1 && name[end] == 0 && step >= 0 &&
      snprintf(again, sizeof again, "ckpt-%lld.h5", step) < (int)sizeof again && !strcmp(again, name))
    return step;
  return -1;
}

static int cmp_desc(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return (x < y) - (x > y);
}

/* Removes all but the keep newest checkpoints, and temp files that a killed writer left. */
static void prune(const char *dir, int keep) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  long long steps[4096];
  int n = 0;
  char path[DP_FILE_PATH_MAX];
  for (struct dirent *e; (e = readdir(d));) {
    long long s = ckpt_step(e->d_name);
    size_t len = strlen(e->d_name);
    if (s >= 0 && n < 4096) {
      steps[n++] = s;
    } else if (!strncmp(e->d_name, "ckpt-", 5) && len > 7 && !strcmp(e->d_name + len - 7, ".h5.tmp")) {
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      remove(path);
    }
  }
  closedir(d);
  qsort(steps, (size_t)n, sizeof steps[0], cmp_desc);
  for (int i = keep; keep > 0 && i < n; i++) {
    snprintf(path, sizeof path, "%s/ckpt-%lld.h5", dir, steps[i]);
    remove(path);
  }
}

static int save(const dp_state *s, const char *dir, const char *name, char *path, size_t path_len) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  DP_TRY(dp_mkdirs(dir));
  char final[DP_FILE_PATH_MAX];
  if (snprintf(final, sizeof final, "%s/%s", dir, name) >= (int)sizeof final)
    return dp_fail(DP_EIO, "%s: checkpoint directory name too long", dir);
  save_ctx c = {s, dir};
  int rc = dp_write_durable(final, "the checkpoint", write_file, &c);
  if (rc < 0) {
    char msg[700];
    snprintf(msg, sizeof msg, "%s", dp_errmsg(rc));
    return dp_fail(rc, "%s; the previous checkpoints are kept", msg);
  }
  if (path)
    snprintf(path, path_len, "%s", final);
  return 0;
}

/* Under the HDF5 lock: a streaming reader may be reading the training set meanwhile. */
int dp_ckpt_save(const dp_state *s, const char *dir, int64_t step, int keep_last, char *path, size_t path_len) {
  char name[64];
  snprintf(name, sizeof name, "ckpt-%lld.h5", (long long)step);
  dp_h5_lock();
  int rc = save(s, dir, name, path, path_len);
  if (rc == 0)
    prune(dir, keep_last);
  dp_h5_unlock();
  return rc;
}

int dp_ckpt_save_as(const dp_state *s, const char *dir, const char *name, char *path, size_t path_len) {
  dp_h5_lock();
  int rc = save(s, dir, name, path, path_len);
  dp_h5_unlock();
  return rc;
}

int dp_ckpt_latest(const char *dir, char *path, size_t path_len, int *found) {
  *found = 0;
  DIR *d = opendir(dir);
  if (!d)
    return 0;
  long long best = -1;
  for (struct dirent *e; (e = readdir(d));) {
    long long s = ckpt_step(e->d_name);
    if (s > best)
      best = s;
  }
  closedir(d);
  if (best >= 0 && snprintf(path, path_len, "%s/ckpt-%lld.h5", dir, best) < (int)path_len)
    *found = 1;
  return 0;
}

/* ---- reading ---- */

static int open_file(const char *path, hid_t *f) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  DP_TRY(dp_check_regular(path, "checkpoint", DP_ECKPT, NULL));
  if (H5Fis_hdf5(path) <= 0)
    return dp_fail(DP_ECKPT, "%s: not an HDF5 file (truncated or not a checkpoint)", path);
  *f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (*f < 0)
    return dp_fail(DP_ECKPT, "%s: HDF5 cannot open it (truncated or damaged)", path);
  return 0;
}

static int check_format(hid_t f, const char *path) {
  char fmt[64];
  int64_t version = -1;
  int exists = 0;
  /* Attributes live in checksummed metadata (the 1.8 format's object headers and heaps): a damaged
   * one makes them all unreadable, which is no reason to call the file something else. */
  if (h5u_attr_exists(f, "format", &exists) < 0)
    return dp_fail(DP_ECKPT, "%s: its attributes cannot be read (a metadata checksum failed: damaged file)", path);
  if (h5u_get_str(f, "format", fmt, sizeof fmt) < 0 || strcmp(fmt, DP_CKPT_FORMAT))
    return dp_fail(DP_ECKPT, "%s: not a dptrain checkpoint (no format attribute '%s')", path, DP_CKPT_FORMAT);
  if (h5u_get_i64(f, "version", &version) < 0)
    return dp_fail(DP_ECKPT, "%s: missing the format version attribute", path);
  if (version != DP_CKPT_VERSION)
    return dp_fail(DP_ECKPT, "%s: checkpoint format version %lld, this dptrain reads version %d", path,
                   (long long)version, DP_CKPT_VERSION);
  return 0;
}

static int open_ckpt(const char *path, hid_t *f) {
  DP_TRY(open_file(path, f));
  int rc = check_format(*f, path);
  if (rc < 0)
    H5Fclose(*f);
  return rc;
}

/* Reads scalar e into e->loaded (e->found says whether the file has it). */
static int read_scalar(hid_t f, dp_state_entry *e) {
  char group[DP_STATE_NAME_MAX];
  const char *attr = split_name(e->name, group, sizeof group);
  int exists = 0;
  e->found = 0;
  if (group[0]) {
    DP_TRY(h5u_exists(f, group, &exists));
    if (!exists)
      return 0;
  }
  hid_t g = group[0] ? H5Gopen2(f, group, H5P_DEFAULT) : f;
  if (g < 0)
    return dp_fail(DP_EHDF5, "HDF5 H5Gopen2 failed on %s", group);
  int rc = h5u_attr_exists(g, attr, &exists);
  if (rc == 0 && exists) {
    if (e->type == DP_T_STR)
      rc = h5u_get_str(g, attr, e->loaded.s, sizeof e->loaded.s);
    else if (e->type == DP_T_F64)
      rc = h5u_get_f64(g, attr, &e->loaded.f);
    else
      rc = h5u_get_i64(g, attr, &e->loaded.i);
    e->found = rc == 0;
  }
  if (g != f)
    H5Gclose(g);
  return rc;
}

static int in_range(const dp_state_entry *e) {
  if (e->type == DP_T_F64)
    return e->loaded.f >= e->lo && e->loaded.f <= e->hi;
  if (e->type == DP_T_I64 || e->type == DP_T_INT)
    return (double)e->loaded.i >= e->lo && (double)e->loaded.i <= e->hi;
  return 1;
}

static int same_as_current(const dp_state_entry *e) {
  switch (e->type) {
  case DP_T_STR:
    return !strcmp(e->loaded.s, (const char *)e->ptr);
  case DP_T_F64:
    return e->loaded.f == *(const double *)e->ptr;
  case DP_T_I64:
    return e->loaded.i == *(const int64_t *)e->ptr;
  case DP_T_INT:
    return e->loaded.i == *(const int *)e->ptr;
  default:
    return 1;
  }
}

/* Every selected scalar into its loaded slot, range-checked; then the components' checks; then the
 * constants nobody checked more specifically. */
static int read_scalars(hid_t f, const char *path, dp_state *s, unsigned mask) {
  for (int i = 0; i < s->n; i++)
    s->e[i].found = 0;
  for (int i = 0; i < s->n; i++) {
    dp_state_entry *e = &s->e[i];
    if (e->rank > 0 || !dp_state_selected(e, mask) || (e->flags & DP_ST_INFO))
      continue;
    if (read_scalar(f, e) < 0)
      return dp_fail(DP_ECKPT, "%s: attribute %s is damaged or of the wrong type", path, e->name);
    if (!e->found && !(e->flags & DP_ST_OPTIONAL))
      return dp_fail(DP_ECKPT, "%s: missing attribute %s", path, e->name);
    if (e->found && !in_range(e))
      return dp_fail(DP_ECKPT, "%s: attribute %s is out of range (expected %g to %g)", path, e->name, e->lo, e->hi);
  }
  for (int i = 0; i < s->n_checks; i++)
    if ((s->check[i].flags & mask) == mask)
      DP_TRY(s->check[i].fn(s->check[i].ctx, s, path));
  for (int i = 0; i < s->n; i++) {
    const dp_state_entry *e = &s->e[i];
    if (e->rank == 0 && (e->flags & DP_ST_CONST) && e->found && dp_state_selected(e, mask) && !same_as_current(e))
      return dp_fail(DP_ECKPT, "%s: attribute %s differs from the configuration's", path, e->name);
  }
  return 0;
}

static void format_dims(char *buf, size_t len, int rank, const int64_t *d) {
  if (rank == 2)
    snprintf(buf, len, "(%lld, %lld)", (long long)d[0], (long long)d[1]);
  else
    snprintf(buf, len, "(%lld)", (long long)d[0]);
}

static int check_shape(hid_t f, const char *path, const dp_state_entry *e) {
  int rank, exists;
  int64_t dims[2];
  if (h5u_exists(f, e->name, &exists) < 0 || !exists)
    return dp_fail(DP_ECKPT, "%s: missing dataset /%s", path, e->name);
  if (h5u_shape(f, e->name, &rank, dims) < 0)
    return dp_fail(DP_ECKPT, "%s: /%s is not a 1- or 2-dimensional dataset", path, e->name);
  if (rank != e->rank || dims[0] != e->dims[0] || (rank == 2 && dims[1] != e->dims[1])) {
    char have[64], want[64];
    format_dims(have, sizeof have, rank, dims);
    format_dims(want, sizeof want, e->rank, e->dims);
    return dp_fail(DP_ECKPT, "%s: /%s is %s in the checkpoint, %s in the config's model", path, e->name, have, want);
  }
  return 0;
}

static int read_tensor(hid_t f, const char *path, const dp_state_entry *e) {
  int rc = e->type == DP_T_F64 ? h5u_read_f64(f, e->name, e->ptr) : h5u_read_f32(f, e->name, e->ptr);
  if (rc < 0)
    return dp_fail(DP_ECKPT, "%s: /%s: checksum mismatch or damaged data", path, e->name);
  return check_hash(f, path, e->name, e->ptr, tensor_bytes(e));
}

static int loadable_tensor(const dp_state_entry *e, unsigned mask) {
  return e->rank > 0 && dp_state_selected(e, mask) && !(e->flags & (DP_ST_INFO | DP_ST_CONST)) &&
         (e->type == DP_T_F32 || e->type == DP_T_F64);
}

static void commit_scalars(dp_state *s, unsigned mask) {
  for (int i = 0; i < s->n; i++) {
    dp_state_entry *e = &s->e[i];
    if (e->rank > 0 || !e->found || !dp_state_selected(e, mask) || (e->flags & (DP_ST_INFO | DP_ST_CONST)))
      continue;
    if (e->type == DP_T_I64)
      *(int64_t *)e->ptr = e->loaded.i;
    else if (e->type == DP_T_INT)
      *(int *)e->ptr = (int)e->loaded.i; /* in range: checked against lo..hi */
    else if (e->type == DP_T_F64)
      *(double *)e->ptr = e->loaded.f;
    else
      snprintf(e->ptr, e->str_len, "%s", e->loaded.s);
  }
}

/* Whether the file holds tensor e (e->found): an optional one may be absent, the others must be there. */
static int find_tensor(hid_t f, const char *path, dp_state_entry *e) {
  e->found = 1;
  if (!(e->flags & DP_ST_OPTIONAL))
    return 0;
  if (h5u_exists(f, e->name, &e->found) < 0)
    return dp_fail(DP_ECKPT, "%s: cannot look up /%s (damaged file?)", path, e->name);
  return 0;
}

/* All checks, then all data: nothing half-read when the file does not fit. */
static int read_state(hid_t f, const char *path, dp_state *s, unsigned mask) {
  DP_TRY(read_scalars(f, path, s, mask));
  for (int i = 0; i < s->n; i++)
    if (loadable_tensor(&s->e[i], mask)) {
      DP_TRY(find_tensor(f, path, &s->e[i]));
      if (s->e[i].found)
        DP_TRY(check_shape(f, path, &s->e[i]));
    }
  for (int i = 0; i < s->n; i++)
    if (loadable_tensor(&s->e[i], mask) && s->e[i].found)
      DP_TRY(read_tensor(f, path, &s->e[i]));
  commit_scalars(s, mask);
  return 0;
}

int dp_ckpt_read(dp_state *s, const char *path, unsigned mask) {
  hid_t f;
  /* The model's weights may come from any file with that layout; a whole state only from a
   * checkpoint of this format. */
  dp_h5_lock(); /* a streaming reader may be reading the training set meanwhile (a restore) */
  int rc = mask == DP_ST_MODEL ? open_file(path, &f) : open_ckpt(path, &f);
  if (rc == 0) {
    rc = read_state(f, path, s, mask);
    H5Fclose(f);
  }
  dp_h5_unlock();
  return rc;
}

int dp_ckpt_load(dp_state *s, const char *path, unsigned mask, dp_comm *c) {
  int rc = c->rank == 0 ? dp_ckpt_read(s, path, mask) : 0;
  DP_TRY(dp_comm_agree(c, rc, NULL));
  return dp_state_bcast(s, c, mask, 0);
}

/* ---- inspecting: from the file alone (it needs no configuration) ---- */

int dp_ckpt_config_text(const char *path, char *buf, size_t len) {
  hid_t f;
  DP_TRY(open_ckpt(path, &f));
  int rank = 0;
  int64_t dims[2] = {0, 0};
  int rc = h5u_shape(f, "config", &rank, dims) < 0 || rank != 1 || (size_t)dims[0] >= len ? -1 : 0;
  if (rc < 0)
    rc = dp_fail(DP_ECKPT, "%s: /config missing, damaged or longer than %zu bytes", path, len - 1);
  else if (h5u_read_text(f, "config", buf, len) < 0)
    rc = dp_fail(DP_ECKPT, "%s: /config: checksum mismatch or damaged data", path);
  else
    rc = check_hash(f, path, "config", buf, strlen(buf));
  H5Fclose(f);
  return rc;
}

static int has_dataset(hid_t f, const char *name) {
  int rank;
  int64_t d[2];
  return h5u_shape(f, name, &rank, d) == 0;
}

static void print_layers(hid_t f, FILE *out) {
  for (int i = 0;; i++) {
    char name[64];
    int rank;
    int64_t w[2];
    snprintf(name, sizeof name, "model/layer%d/weight", i);
    if (h5u_shape(f, name, &rank, w) < 0 || rank != 2)
      break;
    snprintf(name, sizeof name, "model/layer%d/bias", i);
    int has_bias = has_dataset(f, name);
    snprintf(name, sizeof name, "model/layer%d/running_mean", i);
    int batch = has_dataset(f, name);
    const char *extra = has_bias ? ", bias" : batch ? ", batch norm (gain, shift, running statistics)"
                                                    : ", layer norm (gain, shift)";
    size_t n = dp_dense_params((int)w[1], (int)w[0], !has_bias);
    fprintf(out, "  layer%d: weight (%lld, %lld)%s, %zu parameter%s\n", i, (long long)w[0], (long long)w[1], extra, n,
            dp_plural((long long)n));
  }
}

/* Reads a whole dataset in its own type, so that Fletcher32 and the stored hash are both checked. */
static int verify_dataset(hid_t f, const char *path, const char *name) {
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  hid_t ft = d < 0 ? -1 : H5Dget_type(d), sp = d < 0 ? -1 : H5Dget_space(d);
  hid_t mt = ft < 0 ? -1 : H5Tget_native_type(ft, H5T_DIR_ASCEND);
  hssize_t n = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
  size_t bytes = mt < 0 || n < 0 ? 0 : (size_t)n * H5Tget_size(mt);
  void *buf = malloc(bytes ? bytes : 1);
  int rc = mt < 0 || n < 0 || !buf || H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0 ? -1 : 0;
  if (mt >= 0)
    H5Tclose(mt);
  if (ft >= 0)
    H5Tclose(ft);
  if (sp >= 0)
    H5Sclose(sp);
  if (d >= 0)
    H5Dclose(d);
  rc = rc < 0 ? dp_fail(buf ? DP_ECKPT : DP_ENOMEM, "%s: /%s: checksum mismatch or damaged data", path, name)
              : check_hash(f, path, name, buf, bytes);
  free(buf);
  return rc;
}

typedef struct {
  FILE *out;
  const char *path;
  int rc, n;
  char msg[600]; /* the first failure's: reading what follows records messages of its own */
} inspect_ctx;

/* Every stored tensor, whoever registered it: what a resume of this file restores; each one verified. */
static herr_t print_dataset(hid_t g, const char *name, const H5L_info_t *info, void *arg) {
  (void)info;
  inspect_ctx *c = arg;
  int rank;
  int64_t d[2];
  char dims[64];
  if (h5u_shape(g, name, &rank, d) != 0)
    return 0;
  int rc = verify_dataset(g, c->path, name);
  if (rc < 0 && c->rc == 0) {
    c->rc = rc;
    snprintf(c->msg, sizeof c->msg, "%s", dp_errmsg(rc));
  }
  c->n++;
  if (strcmp(name, "config")) {
    format_dims(dims, sizeof dims, rank, d);
    fprintf(c->out, "  /%s %s%s\n", name, dims, rc < 0 ? "  DAMAGED" : "");
  }
  return 0;
}

/* A value that is a decimal number (not an integer, a path or a list), in its shortest form. */
static int shortest_number(const char *v, const char *end, char *num, size_t len) {
  char buf[64];
  while (v < end && *v == ' ')
    v++;
  size_t n = (size_t)(end - v);
  if (n == 0 || n >= sizeof buf)
    return 0;
  memcpy(buf, v, n);
  buf[n] = 0;
  char *stop;
  double d = strtod(buf, &stop);
  if (strspn(buf, "0123456789+-.eE") != n || *stop || !strpbrk(buf, ".eE"))
    return 0;
  dp_format_double(num, len, d);
  return 1;
}

/* The stored configuration, with its numbers in the shortest form that reads back the same: files
 * written before config.ini did so hold 0.20000000000000001 for 0.2. */
static void print_config(FILE *out, const char *text) {
  fputs("config:\n", out);
  for (const char *line = text; *line;) {
    const char *end = strchr(line, '\n');
    size_t n = end ? (size_t)(end - line) : strlen(line);
    const char *eq = memchr(line, '=', n);
    char num[64];
    if (eq && shortest_number(eq + 1, line + n, num, sizeof num))
      fprintf(out, "%.*s= %s\n", (int)(eq - line), line, num);
    else
      fprintf(out, "%.*s\n", (int)n, line);
    line += n + (end != NULL);
  }
}

int dp_ckpt_inspect(const char *path, FILE *out) {
  hid_t f;
  DP_TRY(open_ckpt(path, &f));
  int64_t step = -1, epoch = -1, pos = -1, world = -1, seen = -1;
  char opt[32] = "?", slots[128] = "", when[64] = "?", run[DP_STATE_STR_MAX] = "unknown (an older dptrain)";
  /* A damaged attribute prints its default: inspect shows what is there. */
  h5u_get_i64(f, "step", &step);
  h5u_get_i64(f, "epoch", &epoch);
  h5u_get_i64(f, "position", &pos);
  h5u_get_i64(f, "world_size", &world);
  h5u_get_i64(f, "samples_seen", &seen);
  h5u_get_str(f, "optimizer", opt, sizeof opt);
  h5u_get_str(f, "optimizer_state", slots, sizeof slots);
  h5u_get_str(f, "created", when, sizeof when);
  h5u_get_str(f, "run_id", run, sizeof run);
  fprintf(out, "%s: %s version %d, written %s, run %s\n", path, DP_CKPT_FORMAT, DP_CKPT_VERSION, when, run);
  fprintf(out, "  step %lld, epoch %lld (position %lld in it), %lld sample%s seen, saved by %lld rank%s\n",
          (long long)step, (long long)epoch + 1, (long long)pos, (long long)seen, dp_plural(seen), (long long)world,
          dp_plural(world));
  fprintf(out, "  optimizer %s, state: %s\n", opt, slots[0] ? slots : "none");
  print_layers(f, out);
  fprintf(out, "tensors:\n");
  inspect_ctx ic = {out, path, 0, 0, ""};
  H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, print_dataset, &ic);
  if (ic.rc == 0)
    dp_error_clear(); /* groups are not datasets: h5u_shape said so for each */
  char *text = malloc(CONFIG_MAX);
  if (text && h5u_read_text(f, "config", text, CONFIG_MAX) == 0)
    print_config(out, text);
  free(text);
  H5Fclose(f);
  if (ic.rc == 0)
    fprintf(out, "verified: %d datasets (the Fletcher32 checksum of every chunk, the hash of every tensor)\n", ic.n);
  return ic.rc < 0 ? dp_fail(ic.rc, "%s", ic.msg) : 0;
}
