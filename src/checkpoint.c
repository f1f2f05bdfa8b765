/* HDF5 checkpoints: atomic writes, validated reads, exact resume. */
#include "dptrain/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dptrain/error.h"
#include "dptrain/metrics.h"
#include "h5util.h"

#define CONFIG_MAX (1 << 20) /* the stored config text is read into a buffer of at most this */

/* ---- writing ---- */

/* The model's parameter tensors in block (stats = 0), or its running statistics (stats = 1). */
static int layer_tensors(const dp_model *m, int i, int stats, dp_tensor ts[DP_MAX_TENSORS]) {
  return stats ? dp_model_stat_tensors(m, i, ts) : dp_model_tensors(m, i, ts);
}

static int write_tensors(hid_t f, const char *prefix, const dp_model *m, const float *block, int stats) {
  for (int i = 0; i < m->n_layers; i++) {
    dp_tensor ts[DP_MAX_TENSORS];
    int n = layer_tensors(m, i, stats, ts);
    if (n == 0)
      continue;
    char path[128];
    snprintf(path, sizeof path, "%s/layer%d", prefix, i);
    hid_t g = h5u_group(f, path);
    int rc = g < 0 ? -1 : 0;
    for (int k = 0; k < n && rc == 0; k++) {
      int64_t dims[2] = {ts[k].dims[0], ts[k].dims[1]};
      rc = h5u_write_f32(g, ts[k].name, block + ts[k].offset, ts[k].rank, dims);
    }
    if (g >= 0)
      H5Gclose(g);
    if (rc < 0)
      return -1;
  }
  return 0;
}

/* The optimizer's slot names, comma-separated ("m,v"): a resume checks it against its own. */
static void slot_list(const dp_optim *o, char *buf, size_t len) {
  buf[0] = 0;
  for (int i = 0; i < o->n_slots; i++)
    snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", i ? "," : "", dp_optim_slot_name(o, i));
}

static int write_lbfgs(hid_t f, const dp_trainer *t) {
  const dp_lbfgs *l = &t->lbfgs;
  hid_t g = h5u_group(f, "optimizer/lbfgs");
  int64_t dims[2] = {l->m, (int64_t)l->n};
  int rc = g < 0 ? -1 : 0;
  if (rc == 0)
    rc = h5u_write_f32(g, "s", l->s, 2, dims) | h5u_write_f32(g, "y", l->y, 2, dims) |
         h5u_write_f64(g, "rho", l->rho, l->m) | h5u_write_f32(g, "grad", t->model.grads, 1, &dims[1]) |
         h5u_attr_i64(g, "count", l->count) | h5u_attr_i64(g, "head", l->head) | h5u_attr_i64(g, "iter", l->iter) |
         h5u_attr_i64(g, "evals", l->evals) | h5u_attr_f64(g, "loss", t->lbfgs_f) |
         h5u_attr_i64(g, "converged", t->converged);
  if (g >= 0)
    H5Gclose(g);
  return rc ? -1 : 0;
}

static int write_meta(hid_t f, const dp_trainer *t, const dp_ckpt_extra *x) {
  char slots[128], when[64];
  time_t now = time(NULL);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  slot_list(&t->optim, slots, sizeof slots);
  return h5u_attr_str(f, "format", DP_CKPT_FORMAT) | h5u_attr_i64(f, "version", DP_CKPT_VERSION) |
         h5u_attr_i64(f, "step", t->step) | h5u_attr_i64(f, "epoch", t->epoch) | h5u_attr_i64(f, "position", t->pos) |
         h5u_attr_i64(f, "samples_seen", dp_trainer_samples_seen(t)) |
         h5u_attr_i64(f, "world_size", t->comm->size) | h5u_attr_i64(f, "seed", (int64_t)t->cfg->train.seed) |
         h5u_attr_i64(f, "n_layers", t->model.n_layers) |
         h5u_attr_str(f, "optimizer", dp_optim_name(t->cfg->optimizer.name)) |
         h5u_attr_str(f, "optimizer_state", slots) | h5u_attr_i64(f, "optimizer_steps", t->optim.t) |
         h5u_attr_f64(f, "interval_loss", x->interval_loss) | h5u_attr_f64(f, "interval_acc", x->interval_acc) |
         h5u_attr_i64(f, "interval_steps", x->interval_steps) |
         h5u_attr_i64(f, "interval_samples", x->interval_samples) | h5u_attr_f64(f, "lr_factor", t->lr_factor) |
         h5u_attr_str(f, "created", when);
}

static int write_config(hid_t f, const dp_config *cfg) {
  char *text = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&text, &len);
  if (!mem)
    return -1;
  int rc = dp_config_write(cfg, mem);
  fclose(mem);
  if (rc == 0)
    rc = h5u_write_text(f, "config", text);
  free(text);
  return rc ? -1 : 0;
}

/* Bytes the checkpoint will take, a little over: parameters, optimizer state, statistics, L-BFGS
 * history, checksums and metadata. */
static double estimate_bytes(const dp_trainer *t) {
  double floats = (double)t->model.n_floats * (1 + t->optim.n_slots) + (double)t->model.n_stats;
  if (t->cfg->optimizer.name == DP_OPT_LBFGS)
    floats += (double)t->model.n_floats * (2 * t->lbfgs.m + 1);
  return floats * sizeof(float) * 1.02 + (1 << 16);
}

/* HDF5 1.10 cannot recover from a write that fails for lack of space: the file it could not close
 * crashes the library's clean-up at exit. So a full disk is caught before HDF5 starts writing. */
static int check_space(const dp_trainer *t, const char *dir) {
  struct statvfs v;
  double need = estimate_bytes(t);
  if (statvfs(dir, &v) == 0 && (double)v.f_bavail * (double)v.f_frsize < need) {
    errno = ENOSPC;
    return -1;
  }
  return 0;
}

static int write_file(const dp_trainer *t, const char *path, const dp_ckpt_extra *x) {
  /* The 1.8+ file format checksums the metadata too (object headers, B-trees): a damaged header is
   * then refused by its checksum instead of being parsed (HDF5 1.10's parser of the old headers
   * can be made to read freed memory by a damaged file). h5py and HDF5 >= 1.8 read it. */
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0) {
    if (fapl >= 0)
      H5Pclose(fapl);
    return -1;
  }
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  if (f < 0)
    return -1;
  int rc = write_meta(f, t, x) | write_config(f, t->cfg) | write_tensors(f, "model", &t->model, t->model.params, 0) |
           write_tensors(f, "model", &t->model, t->model.stats, 1);
  for (int i = 0; i < t->optim.n_slots && rc == 0; i++) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "optimizer/%s", dp_optim_slot_name(&t->optim, i));
    rc = write_tensors(f, prefix, &t->model, t->optim.state + (size_t)i * t->optim.n, 0);
  }
  if (rc == 0 && t->cfg->optimizer.name == DP_OPT_LBFGS)
    rc = write_lbfgs(f, t);
  if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0)
    rc = -1;
  if (H5Fclose(f) < 0)
    rc = -1;
  return rc ? -1 : 0;
}

static int fsync_path(const char *path, int dir) {
  int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0)
    return -1;
  int rc = fsync(fd);
  close(fd);
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
static void prune(const char *dir, int keep, const char *writing) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  long long steps[4096];
  int n = 0;
  char path[DP_PATH_MAX + 300];
  for (struct dirent *e; (e = readdir(d));) {
    long long s = ckpt_step(e->d_name);
    size_t len = strlen(e->d_name);
    if (s >= 0 && n < 4096) {
      steps[n++] = s;
    } else if (!strncmp(e->d_name, "ckpt-", 5) && len > 7 && !strcmp(e->d_name + len - 7, ".h5.tmp")) {
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      if (strcmp(path, writing))
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

int dp_ckpt_save(const dp_trainer *t, const char *dir, const dp_ckpt_extra *x, int keep_last, char *path,
                 size_t path_len) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  DP_TRY(dp_mkdirs(dir));
  char final[DP_PATH_MAX + 64], tmp[DP_PATH_MAX + 80];
  snprintf(final, sizeof final, "%s/ckpt-%lld.h5", dir, (long long)t->step);
  snprintf(tmp, sizeof tmp, "%s.tmp", final);
  errno = 0;
  if (check_space(t, dir) < 0 || write_file(t, tmp, x) < 0 || fsync_path(tmp, 0) < 0) {
    int e = errno;
    remove(tmp);
    return dp_fail(DP_EIO, "%s: writing the checkpoint failed (%s); the previous checkpoints are kept", tmp,
                   e ? strerror(e) : "HDF5 error");
  }
  if (getenv("DPTRAIN_TEST_CRASH_BEFORE_RENAME")) /* tests: a writer killed between write and rename */
    raise(SIGKILL);
  if (rename(tmp, final) != 0 || fsync_path(dir, 1) < 0) {
    int e = errno;
    remove(tmp);
    return dp_fail(DP_EIO, "%s: cannot move the checkpoint into place: %s", final, strerror(e));
  }
  prune(dir, keep_last, tmp);
  if (path)
    snprintf(path, path_len, "%s", final);
  return 0;
}

int dp_ckpt_latest(const char *dir, char *path, size_t path_len) {
  DIR *d = opendir(dir);
  if (!d)
    return 1;
  long long best = -1;
  for (struct dirent *e; (e = readdir(d));) {
    long long s = ckpt_step(e->d_name);
    if (s > best)
      best = s;
  }
  closedir(d);
  if (best < 0)
    return 1;
  snprintf(path, path_len, "%s/ckpt-%lld.h5", dir, best);
  return 0;
}

/* ---- reading ---- */

static int open_ckpt(const char *path, hid_t *f) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  if (access(path, R_OK) != 0)
    return dp_fail(DP_ECKPT, "%s: cannot open checkpoint: %s", path, strerror(errno));
  if (H5Fis_hdf5(path) <= 0)
    return dp_fail(DP_ECKPT, "%s: not an HDF5 file (truncated or not a checkpoint)", path);
  *f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (*f < 0)
    return dp_fail(DP_ECKPT, "%s: HDF5 cannot open it (truncated or damaged)", path);
  char fmt[64];
  int64_t version = -1;
  if (h5u_get_str(*f, "format", fmt, sizeof fmt) < 0 || strcmp(fmt, DP_CKPT_FORMAT)) {
    H5Fclose(*f);
    return dp_fail(DP_ECKPT, "%s: not a dptrain checkpoint (no format attribute '%s')", path, DP_CKPT_FORMAT);
  }
  if (h5u_get_i64(*f, "version", &version) < 0) {
    H5Fclose(*f);
    return dp_fail(DP_ECKPT, "%s: missing the format version attribute", path);
  }
  if (version != DP_CKPT_VERSION) {
    H5Fclose(*f);
    return dp_fail(DP_ECKPT, "%s: checkpoint format version %lld, this dptrain reads version %d", path,
                   (long long)version, DP_CKPT_VERSION);
  }
  return 0;
}

/* Reads prefix/layer<i>/<tensor> for every layer into block, checking every shape first. */
static int read_tensors(hid_t f, const char *path, const char *prefix, const dp_model *m, float *block, int stats) {
  int64_t n_layers = -1;
  if (!strcmp(prefix, "model") && h5u_get_i64(f, "n_layers", &n_layers) == 0 && n_layers != m->n_layers)
    return dp_fail(DP_ECKPT, "%s: the checkpoint's model has %lld layers, the config %d", path, (long long)n_layers,
                   m->n_layers);
  for (int pass = 0; pass < 2; pass++) /* all shapes, then all data: nothing half-read on a mismatch */
    for (int i = 0; i < m->n_layers; i++) {
      dp_tensor ts[DP_MAX_TENSORS];
      int n = layer_tensors(m, i, stats, ts);
      for (int k = 0; k < n; k++) {
        char name[160];
        snprintf(name, sizeof name, "%s/layer%d/%s", prefix, i, ts[k].name);
        int rank;
        int64_t dims[2];
        if (h5u_shape(f, name, &rank, dims) < 0)
          return dp_fail(DP_ECKPT, "%s: missing dataset /%s", path, name);
        if (rank != ts[k].rank || dims[0] != ts[k].dims[0] || (rank == 2 && dims[1] != ts[k].dims[1]))
          return dp_fail(DP_ECKPT, "%s: /%s is (%lld%s%lld) in the checkpoint, (%d%s%d) in the config's model", path,
                         name, (long long)dims[0], rank == 2 ? ", " : "", rank == 2 ? (long long)dims[1] : 0LL,
                         ts[k].dims[0], ts[k].rank == 2 ? ", " : "", ts[k].rank == 2 ? ts[k].dims[1] : 0);
        if (pass == 1 && h5u_read_f32(f, name, block + ts[k].offset) < 0)
          return dp_fail(DP_ECKPT, "%s: /%s: checksum mismatch or damaged data", path, name);
      }
    }
  return 0;
}

int dp_ckpt_load_weights(dp_model *m, const char *path) {
  hid_t f;
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  if (access(path, R_OK) != 0)
    return dp_fail(DP_ECKPT, "%s: cannot open: %s", path, strerror(errno));
  if (H5Fis_hdf5(path) <= 0 || (f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0)
    return dp_fail(DP_ECKPT, "%s: not a readable HDF5 file", path);
  int rc = read_tensors(f, path, "model", m, m->params, 0);
  if (rc == 0)
    rc = read_tensors(f, path, "model", m, m->stats, 1);
  H5Fclose(f);
  return rc;
}

/* The scalars every rank needs, sent in one broadcast. */
typedef struct {
  int64_t step, epoch, pos, optim_t;
  int64_t lb_count, lb_head, lb_iter, lb_evals, converged;
  double lbfgs_f, lr_factor;
  dp_ckpt_extra x;
} scalars;

static int read_meta(hid_t f, const char *path, const dp_trainer *t, scalars *s) {
  char opt[32], slots[128], mine[128];
  if (h5u_get_str(f, "optimizer", opt, sizeof opt) < 0 || h5u_get_str(f, "optimizer_state", slots, sizeof slots) < 0)
    return dp_fail(DP_ECKPT, "%s: missing the optimizer attributes", path);
  slot_list(&t->optim, mine, sizeof mine);
  if (strcmp(opt, dp_optim_name(t->cfg->optimizer.name)) || strcmp(slots, mine))
    return dp_fail(DP_ECKPT, "%s: the checkpoint holds %s state (%s), the config's optimizer is %s (%s)", path, opt,
                   slots[0] ? slots : "none", dp_optim_name(t->cfg->optimizer.name), mine[0] ? mine : "none");
  int bad = h5u_get_i64(f, "step", &s->step) | h5u_get_i64(f, "epoch", &s->epoch) | h5u_get_i64(f, "position", &s->pos) |
            h5u_get_i64(f, "optimizer_steps", &s->optim_t) | h5u_get_f64(f, "interval_loss", &s->x.interval_loss) |
            h5u_get_f64(f, "interval_acc", &s->x.interval_acc) |
            h5u_get_i64(f, "interval_steps", &s->x.interval_steps) |
            h5u_get_i64(f, "interval_samples", &s->x.interval_samples);
  if (h5u_get_f64(f, "lr_factor", &s->lr_factor) < 0) /* written since on_nonfinite = restore */
    s->lr_factor = 1.0;
  if (bad || s->step < 0 || s->epoch < 0 || s->pos < 0 || s->pos > t->steps_per_epoch || s->optim_t < 0 ||
      !(s->lr_factor > 0 && s->lr_factor <= 1))
    return dp_fail(DP_ECKPT, "%s: missing or invalid step/epoch/position attributes", path);
  if (s->pos == t->steps_per_epoch) { /* saved at an epoch's end: continue with the next */
    s->epoch++;
    s->pos = 0;
  }
  return 0;
}

static int read_lbfgs(hid_t f, const char *path, dp_trainer *t, scalars *s) {
  dp_lbfgs *l = &t->lbfgs;
  int rank;
  int64_t dims[2];
  if (h5u_shape(f, "optimizer/lbfgs/s", &rank, dims) < 0 || rank != 2 || dims[0] != l->m || dims[1] != (int64_t)l->n)
    return dp_fail(DP_ECKPT, "%s: /optimizer/lbfgs/s missing or not (%d, %zu) (history and model must match)", path,
                   l->m, l->n);
  hid_t g = H5Gopen2(f, "optimizer/lbfgs", H5P_DEFAULT);
  int bad = h5u_read_f32(g, "s", l->s) | h5u_read_f32(g, "y", l->y) | h5u_read_f64(g, "rho", l->rho) |
            h5u_read_f32(g, "grad", t->model.grads) | h5u_get_i64(g, "count", &s->lb_count) |
            h5u_get_i64(g, "head", &s->lb_head) | h5u_get_i64(g, "iter", &s->lb_iter) |
            h5u_get_i64(g, "evals", &s->lb_evals) | h5u_get_f64(g, "loss", &s->lbfgs_f) |
            h5u_get_i64(g, "converged", &s->converged);
  H5Gclose(g);
  if (bad || s->lb_count < 0 || s->lb_count > l->m || s->lb_head < 0 || s->lb_head >= l->m)
    return dp_fail(DP_ECKPT, "%s: /optimizer/lbfgs: checksum mismatch, damaged or invalid data", path);
  return 0;
}

static int read_all(dp_trainer *t, const char *path, scalars *s) {
  hid_t f;
  DP_TRY(open_ckpt(path, &f));
  int rc = read_meta(f, path, t, s);
  if (rc == 0)
    rc = read_tensors(f, path, "model", &t->model, t->model.params, 0);
  if (rc == 0)
    rc = read_tensors(f, path, "model", &t->model, t->model.stats, 1);
  for (int i = 0; i < t->optim.n_slots && rc == 0; i++) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "optimizer/%s", dp_optim_slot_name(&t->optim, i));
    rc = read_tensors(f, path, prefix, &t->model, dp_optim_slot(&t->optim, i), 0);
  }
  if (rc == 0 && t->cfg->optimizer.name == DP_OPT_LBFGS)
    rc = read_lbfgs(f, path, t, s);
  H5Fclose(f);
  return rc;
}

static int bcast_state(dp_trainer *t, scalars *s) {
  dp_comm *c = t->comm;
  DP_TRY(dp_comm_bcast(c, s, sizeof *s, 0));
  DP_TRY(dp_comm_bcast(c, t->model.params, sizeof(float) * t->model.n_floats, 0));
  if (t->model.n_stats)
    DP_TRY(dp_comm_bcast(c, t->model.stats, sizeof(float) * t->model.n_stats, 0));
  if (t->optim.n_slots)
    DP_TRY(dp_comm_bcast(c, t->optim.state, sizeof(float) * t->optim.n * (size_t)t->optim.n_slots, 0));
  if (t->cfg->optimizer.name == DP_OPT_LBFGS) {
    dp_lbfgs *l = &t->lbfgs;
    DP_TRY(dp_comm_bcast(c, l->s, sizeof(float) * l->n * (size_t)l->m, 0));
    DP_TRY(dp_comm_bcast(c, l->y, sizeof(float) * l->n * (size_t)l->m, 0));
    DP_TRY(dp_comm_bcast(c, l->rho, sizeof(double) * (size_t)l->m, 0));
    DP_TRY(dp_comm_bcast(c, t->model.grads, sizeof(float) * t->model.n_floats, 0));
  }
  return 0;
}

int dp_ckpt_load(dp_trainer *t, const char *path, dp_ckpt_extra *x) {
  scalars s;
  memset(&s, 0, sizeof s);
  int rc = t->comm->rank == 0 ? read_all(t, path, &s) : 0;
  DP_TRY(dp_comm_agree(t->comm, rc, NULL));
  DP_TRY(bcast_state(t, &s));
  t->step = s.step;
  t->epoch = s.epoch;
  t->pos = s.pos;
  t->perm_epoch = -1; /* redrawn from (seed, epoch) at the next step */
  t->optim.t = s.optim_t;
  t->lbfgs.count = (int)s.lb_count;
  t->lbfgs.head = (int)s.lb_head;
  t->lbfgs.iter = s.lb_iter;
  t->lbfgs.evals = s.lb_evals;
  t->lbfgs_f = s.lbfgs_f;
  t->converged = (int)s.converged;
  t->lr_factor = s.lr_factor;
  if (x)
    *x = s.x;
  return 0;
}

/* ---- inspecting ---- */

int dp_ckpt_config_text(const char *path, char *buf, size_t len) {
  hid_t f;
  DP_TRY(open_ckpt(path, &f));
  int rc = h5u_read_text(f, "config", buf, len);
  H5Fclose(f);
  return rc < 0 ? dp_fail(DP_ECKPT, "%s: /config missing, damaged or longer than %zu bytes", path, len - 1) : 0;
}

static void print_layers(hid_t f, FILE *out) {
  for (int i = 0;; i++) {
    char name[64];
    int rank;
    int64_t w[2], b[2];
    snprintf(name, sizeof name, "model/layer%d/weight", i);
    if (h5u_shape(f, name, &rank, w) < 0 || rank != 2)
      break;
    snprintf(name, sizeof name, "model/layer%d/bias", i);
    int has_bias = h5u_shape(f, name, &rank, b) == 0;
    snprintf(name, sizeof name, "model/layer%d/running_mean", i);
    int batch = h5u_shape(f, name, &rank, b) == 0;
    const char *extra = has_bias ? ", bias" : batch ? ", batch norm (gain, shift, running statistics)"
                                                    : ", layer norm (gain, shift)";
    fprintf(out, "  layer%d: weight (%lld, %lld)%s, %lld parameters\n", i, (long long)w[0], (long long)w[1], extra,
            (long long)(w[0] * w[1] + (has_bias ? 1 : 2) * w[0]));
  }
}

int dp_ckpt_inspect(const char *path, FILE *out) {
  hid_t f;
  DP_TRY(open_ckpt(path, &f));
  int64_t step = -1, epoch = -1, pos = -1, world = -1, seen = -1;
  char opt[32] = "?", slots[128] = "", when[64] = "?";
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
  char *text = malloc(CONFIG_MAX);
  if (text && h5u_read_text(f, "config", text, CONFIG_MAX) == 0)
    fprintf(out, "config:\n%s", text);
  free(text);
  H5Fclose(f);
  return 0;
}
