/* What a run reports: metrics.jsonl (one JSON object per line) and progress lines, rank 0 only. */
#ifndef DPTRAIN_METRICS_H
#define DPTRAIN_METRICS_H

#include <stdint.h>
#include <stdio.h>

/* How progress is shown on rank 0: a live bar redrawn in place, or one plain line per log step. AUTO
 * is a bar exactly when out is a terminal (main decides for launched ranks, whose "terminal" may be
 * a pipe to a batch log). */
typedef enum { DP_PROGRESS_AUTO, DP_PROGRESS_LINES, DP_PROGRESS_BAR } dp_progress_mode;

typedef struct {
  FILE *jsonl;   /* rank 0 only; NULL elsewhere */
  FILE *out;     /* progress lines; NULL when quiet or not rank 0 */
  int tty;       /* out is a terminal: a live progress bar instead of lines */
  int verbose;   /* progress lines also carry the gradient norm and the step's time split */
  int regression;/* loss = mse: RMSE and MAE ("rmse", "mae", "test_rmse", "test_mae") instead of accuracy */
  int line_search;/* L-BFGS: evaluations and the accepted step instead of accuracy and samples/s */
  int bar_open;  /* the bar is on the screen's last line */
  double last_draw;
} dp_metrics;

/* How well a model does on a data set: loss, and accuracy for classification or RMSE and MAE (per
 * output) for regression; the ones that do not apply are NaN. */
typedef struct {
  double loss, acc, rmse, mae;
} dp_scores;

/* Where the progress bar stands, after a step. */
typedef struct {
  int64_t step, total_steps, epoch, pos, steps_per_epoch;
  double loss, lr, samples_per_s; /* loss: the mean since the last log line */
  double eta_epoch_s, eta_run_s;
} dp_progress;

typedef struct {
  int64_t step;        /* steps done */
  int64_t epoch;       /* current epoch (0-based) */
  int64_t steps_per_epoch;
  int64_t pos;         /* steps done in this epoch */
  int64_t samples;     /* training samples seen so far: the x axis that compares batch sizes */
  double loss;         /* mean loss over the global batches of the interval */
  double acc;          /* training accuracy over the interval (classification) */
  double rmse, mae;    /* regression: over the interval's batches (RMSE of their mean loss) */
  int64_t evals;       /* line search: objective evaluations of the interval's iterations */
  double line_step;    /* line search: the step length its last iteration accepted */
  double lr;
  double grad_norm;    /* of the interval's last step; NaN (written as null) when not computed */
  double samples_per_s; /* both over the time spent in the steps this session timed on rank 0: */
  double step_ms;       /* evaluations, checkpoints and a resume between them do not count */
  double compute_ms[6];/* per step: compute, comm wait, optimizer means over ranks, then their maxima */
} dp_step_log;

/* Creates out_dir (and parents) and opens out_dir/metrics.jsonl when is_root; `out` gets progress.
 * resume_step >= 0 continues an existing file, keeping its lines up to that step; -1 starts anew. */
int dp_metrics_open(dp_metrics *m, const char *out_dir, int is_root, FILE *out, int64_t resume_step,
                    dp_progress_mode mode);
int dp_metrics_step(dp_metrics *m, const dp_step_log *s);
/* On a terminal, redraws the epoch's progress bar in place, at most 10 times a second (always at
 * an epoch's last step, which then ends the line); elsewhere nothing, as dp_metrics_step prints
 * plain lines. */
void dp_metrics_progress(dp_metrics *m, const dp_progress *p);
/* A message line for the user (rank 0's out), printed above the progress bar. */
void dp_metrics_note(dp_metrics *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An evaluation line of the test and the validation figures (either may be NULL: none); train_s is
 * the training time so far (the steps' wall time, evaluations and start-up excluded; every step ends
 * in an allreduce, so the ranks' clocks agree on it). */
int dp_metrics_eval(dp_metrics *m, int64_t step, int64_t epoch, const dp_scores *test, const dp_scores *val,
                    double train_s);
/* "<set>_loss L  <set>_acc A" (regression: _rmse, _mae), as the log lines print them. */
void dp_scores_format(char *buf, size_t len, const char *set, const dp_scores *e, int regression);
void dp_metrics_close(dp_metrics *m);

/* mkdir -p */
int dp_mkdirs(const char *path);

#endif
