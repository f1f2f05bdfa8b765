/* Data-parallel mini-batch training.
 *
 * One step: the global mini-batch (batch_size rows of this epoch's permutation, the same on every
 * rank) is split into contiguous shards, one per rank, sizes differing by at most one; each rank
 * sums the gradients of its shard's per-sample losses, scaled by 1/global_batch; ONE allreduce sums
 * them (and the loss) across ranks; every rank applies the same optimizer step. The result does not
 * depend on the number of ranks beyond floating-point rounding, and every rank makes the same
 * collectives in the same order. */
#ifndef DPTRAIN_TRAIN_H
#define DPTRAIN_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "dptrain/comm.h"
#include "dptrain/config.h"
#include "dptrain/data.h"
#include "dptrain/gradsync.h"
#include "dptrain/metrics.h"
#include "dptrain/model.h"
#include "dptrain/nodesync.h"
#include "dptrain/optim.h"
#include "dptrain/order.h"
#include "dptrain/schedule.h"
#include "dptrain/split.h"
#include "dptrain/state.h"
#include "dptrain/stream.h"
#include "dptrain/timeline.h"

/* Where one step's time went on this rank, in seconds. */
typedef struct {
  double compute; /* gathering the shard, forward and backward */
  double comm;    /* the gradient allreduce, including waiting for slower ranks */
  double optim;   /* clipping and the optimizer update (L-BFGS: in compute and comm) */
} dp_step_time;

typedef struct {
  const dp_config *cfg;
  dp_comm *comm;
  dp_dataset *train;
  dp_model model;
  dp_gradsync sync;        /* the gradient allreduce, in buckets overlapped with the backward pass */
  dp_exactsync exact;      /* instead, with [train] deterministic: chunks and exact sums */
  dp_nodesync node;        /* [train] comm = node: the model once per node, the reduction in shared memory */
  const char *flat_why;    /* why comm = auto resolved to flat (NULL: it did not, or comm = flat) */
  /* This step sums the gradient and updates in one pass (dp_nodesync_reduce_update): the step's
   * sums are taken after the update, with this rank's status kept here. */
  int fused, fused_status;
  dp_optim optim;
  dp_schedule sched;
  dp_state state;          /* everything a resume needs, registered by each part above */
  double lr_factor;        /* multiplies the schedule's γ: halved by on_nonfinite = restore */
  dp_step_time time;       /* the current step's, so far */
  dp_timeline *tl;         /* spans of the first steps; NULL when not recording */

  dp_val_split val;        /* [data] val_fraction's rows of the training set, never trained on */
  int64_t n_train;         /* training rows an epoch visits: the set's, less the held-out ones */
  int64_t batch;           /* global mini-batch (n_train for "full") */
  int64_t steps_per_epoch;
  int64_t total_steps;     /* over the whole run: epochs × steps_per_epoch, capped by max_steps */

  int64_t step;            /* steps done */
  int64_t epoch;           /* current epoch, 0-based */
  int64_t pos;             /* steps done in the current epoch */
  int64_t perm_epoch;      /* the epoch perm was drawn for; -1 = none yet */
  int64_t samples_seen;    /* training rows processed (for readers of checkpoints) */
  int64_t world_size, seed; /* as checkpoints record them */
  char *config_text;       /* the effective configuration, stored in checkpoints */

  int64_t *perm;           /* (train->n) this epoch's order of the rows, the first n_train used */
  dp_order order;          /* how perm is drawn ([data] order, resolved) */
  char order_text[64];     /* the resolved order as checkpoints record it ("blocks 4096 16", "random") */
  /* Streaming (order = blocks, the set not in memory): the reader follows perm and perm_next. */
  int streaming;
  int64_t ring_slots;      /* blocks the reader's ring holds */
  double prefetch_cap;     /* bytes prefetch_mb was limited to by the node's memory (0: not limited) */
  dp_stream *stream;       /* running from the first step after a start or resume; NULL otherwise */
  int64_t *perm_next;      /* (train->n) the next epoch's order, handed to the reader ahead */
  int64_t next_epoch;      /* the epoch perm_next holds; -1 none */
  int64_t stream_step;     /* the step acquired from the reader; -1 none */
  int64_t *rows;           /* (max_batch) row indices for evaluation passes */
  float *x;                /* (max_batch, D) gathered rows */
  int32_t *labels;         /* (max_batch) */
  float *targets;          /* (max_batch, K) */
} dp_trainer;

/* What the caller asks of a step: flags that every rank learns through the step's own allreduce. */
typedef struct {
  int local_status;        /* 0 or a DP_E code from outside the step (rank 0 could not write metrics):
                              every rank stops at this step, with no extra collective */
  int stop;                /* this rank was asked to stop (a signal) */
  int save;                /* this rank wants a checkpoint (time-based) */
  int want_grad_norm;      /* compute the gradient norm (else NaN without clipping or a line search) */
} dp_step_request;

typedef struct {
  double loss;             /* mean loss over the global batch */
  double acc;              /* fraction of the global batch classified right (NaN for mse or a line search) */
  double mae;              /* mse: mean absolute error per output over the global batch; else NaN */
  int64_t evals;           /* line search: objective evaluations this step made (each a full batch) */
  double line_step;        /* line search: the step length it accepted; NaN for first-order steps */
  double lr;               /* the step size used */
  double grad_norm;        /* ‖averaged gradient‖₂ before clipping; NaN unless clip_norm is set,
                              want_grad_norm was, or the optimizer searches a line */
  int64_t batch;           /* rows in this global batch */
  dp_step_time time;       /* this rank's */
  int skipped;             /* on_nonfinite = skip_step: the loss or gradient was not finite, no update */
  int stop, save;          /* some rank asked to stop / for a checkpoint: every rank agrees */
  int converged;           /* the optimizer met a stopping tolerance: the run ends */
} dp_step_result;

/* Builds the model for the data set's shape, checks that data and model fit each other, allocates
 * every buffer, registers the training state, initialises the parameters on rank 0 and broadcasts
 * them. Collective. */
int dp_trainer_create(dp_trainer *t, const dp_config *cfg, dp_comm *comm, dp_dataset *train);
void dp_trainer_free(dp_trainer *t);

/* One global mini-batch step. Collective. A non-finite loss or averaged gradient (seen alike by
 * every rank in the reduced values) is DP_ENONFINITE, or a skipped update with on_nonfinite =
 * skip_step. */
int dp_trainer_step(dp_trainer *t, const dp_step_request *req, dp_step_result *r);

/* Starts a streamed set's reader (a no-op otherwise) and waits until the first step's blocks are in
 * its ring: start-up reads them, as it loads a set held in memory, so the first step does not wait
 * for the disk. The first step starts the reader when this was not called. */
int dp_trainer_prefetch(dp_trainer *t);

/* After the state was loaded (resume, restore): continue from the position it holds. */
void dp_trainer_resumed(dp_trainer *t);

/* Where the step records its spans (NULL: nowhere). */
void dp_trainer_set_timeline(dp_trainer *t, dp_timeline *tl);

/* The run's length in steps for cfg with steps_per_epoch steps an epoch: epochs, or a line search's
 * max_iter, capped by max_steps. */
int64_t dp_total_steps(const dp_config *cfg, int64_t steps_per_epoch);

/* Training rows processed in the steps done so far (an epoch's last batch may be short). */
int64_t dp_trainer_samples_seen(const dp_trainer *t);

/* Makes the running statistics of unsynchronised batch norm layers the same on every rank (their
 * mean). Collective; a no-op without such layers. */
int dp_trainer_sync_stats(dp_trainer *t);

/* Loss and accuracy (classification) or RMSE and MAE (mse) over all rows of ds, split across
 * ranks, with batch norm's running statistics. Collective. */
int dp_trainer_evaluate(dp_trainer *t, dp_dataset *ds, dp_scores *e);
/* The same over rows[0..count) of ds (ascending: runs of them are single reads); rows NULL: 0..count. */
int dp_trainer_evaluate_rows(dp_trainer *t, dp_dataset *ds, const int64_t *rows, int64_t count, dp_scores *e);

/* Checks that a data set's x and y fit the model (width, label range or target width). Collective. */
int dp_check_data_fits(const dp_config *cfg, dp_comm *comm, dp_dataset *ds, int64_t in_dim, int out_dim);

#endif
