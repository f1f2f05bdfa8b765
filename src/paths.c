/* Every path a run will use, checked up front: a timeline in a directory that cannot be made, or a
 * resume file that is not there, must stop the run before its first step, not after its training. */
#include "dptrain/paths.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dptrain/checkpoint.h"
#include "dptrain/data.h"
#include "dptrain/error.h"
#include "dptrain/metrics.h" /* dp_mkdirs */
#include "dptrain/run.h"
#include "dptrain/train.h"
#include "fsutil.h"

/* path's directory part into out: "." for a bare name, "/" for the root. */
static void parent_of(const char *path, char *out, size_t len) {
  snprintf(out, len, "%s", path);
  size_t n = strlen(out);
  while (n > 1 && out[n - 1] == '/')
    out[--n] = 0;
  char *slash = strrchr(out, '/');
  if (!slash)
    snprintf(out, len, ".");
  else if (slash == out)
    out[1] = 0;
  else
    *slash = 0;
}

void dp_path_relative_note(const char *path, char *out, size_t len) {
  out[0] = 0;
  if (path[0] == '/')
    return;
  char cwd[DP_PATH_MAX] = "?";
  if (!getcwd(cwd, sizeof cwd))
    snprintf(cwd, sizeof cwd, "(unknown: %s)", strerror(errno));
  snprintf(out, len, "relative to the current directory %s", cwd);
}

/* For a relative path, ", relative to the current directory D", and for a file to read that is
 * missing there but present next to the config file, where it is: the config's directory is not
 * where its relative paths are looked for, and a user who expects it to be is told so. */
static void where(const dp_config *cfg, const char *path, int reading, char *out, size_t len) {
  char rel[DP_PATH_MAX + 64];
  dp_path_relative_note(path, rel, sizeof rel);
  out[0] = 0;
  if (!rel[0])
    return;
  int n = snprintf(out, len, ", %s", rel);
  char dir[DP_PATH_MAX], there[DP_FILE_PATH_MAX];
  if (!reading || !cfg || !cfg->file[0] || n < 0 || (size_t)n >= len)
    return;
  parent_of(cfg->file, dir, sizeof dir);
  if (!strcmp(dir, "."))
    return;
  snprintf(there, sizeof there, "%.*s/%.*s", DP_PATH_MAX / 2, dir, DP_PATH_MAX / 2, path);
  if (access(there, F_OK) == 0)
    snprintf(out + n, len - (size_t)n, "; the config's directory has %s: start from %s or give that path", there,
             dir);
}

/* Rewrites the last error as "<message> (<key><where>)"; cfg may be NULL (a path from the command
 * line), key "" (the message says what the file is). */
static int with_key(const dp_config *cfg, int rc, const char *path, const char *key, int reading) {
  char msg[DP_FILE_PATH_MAX + 256], note[3 * DP_PATH_MAX];
  snprintf(msg, sizeof msg, "%s", dp_errmsg(rc)); /* dp_fail below rewrites that buffer */
  where(cfg, path, reading, note, sizeof note);
  if (!key[0] && !note[0])
    return rc;
  return dp_fail(rc, "%s (%s%s)", msg, key, key[0] ? note : note + 2);
}

static int check_read(const dp_config *cfg, const char *path, const char *what, const char *key, int err) {
  int rc = dp_check_regular(path, what, err, NULL);
  return rc < 0 ? with_key(cfg, rc, path, key, 1) : 0;
}

/* dir is used as it is or made with its parents (mkdir -p): it must be a writable directory, or the
 * nearest part of it that exists must be one. */
static int check_dir(const dp_config *cfg, const char *dir, const char *key) {
  char p[DP_FILE_PATH_MAX], up[DP_FILE_PATH_MAX];
  struct stat st;
  snprintf(p, sizeof p, "%s", dir);
  while (stat(p, &st) != 0) {
    if (errno != ENOENT && errno != ENOTDIR) {
      dp_fail(DP_EIO, "%s: cannot create directory: %s: %s", dir, p, strerror(errno));
      return with_key(cfg, DP_EIO, dir, key, 0);
    }
    parent_of(p, up, sizeof up);
    snprintf(p, sizeof p, "%s", up);
  }
  int exists = !strcmp(p, dir);
  if (!S_ISDIR(st.st_mode))
    dp_fail(DP_EIO, "%s: cannot create directory: %s is not a directory", dir, exists ? "it" : p);
  else if (access(p, W_OK | X_OK) != 0)
    dp_fail(DP_EIO, "%s: cannot %s: %s%s%s", dir, exists ? "write in directory" : "create directory", exists ? "" : p,
            exists ? "" : ": ", strerror(errno));
  else
    return 0;
  return with_key(cfg, DP_EIO, dir, key, 0);
}

/* A file the run will (re)write: absent, or a regular file (writable too when opened in place,
 * as metrics.jsonl is, rather than replaced by a rename). */
static int check_file_slot(const dp_config *cfg, const char *path, const char *what, const char *key, int in_place) {
  struct stat st;
  if (stat(path, &st) != 0)
    return 0;
  if (!S_ISREG(st.st_mode))
    dp_fail(DP_EIO, "%s: cannot write %s there: it is a %s, not a regular file", path, what,
            S_ISDIR(st.st_mode) ? "directory" : "special file");
  else if (in_place && access(path, W_OK) != 0)
    dp_fail(DP_EIO, "%s: cannot write %s: %s", path, what, strerror(errno));
  else
    return 0;
  return with_key(cfg, DP_EIO, path, key, 0);
}

static void ckpt_dir_of(const dp_config *cfg, char *out, size_t len) {
  if (cfg->checkpoint.dir[0])
    snprintf(out, len, "%s", cfg->checkpoint.dir);
  else
    snprintf(out, len, "%.*s/checkpoints", DP_PATH_MAX - 20, cfg->train.out_dir);
}

/* What rank 0 reads: the checkpoint resumed from, else init_from (a resume ignores it). */
static int check_reads(const dp_config *cfg, const char *ckpt_dir, const char *resume) {
  int fresh = !resume;
  if (resume && !strcmp(resume, "auto")) {
    char newest[DP_FILE_PATH_MAX];
    DP_TRY(dp_ckpt_latest(ckpt_dir, newest, sizeof newest, &fresh));
    fresh = !fresh;
  } else if (resume) {
    DP_TRY(check_read(cfg, resume, "checkpoint", "--resume", DP_ECKPT));
  }
  if (fresh && cfg->model.init_from[0])
    DP_TRY(check_read(cfg, cfg->model.init_from, "checkpoint", "[model] init_from", DP_ECKPT));
  return 0;
}

/* What rank 0 writes. */
static int check_writes(const dp_config *cfg, const char *ckpt_dir) {
  const char *out = cfg->train.out_dir;
  char file[DP_FILE_PATH_MAX];
  DP_TRY(check_dir(cfg, out, "[train] out_dir"));
  snprintf(file, sizeof file, "%s/metrics.jsonl", out);
  DP_TRY(check_file_slot(cfg, file, "the metrics", "[train] out_dir", 1));
  snprintf(file, sizeof file, "%s/config.ini", out);
  DP_TRY(check_file_slot(cfg, file, "the configuration", "[train] out_dir", 0));
  DP_TRY(check_dir(cfg, ckpt_dir, cfg->checkpoint.dir[0] ? "[checkpoint] dir" : "[train] out_dir's checkpoints"));
  const char *tl = cfg->train.timeline;
  if (!tl[0])
    return 0;
  parent_of(tl, file, sizeof file);
  DP_TRY(check_dir(cfg, file, "[train] timeline's directory"));
  return check_file_slot(cfg, tl, "the timeline", "[train] timeline", 0);
}

int dp_paths_check(const dp_config *cfg, dp_comm *comm, const char *resume) {
  int rc = check_read(cfg, cfg->data.path, "data file", "[data] path", DP_EDATA);
  char ckpt_dir[DP_FILE_PATH_MAX];
  ckpt_dir_of(cfg, ckpt_dir, sizeof ckpt_dir);
  if (rc == 0 && comm->rank == 0)
    rc = check_reads(cfg, ckpt_dir, resume);
  if (rc == 0 && comm->rank == 0)
    rc = check_writes(cfg, ckpt_dir);
  return dp_comm_agree(comm, rc, NULL);
}

int dp_paths_check_sweep(const dp_config *cfg, dp_comm *comm, const char *csv) {
  int rc = check_read(cfg, cfg->data.path, "data file", "[data] path", DP_EDATA);
  char dir[DP_FILE_PATH_MAX];
  parent_of(csv, dir, sizeof dir);
  if (rc == 0 && comm->rank == 0)
    rc = check_dir(cfg, dir, "the sweep's CSV's directory");
  if (rc == 0 && comm->rank == 0)
    rc = check_file_slot(cfg, csv, "the sweep's results", "the sweep's CSV", 0);
  return dp_comm_agree(comm, rc, NULL);
}

int dp_paths_check_input(const char *path, const char *what, const char *key, int err) {
  return check_read(NULL, path, what, key, err);
}

int dp_paths_check_output(const char *path, const char *what, const char *key) {
  char dir[DP_FILE_PATH_MAX];
  parent_of(path, dir, sizeof dir);
  DP_TRY(check_dir(NULL, dir, key));
  return check_file_slot(NULL, path, what, key, 0);
}

int dp_mkdirs_for(const char *file) {
  char dir[DP_FILE_PATH_MAX];
  parent_of(file, dir, sizeof dir);
  return strchr(file, '/') ? dp_mkdirs(dir) : 0;
}

/* The trainer's own set-up does the fitting: the checks `config --check` makes are the ones a run
 * makes, with the same messages. */
static int check_fit(const dp_config *cfg, dp_comm *comm, dp_dataset *train, dp_dataset *test, FILE *out) {
  int has_test = 0;
  DP_TRY(dp_comm_agree(comm, dp_dataset_open(train, cfg->data.path, "train", NULL), NULL));
  DP_TRY(dp_comm_agree(comm, dp_dataset_open(test, cfg->data.path, "test", &has_test), NULL));
  dp_trainer *t = calloc(1, sizeof *t);
  int rc = t ? 0 : dp_fail(DP_ENOMEM, "out of memory");
  rc = dp_comm_agree(comm, rc, NULL);
  if (rc == 0)
    rc = dp_trainer_create(t, cfg, comm, train);
  if (rc == 0 && has_test)
    rc = dp_check_data_fits(cfg, comm, test, t->model.in_dim, t->model.out_dim);
  if (rc == 0)
    rc = dp_run_init_from(t);
  if (rc == 0 && out) {
    fprintf(out, "%s: ok (%d layer%s, %zu parameter%s); %s: train %lld x %lld", cfg->file, cfg->n_layers,
            dp_plural(cfg->n_layers), t->model.n_params, dp_plural((long long)t->model.n_params), cfg->data.path,
            (long long)train->n, (long long)train->d);
    if (has_test)
      fprintf(out, ", test %lld", (long long)test->n);
    fprintf(out, " fit%s%s%s\n", cfg->model.init_from[0] ? "; init_from " : "", cfg->model.init_from,
            cfg->model.init_from[0] ? " fits" : "");
  }
  if (t)
    dp_trainer_free(t);
  free(t);
  return rc;
}

int dp_config_check_files(const dp_config *cfg, dp_comm *comm, FILE *out) {
  DP_TRY(dp_paths_check(cfg, comm, NULL));
  dp_dataset train, test;
  dp_dataset_init(&train);
  dp_dataset_init(&test);
  int rc = check_fit(cfg, comm, &train, &test, out);
  dp_dataset_close(&train);
  dp_dataset_close(&test);
  return rc;
}
