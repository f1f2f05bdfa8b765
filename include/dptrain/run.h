/* The commands that drive a trainer: `dptrain train` (run.c) and `dptrain eval` (eval.c). */
#ifndef DPTRAIN_RUN_H
#define DPTRAIN_RUN_H

#include <stdio.h>

#include "dptrain/comm.h"
#include "dptrain/config.h"
#include "dptrain/metrics.h"
#include "dptrain/train.h"

typedef struct {
  FILE *out;                  /* progress on rank 0; NULL = quiet */
  int verbose;                /* progress lines also carry the gradient norm and the step's time split */
  dp_progress_mode progress;  /* a live bar or plain lines */
  int overwrite;              /* a fresh run moves another run's checkpoints aside instead of refusing */
} dp_run_opts;

/* `dptrain train`: opens the data, trains for the configured epochs/steps with evaluation and
 * checkpoints, writes out_dir/metrics.jsonl and out_dir/config.ini, prints progress on rank 0.
 * resume_from: NULL, a checkpoint path, or "auto" (the newest in the checkpoint directory, if any).
 * On SIGTERM, SIGUSR1 or SIGINT it checkpoints at the next step boundary and returns 0. Collective. */
int dp_train_run(const dp_config *cfg, dp_comm *comm, const char *resume_from, const dp_run_opts *opts);

/* [model] init_from: the weights of that checkpoint (or any file with its /model layout) replace
 * the initial ones. Collective. */
int dp_run_init_from(dp_trainer *t);

/* Installs the SIGTERM/SIGUSR1/SIGINT handlers that make dp_train_run checkpoint and stop at the
 * next step boundary. main calls it first, so that a signal during start-up is not lost. */
void dp_catch_stop_signals(void);

/* `dptrain eval`: the model of checkpoint ckpt (its stored config) on the /test split of data (NULL:
 * the config's data file); prints loss and accuracy (mse: RMSE and MAE) on rank 0. Collective. */
int dp_eval_run(const char *ckpt, const char *data, dp_comm *comm, FILE *out);

#endif
