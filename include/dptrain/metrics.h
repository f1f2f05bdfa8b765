/* What a run reports: metrics.jsonl (one JSON object per line) and progress lines, rank 0 only. */
#ifndef DPTRAIN_METRICS_H
#define DPTRAIN_METRICS_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
  FILE *jsonl;   /* rank 0 only; NULL elsewhere */
  FILE *out;     /* progress lines; NULL when quiet or not rank 0 */
} dp_metrics;

typedef struct {
  int64_t step;        /* steps done */
  int64_t epoch;       /* current epoch (0-based) */
  int64_t steps_per_epoch;
  int64_t pos;         /* steps done in this epoch */
  double loss;         /* mean loss over the global batches of the interval */
  double acc;          /* training accuracy over the interval (classification) */
  double lr;
  double grad_norm;    /* of the interval's last step; NaN (written as null) when not computed */
  double samples_per_s;
  double step_ms;      /* wall time per step on rank 0, evaluations excluded */
  double compute_ms[6];/* per step: compute, comm wait, optimizer means over ranks, then their maxima */
} dp_step_log;

/* Creates out_dir (and parents) and opens out_dir/metrics.jsonl when is_root; `out` gets progress.
 * resume_step >= 0 continues an existing file, keeping its lines up to that step; -1 starts anew. */
int dp_metrics_open(dp_metrics *m, const char *out_dir, int is_root, FILE *out, int64_t resume_step);
int dp_metrics_step(dp_metrics *m, const dp_step_log *s);
/* An evaluation line; train_s is the training time so far (the steps' wall time, evaluations and
 * start-up excluded; every step ends in an allreduce, so the ranks' clocks agree on it). */
int dp_metrics_eval(dp_metrics *m, int64_t step, int64_t epoch, double test_loss, double test_acc, double train_s);
void dp_metrics_close(dp_metrics *m);

/* mkdir -p */
int dp_mkdirs(const char *path);

#endif
