/* A resume's configuration check: the checkpoint's stored configuration against the current one. */
#include "dptrain/resume.h"

#include <stdlib.h>
#include <string.h>

#include "dptrain/checkpoint.h"
#include "dptrain/error.h"
#include "dptrain/schedule.h"

enum { CONFIG_MAX = 1 << 20, MAX_CHANGES = 256 };

static int read_stored(const char *path, dp_config *c) {
  char *text = malloc(CONFIG_MAX);
  if (!text)
    return dp_fail(DP_ENOMEM, "out of memory");
  char name[DP_FILE_PATH_MAX + 16];
  snprintf(name, sizeof name, "%s:/config", path);
  int rc = dp_ckpt_config_text(path, text, CONFIG_MAX);
  if (rc == 0)
    rc = dp_config_parse_string(c, text, name, NULL, 0);
  free(text);
  return rc;
}

/* "a -> b, c -> d" of the changes under rule r, into buf; returns how many. */
static int list_changes(const dp_config_change *ch, int n, dp_resume_rule r, char *buf, size_t len) {
  int k = 0;
  buf[0] = 0;
  for (int i = 0; i < n; i++) {
    if (ch[i].key->resume != r)
      continue;
    size_t used = strlen(buf);
    snprintf(buf + used, len - used, "%s%s %s -> %s", k++ ? ", " : "", ch[i].name, ch[i].from, ch[i].to);
  }
  return k;
}

static int compare(const dp_config *stored, const dp_config *cur, const char *path) {
  dp_config_change *ch = malloc(MAX_CHANGES * sizeof *ch);
  if (!ch)
    return dp_fail(DP_ENOMEM, "out of memory");
  int n = dp_config_diff(stored, cur, ch, MAX_CHANGES);
  char list[700] = "";
  if (stored->n_layers != cur->n_layers)
    snprintf(list, sizeof list, "the checkpoint's model has %d layers, the config %d%s", stored->n_layers,
             cur->n_layers, n ? ", " : "");
  size_t used = strlen(list);
  int bad = list_changes(ch, n < MAX_CHANGES ? n : MAX_CHANGES, DP_RESUME_MATCH, list + used, sizeof list - used);
  free(ch);
  if (!bad && stored->n_layers == cur->n_layers)
    return 0;
  return dp_fail(DP_ECONFIG,
                 "%s was saved by a run with another model, data or optimizer; to resume it these must match: %s "
                 "(set them back, or start a new run in another out_dir with [model] init_from = %s for its "
                 "weights only)",
                 path, list, path);
}

int dp_resume_check(const dp_trainer *t, const char *path, dp_config **stored) {
  *stored = malloc(sizeof **stored);
  if (!*stored)
    return dp_fail(DP_ENOMEM, "out of memory");
  int rc = read_stored(path, *stored);
  if (rc == 0)
    rc = compare(*stored, t->cfg, path);
  if (rc < 0) {
    free(*stored);
    *stored = NULL;
  }
  return rc;
}

/* What a new run length does: the end, and a schedule that depends on it (cosine) at this step. */
static void length_effect(const dp_config *stored, const dp_trainer *t, char *buf, size_t len) {
  int64_t before = dp_total_steps(stored, t->steps_per_epoch);
  buf[0] = 0;
  if (before == t->total_steps)
    return;
  int n = snprintf(buf, len, ": the run ends at step %lld instead of %lld", (long long)t->total_steps,
                   (long long)before);
  if (t->cfg->schedule.name != DP_SCHED_COSINE || n < 0 || (size_t)n >= len)
    return;
  dp_schedule old;
  dp_schedule_init(&old, &stored->schedule, stored->optimizer.lr, before, t->batch);
  snprintf(buf + n, len - (size_t)n, ", and the cosine schedule now decays over %lld steps (step size %.4g at step %lld, "
           "%.4g before)", (long long)(t->total_steps - stored->schedule.warmup_steps),
           dp_schedule_lr(&t->sched, t->step) * t->lr_factor, (long long)t->step + 1,
           dp_schedule_lr(&old, t->step) * t->lr_factor);
}

void dp_resume_report(const dp_config *stored, const dp_trainer *t, FILE *out) {
  dp_config_change *ch = malloc(MAX_CHANGES * sizeof *ch);
  if (!ch)
    return;
  int n = dp_config_diff(stored, t->cfg, ch, MAX_CHANGES);
  char effect[400];
  length_effect(stored, t, effect, sizeof effect);
  for (int i = 0; i < n && i < MAX_CHANGES; i++) {
    const char *key = ch[i].name;
    int length = !strcmp(key, "train.epochs") || !strcmp(key, "train.max_steps") || !strcmp(key, "optimizer.max_iter");
    if (ch[i].key->resume == DP_RESUME_SAFE)
      fprintf(out, "resume: %s %s -> %s%s\n", key, ch[i].from, ch[i].to, length ? effect : "");
    else if (ch[i].key->resume == DP_RESUME_FRESH)
      fprintf(out, "resume: %s %s -> %s: not read (a checkpoint holds its own weights)\n", key, ch[i].from, ch[i].to);
  }
  free(ch);
}
