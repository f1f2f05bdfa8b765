/* `dptrain sweep`: the step-size search. Too small a γ is slow and γ ≥ 2γ_opt diverges, so users
 * train briefly over a log grid of γ and keep the best. The ranks are split into groups
 * (MPI_Comm_split); each group trains its share of the γ values data-parallel on its own
 * communicator, so the result for a γ does not depend on how many groups run at once. */
#ifndef DPTRAIN_SWEEP_H
#define DPTRAIN_SWEEP_H

#include <stdint.h>
#include <stdio.h>

#include "dptrain/comm.h"
#include "dptrain/config.h"

#define DP_SWEEP_MAX 256

typedef struct {
  double lr[DP_SWEEP_MAX];
  int n;
  int ranks_per_run;
  int64_t steps;
  double diverge_factor; /* a run diverged when its loss exceeds this × its first loss, or is NaN/Inf */
  const char *csv;       /* output file */
} dp_sweep_opts;

typedef struct {
  double lr, final_loss, best_loss;
  int diverged;
  int64_t steps;
  int regression;    /* loss = mse: the report adds final_rmse */
  double final_rmse; /* √final_loss for mse (the loss is the per-output mean squared error) */
} dp_sweep_result;

/* Parses "lo:hi:n" (n points, log-spaced, lo and hi included) or "a,b,c". DP_EUSAGE on error. */
int dp_sweep_parse_grid(const char *spec, double *lr, int *n);

/* Runs the sweep; results (o->n of them, in grid order) are valid on rank 0. Collective. */
int dp_sweep_run(const dp_config *cfg, dp_comm *comm, const dp_sweep_opts *o, dp_sweep_result *res, FILE *out);

/* Writes the CSV (lr, final_loss, best_loss, diverged, steps, and final_rmse for mse) and prints the table and best γ (the
 * lowest final loss that did not diverge). Rank 0 only. */
int dp_sweep_report(const dp_sweep_result *res, int n, const char *csv, FILE *out);

#endif
