#include "dptrain/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dptrain/error.h"

int dp_mkdirs(const char *path) {
  char buf[1024];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf)
    return dp_fail(DP_EIO, "%s: directory path empty or too long", path);
  memcpy(buf, path, n + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = 0;
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
      return dp_fail(DP_EIO, "%s: cannot create directory: %s", buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0777) != 0 && errno != EEXIST)
    return dp_fail(DP_EIO, "%s: cannot create directory: %s", buf, strerror(errno));
  return 0;
}

/* A resumed run continues metrics.jsonl: lines of steps after the checkpoint (logged by the
 * interrupted run after it saved) are dropped, so every step appears once. */
static int keep_until(const char *path, int64_t step) {
  char tmp[1300];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *in = fopen(path, "r");
  if (!in)
    return 0; /* nothing to continue */
  FILE *out = fopen(tmp, "w");
  if (!out) {
    fclose(in);
    return dp_fail(DP_EIO, "%s: cannot write: %s", tmp, strerror(errno));
  }
  char *line = NULL;
  size_t cap = 0;
  long long s;
  while (getline(&line, &cap, in) > 0)
    if (sscanf(line, "{\"step\":%lld", &s) == 1 && s <= step)
      fputs(line, out);
  free(line);
  fclose(in);
  if (fclose(out) != 0 || rename(tmp, path) != 0) {
    remove(tmp);
    return dp_fail(DP_EIO, "%s: cannot rewrite: %s", path, strerror(errno));
  }
  return 0;
}

int dp_metrics_open(dp_metrics *m, const char *out_dir, int is_root, FILE *out, int64_t resume_step) {
  memset(m, 0, sizeof *m);
  if (!is_root)
    return 0;
  m->out = out;
  DP_TRY(dp_mkdirs(out_dir));
  char path[1200];
  snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
  if (resume_step >= 0)
    DP_TRY(keep_until(path, resume_step));
  m->jsonl = fopen(path, resume_step >= 0 ? "a" : "w");
  if (!m->jsonl)
    return dp_fail(DP_EIO, "%s: cannot write: %s", path, strerror(errno));
  return 0;
}

/* JSON has no NaN or Infinity: write null so every line stays parseable. */
static void json_num(FILE *f, const char *key, double v) {
  if (isfinite(v))
    fprintf(f, ",\"%s\":%.9g", key, v);
  else
    fprintf(f, ",\"%s\":null", key);
}

static int flush_line(dp_metrics *m) {
  fputs("}\n", m->jsonl);
  if (fflush(m->jsonl) != 0)
    return dp_fail(DP_EIO, "metrics.jsonl: write failed: %s", strerror(errno));
  return 0;
}

int dp_metrics_step(dp_metrics *m, const dp_step_log *s) {
  if (m->out)
    fprintf(m->out, "epoch %3lld  step %7lld (%lld/%lld)  loss %.5f  acc %.4f  lr %.4g  %.0f samples/s\n",
            (long long)s->epoch + 1, (long long)s->step, (long long)s->pos, (long long)s->steps_per_epoch, s->loss,
            s->acc, s->lr, s->samples_per_s);
  if (!m->jsonl)
    return 0;
  fprintf(m->jsonl, "{\"step\":%lld,\"epoch\":%lld", (long long)s->step, (long long)s->epoch + 1);
  json_num(m->jsonl, "loss", s->loss);
  json_num(m->jsonl, "train_acc", s->acc);
  json_num(m->jsonl, "lr", s->lr);
  json_num(m->jsonl, "grad_norm", s->grad_norm);
  json_num(m->jsonl, "samples_per_s", s->samples_per_s);
  json_num(m->jsonl, "step_ms", s->step_ms);
  static const char *const names[6] = {"compute_ms_mean", "comm_ms_mean", "optim_ms_mean",
                                       "compute_ms_max",  "comm_ms_max",  "optim_ms_max"};
  for (int i = 0; i < 6; i++)
    json_num(m->jsonl, names[i], s->compute_ms[i]);
  return flush_line(m);
}

int dp_metrics_eval(dp_metrics *m, int64_t step, int64_t epoch, double test_loss, double test_acc, double train_s) {
  if (m->out)
    fprintf(m->out, "epoch %3lld  step %7lld  test_loss %.5f  test_acc %.4f\n", (long long)epoch + 1,
            (long long)step, test_loss, test_acc);
  if (!m->jsonl)
    return 0;
  fprintf(m->jsonl, "{\"step\":%lld,\"epoch\":%lld", (long long)step, (long long)epoch + 1);
  json_num(m->jsonl, "test_loss", test_loss);
  json_num(m->jsonl, "test_acc", test_acc);
  json_num(m->jsonl, "train_s", train_s);
  return flush_line(m);
}

void dp_metrics_close(dp_metrics *m) {
  if (m->jsonl)
    fclose(m->jsonl);
  m->jsonl = NULL;
}
