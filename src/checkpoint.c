/* HDF5 checkpoints: the registered state, written atomically, read after validation. */
#include "dptrain/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "dptrain/error.h"
#include "dptrain/metrics.h"
#include "dptrain/model.h"
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

static int write_tensor(hid_t f, const dp_state_entry *e) {
  switch (e->type) {
  case DP_T_F32:
    return h5u_write(f, e->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, e->ptr, e->rank, e->dims, &h5u_checksummed);
  case DP_T_F64:
    return h5u_write(f, e->name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, e->ptr, e->rank, e->dims, &h5u_checksummed);
  case DP_T_U8:
    return h5u_write(f, e->name, H5T_STD_U8LE, H5T_NATIVE_UCHAR, e->ptr, e->rank, e->dims, &h5u_checksummed);
  default:
    return dp_fail(DP_EINVAL, "state: tensor %s of a scalar type", e->name);
  }
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

/* HDF5 1.10 cannot recover from a write that fails for lack of space: the file it could not close
 * crashes the library's clean-up at exit. So a full disk is caught before HDF5 starts writing: the
 * state's bytes, a little over for checksums, chunk indices and metadata. */
static int check_space(const dp_state *s, const char *dir) {
  struct statvfs v;
  double need = dp_state_bytes(s, 0) * 1.02 + (1 << 16);
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
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  if (f < 0)
    return dp_fail(DP_EHDF5, "HDF5 H5Fcreate failed");
  int rc = write_meta(f);
  if (rc == 0)
    rc = make_groups(f, c->s);
  for (int i = 0; i < c->s->n && rc == 0; i++)
    rc = write_entry(f, &c->s->e[i]);
  if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0 && rc == 0)
    rc = dp_fail(DP_EHDF5, "HDF5 H5Fflush failed");
  if (H5Fclose(f) < 0 && rc == 0)
    rc = dp_fail(DP_EHDF5, "HDF5 H5Fclose failed");
  return rc;
}

/* Parses "ckpt-<step>.h5" exactly (no .tmp); returns the step or -1. */
static long long ckpt_step(const char *name) {
  long long step;
  int end = 0;
  if (sscanf(name, "ckpt-%lld.h5%n", &step, &end) == 1 && name[end] == 0 && step >= 0)
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

int dp_ckpt_save(const dp_state *s, const char *dir, int64_t step, int keep_last, char *path, size_t path_len) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  DP_TRY(dp_mkdirs(dir));
  char final[DP_FILE_PATH_MAX];
  if (snprintf(final, sizeof final, "%s/ckpt-%lld.h5", dir, (long long)step) >= (int)sizeof final)
    return dp_fail(DP_EIO, "%s: checkpoint directory name too long", dir);
  save_ctx c = {s, dir};
  int rc = dp_write_durable(final, "the checkpoint", write_file, &c);
  if (rc < 0) {
    char msg[700];
    snprintf(msg, sizeof msg, "%s", dp_errmsg(rc));
    return dp_fail(rc, "%s; the previous checkpoints are kept", msg);
  }
  prune(dir, keep_last);
  if (path)
    snprintf(path, path_len, "%s", final);
  return 0;
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
  if (access(path, R_OK) != 0)
    return dp_fail(DP_ECKPT, "%s: cannot open checkpoint: %s", path, strerror(errno));
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
  return rc < 0 ? dp_fail(DP_ECKPT, "%s: /%s: checksum mismatch or damaged data", path, e->name) : 0;
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

/* All checks, then all data: nothing half-read when the file does not fit. */
static int read_state(hid_t f, const char *path, dp_state *s, unsigned mask) {
  DP_TRY(read_scalars(f, path, s, mask));
  for (int i = 0; i < s->n; i++)
    if (loadable_tensor(&s->e[i], mask))
      DP_TRY(check_shape(f, path, &s->e[i]));
  for (int i = 0; i < s->n; i++)
    if (loadable_tensor(&s->e[i], mask))
      DP_TRY(read_tensor(f, path, &s->e[i]));
  commit_scalars(s, mask);
  return 0;
}

int dp_ckpt_read(dp_state *s, const char *path, unsigned mask) {
  hid_t f;
  /* The model's weights may come from any file with that layout; a whole state only from a
   * checkpoint of this format. */
  DP_TRY(mask == DP_ST_MODEL ? open_file(path, &f) : open_ckpt(path, &f));
  int rc = read_state(f, path, s, mask);
  H5Fclose(f);
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
  int rc = h5u_read_text(f, "config", buf, len);
  H5Fclose(f);
  return rc < 0 ? dp_fail(DP_ECKPT, "%s: /config missing, damaged or longer than %zu bytes", path, len - 1) : 0;
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
    fprintf(out, "  layer%d: weight (%lld, %lld)%s, %zu parameters\n", i, (long long)w[0], (long long)w[1], extra,
            dp_dense_params((int)w[1], (int)w[0], !has_bias));
  }
}

/* Every stored tensor, whoever registered it: what a resume of this file restores. */
static herr_t print_dataset(hid_t g, const char *name, const H5L_info_t *info, void *arg) {
  (void)info;
  int rank;
  int64_t d[2];
  char dims[64];
  if (strcmp(name, "config") && h5u_shape(g, name, &rank, d) == 0) {
    format_dims(dims, sizeof dims, rank, d);
    fprintf(arg, "  /%s %s\n", name, dims);
  }
  return 0;
}

int dp_ckpt_inspect(const char *path, FILE *out) {
  hid_t f;
  DP_TRY(open_ckpt(path, &f));
  int64_t step = -1, epoch = -1, pos = -1, world = -1, seen = -1;
  char opt[32] = "?", slots[128] = "", when[64] = "?";
  /* A damaged attribute prints its default: inspect shows what is there. */
  h5u_get_i64(f, "step", &step);
  h5u_get_i64(f, "epoch", &epoch);
  h5u_get_i64(f, "position", &pos);
  h5u_get_i64(f, "world_size", &world);
  h5u_get_i64(f, "samples_seen", &seen);
  h5u_get_str(f, "optimizer", opt, sizeof opt);
  h5u_get_str(f, "optimizer_state", slots, sizeof slots);
  h5u_get_str(f, "created", when, sizeof when);
  fprintf(out, "%s: %s version %d, written %s\n", path, DP_CKPT_FORMAT, DP_CKPT_VERSION, when);
  fprintf(out, "  step %lld, epoch %lld (position %lld in it), %lld samples seen, saved by %lld rank%s\n",
          (long long)step, (long long)epoch + 1, (long long)pos, (long long)seen, (long long)world,
          world == 1 ? "" : "s");
  fprintf(out, "  optimizer %s, state: %s\n", opt, slots[0] ? slots : "none");
  print_layers(f, out);
  fprintf(out, "tensors:\n");
  H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, print_dataset, out);
  dp_error_clear(); /* groups are not datasets: h5u_shape said so for each */
  char *text = malloc(CONFIG_MAX);
  if (text && h5u_read_text(f, "config", text, CONFIG_MAX) == 0)
    fprintf(out, "config:\n%s", text);
  free(text);
  H5Fclose(f);
  return 0;
}
