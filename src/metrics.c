#include "dptrain/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "dptrain/config.h"
#include "dptrain/error.h"
#include "fsutil.h"

int dp_mkdirs(const char *path) {
  char buf[DP_FILE_PATH_MAX];
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

typedef struct {
  FILE *in;
  int64_t step;
} kept_lines;

/* dp_write_durable_stdio's fill: the old file's lines up to the step. */
static int copy_until(FILE *out, void *arg) {
  const kept_lines *k = arg;
  char *line = NULL;
  size_t cap = 0;
  long long s;
  while (getline(&line, &cap, k->in) > 0)
    if (sscanf(line, "{\"step\":%lld", &s) == 1 && s <= k->step)
      fputs(line, out);
  free(line);
  return ferror(k->in) || ferror(out) ? DP_EIO : 0;
}

/* A resumed run continues metrics.jsonl: lines of steps after the checkpoint (logged by the
 * interrupted run after it saved) are dropped, so every step appears once. */
static int keep_until(const char *path, int64_t step) {
  kept_lines k = {fopen(path, "r"), step};
  if (!k.in)
    return 0; /* nothing to continue */
  int rc = dp_write_durable_stdio(path, "the metrics log", copy_until, &k);
  fclose(k.in);
  return rc;
}

static int wants_bar(FILE *out, dp_progress_mode mode) {
  if (!out)
    return 0;
  if (mode != DP_PROGRESS_AUTO)
    return mode == DP_PROGRESS_BAR;
  return isatty(fileno(out));
}

int dp_metrics_open(dp_metrics *m, const char *out_dir, int is_root, FILE *out, int64_t resume_step,
                    dp_progress_mode mode) {
  memset(m, 0, sizeof *m);
  if (!is_root)
    return 0;
  m->out = out;
  m->tty = wants_bar(out, mode);
  DP_TRY(dp_mkdirs(out_dir));
  char path[DP_FILE_PATH_MAX];
  if ((size_t)snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir) >= sizeof path)
    return dp_fail(DP_EINVAL, "%s/metrics.jsonl: path too long (at most %d bytes)", out_dir, DP_FILE_PATH_MAX - 1);
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

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void clear_bar(dp_metrics *m) {
  if (m->bar_open)
    fputs("\r\033[K", m->out);
  m->bar_open = 0;
}

void dp_metrics_note(dp_metrics *m, const char *fmt, ...) {
  if (!m->out)
    return;
  clear_bar(m);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(m->out, fmt, ap);
  va_end(ap);
  fflush(m->out);
}

static void hms(char *buf, size_t len, double s) {
  long t = s > 0 && s < 1e8 ? (long)(s + 0.5) : 0;
  if (t >= 3600)
    snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

/* The terminal's width. A bar wider than it wraps, and "\r\033[K" then clears only the last of its
 * rows, leaving stale lines; COLUMNS where the ioctl knows none (a launcher's pseudo-terminal). */
static int term_cols(FILE *out) {
  struct winsize ws;
  if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  const char *c = getenv("COLUMNS");
  int n = c ? atoi(c) : 0;
  return n > 0 ? n : 80;
}

/* A part of the bar after the step count; a narrow terminal drops those of higher `drop` first. */
typedef struct {
  char text[48];
  int drop;
} bar_part;

enum { BAR_PARTS = 5, BAR_MAX = 24, BAR_MIN = 10 };

static int compose_bar(char *line, size_t len, const dp_progress *p, const bar_part *part, int keep, int width) {
  char bar[BAR_MAX + 1];
  int fill = (int)(width * p->pos / (p->steps_per_epoch > 0 ? p->steps_per_epoch : 1));
  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[width] = 0;
  int n = snprintf(line, len, "epoch %lld%s%s%s %lld/%lld", (long long)p->epoch + 1, width ? " [" : "", bar,
                   width ? "]" : "", (long long)p->pos, (long long)p->steps_per_epoch);
  for (int i = 0; i < BAR_PARTS && n < (int)len; i++)
    if (part[i].drop < keep)
      n += snprintf(line + n, len - (size_t)n, "%s", part[i].text);
  return n < (int)len ? n : (int)len - 1;
}

void dp_metrics_progress(dp_metrics *m, const dp_progress *p) {
  int last = p->pos == p->steps_per_epoch;
  double t = now_s();
  if (!m->tty || !m->out || (!last && t - m->last_draw < 0.1))
    return;
  m->last_draw = t;
  char eta_e[32], eta_r[32], line[512];
  hms(eta_e, sizeof eta_e, p->eta_epoch_s);
  hms(eta_r, sizeof eta_r, p->eta_run_s);
  bar_part part[BAR_PARTS] = {{.drop = 0}, {.drop = 2}, {.drop = 3}, {.drop = 1}, {.drop = 4}};
  snprintf(part[0].text, sizeof part[0].text, "  %s %.4f", last ? "epoch loss" : "loss", p->loss);
  snprintf(part[1].text, sizeof part[1].text, "  lr %.3g", p->lr);
  snprintf(part[2].text, sizeof part[2].text, "  %.0f samples/s", p->samples_per_s);
  if (m->line_search) /* its iterations evaluate the whole set several times: no rate of samples */
    part[2].text[0] = 0;
  snprintf(part[3].text, sizeof part[3].text, "  ETA %s", eta_e);
  snprintf(part[4].text, sizeof part[4].text, " (run %s)", eta_r);
  int cols = term_cols(m->out) - 1; /* writing the last column wraps on some terminals */
  int keep = BAR_PARTS, width = 0;
  for (; keep > 1; keep--) { /* the widest bar that fits with the most parts, else the loss alone */
    width = cols - 3 - compose_bar(line, sizeof line, p, part, keep, 0); /* 3: " []" */
    if (width >= BAR_MIN)
      break;
  }
  width = keep > 1 ? width : cols - 3 - compose_bar(line, sizeof line, p, part, keep, 0);
  int n = compose_bar(line, sizeof line, p, part, keep, width < 0 ? 0 : width > BAR_MAX ? BAR_MAX : width);
  fprintf(m->out, "\r\033[K%.*s", n < cols ? n : cols > 0 ? cols : 0, line);
  m->bar_open = !last;
  if (last)
    fputc('\n', m->out);
  fflush(m->out);
}

/* What a progress line says of the interval besides its loss: a full-batch line search's iteration
 * has no accuracy nor a rate of samples (it evaluates the whole set several times), but a gradient
 * norm, evaluations and the step it accepted; regression has RMSE and MAE. */
static void print_interval(const dp_metrics *m, const dp_step_log *s) {
  if (m->line_search)
    fprintf(m->out, "  |g| %.4g  evals %lld  line step %.4g", s->grad_norm, (long long)s->evals, s->line_step);
  if (m->regression)
    fprintf(m->out, "  rmse %.5g  mae %.5g", s->rmse, s->mae);
  else if (!m->line_search)
    fprintf(m->out, "  acc %.4f", s->acc);
  fprintf(m->out, "  lr %.4g", s->lr);
  if (!m->line_search)
    fprintf(m->out, "  %.0f samples/s", s->samples_per_s);
}

int dp_metrics_step(dp_metrics *m, const dp_step_log *s) {
  if (m->out && (!m->tty || m->verbose)) {
    clear_bar(m);
    fprintf(m->out, "epoch %3lld  step %7lld (%lld/%lld)  loss %.5f", (long long)s->epoch + 1, (long long)s->step,
            (long long)s->pos, (long long)s->steps_per_epoch, s->loss);
    print_interval(m, s);
    if (m->verbose && !m->line_search) /* a line search's lines show |g| already */
      fprintf(m->out, "  |g| %.4g", s->grad_norm);
    if (m->verbose)
      fprintf(m->out, "  step %.2f ms (compute %.2f, comm wait %.2f, optimizer %.2f; max over ranks)", s->step_ms,
              s->compute_ms[3], s->compute_ms[4], s->compute_ms[5]);
    fputc('\n', m->out);
    fflush(m->out);
  }
  if (!m->jsonl)
    return 0;
  fprintf(m->jsonl, "{\"step\":%lld,\"epoch\":%lld,\"samples\":%lld", (long long)s->step, (long long)s->epoch + 1,
          (long long)s->samples);
  /* Epochs done, fractional: runs of different batch sizes line up on it (scripts/plot.py). */
  json_num(m->jsonl, "epochs_done",
           (double)s->epoch + (s->steps_per_epoch > 0 ? (double)s->pos / (double)s->steps_per_epoch : 0.0));
  json_num(m->jsonl, "loss", s->loss);
  if (m->regression) {
    json_num(m->jsonl, "rmse", s->rmse);
    json_num(m->jsonl, "mae", s->mae);
  } else if (!m->line_search) {
    json_num(m->jsonl, "train_acc", s->acc);
  }
  json_num(m->jsonl, "lr", s->lr);
  json_num(m->jsonl, "grad_norm", s->grad_norm);
  if (m->line_search) {
    fprintf(m->jsonl, ",\"evals\":%lld", (long long)s->evals);
    json_num(m->jsonl, "line_step", s->line_step);
  } else {
    json_num(m->jsonl, "samples_per_s", s->samples_per_s);
  }
  json_num(m->jsonl, "step_ms", s->step_ms);
  static const char *const names[6] = {"compute_ms_mean", "comm_ms_mean", "optim_ms_mean",
                                       "compute_ms_max",  "comm_ms_max",  "optim_ms_max"};
  for (int i = 0; i < 6; i++)
    json_num(m->jsonl, names[i], s->compute_ms[i]);
  return flush_line(m);
}

void dp_scores_format(char *buf, size_t len, const char *set, const dp_scores *e, int regression) {
  if (regression)
    snprintf(buf, len, "%s_loss %.5f  %s_rmse %.5g  %s_mae %.5g", set, e->loss, set, e->rmse, set, e->mae);
  else
    snprintf(buf, len, "%s_loss %.5f  %s_acc %.4f", set, e->loss, set, e->acc);
}

static void json_scores(const dp_metrics *m, const char *set, const dp_scores *e) {
  char key[16];
  const char *const names[3] = {"loss", m->regression ? "rmse" : "acc", "mae"};
  const double v[3] = {e->loss, m->regression ? e->rmse : e->acc, e->mae};
  for (int i = 0; i < (m->regression ? 3 : 2); i++) {
    snprintf(key, sizeof key, "%s_%s", set, names[i]);
    json_num(m->jsonl, key, v[i]);
  }
}

int dp_metrics_eval(dp_metrics *m, int64_t step, int64_t epoch, const dp_scores *test, const dp_scores *val,
                    double train_s) {
  char t[128] = "", v[128] = "";
  if (test)
    dp_scores_format(t, sizeof t, "test", test, m->regression);
  if (val)
    dp_scores_format(v, sizeof v, "val", val, m->regression);
  dp_metrics_note(m, "epoch %3lld  step %7lld  %s%s%s\n", (long long)epoch + 1, (long long)step, t,
                  test && val ? "  " : "", v);
  if (!m->jsonl)
    return 0;
  fprintf(m->jsonl, "{\"step\":%lld,\"epoch\":%lld", (long long)step, (long long)epoch + 1);
  if (test)
    json_scores(m, "test", test);
  if (val)
    json_scores(m, "val", val);
  json_num(m->jsonl, "train_s", train_s);
  return flush_line(m);
}

void dp_metrics_close(dp_metrics *m) {
  if (m->jsonl)
    fclose(m->jsonl);
  m->jsonl = NULL;
}
