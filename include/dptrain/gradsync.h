/* Gradient reduction in buckets, overlapped with the backward pass (as PyTorch DDP and Horovod do).
 *
 * The flat gradient block is cut into buckets of whole layers, about bucket_mb each, counted from
 * the last layer (whose backward pass ends first). As soon as the backward pass has finished every
 * layer of a bucket, that bucket's MPI_Iallreduce starts, and the pending ones are progressed with
 * MPI_Test between layers. The bucket holding layer 0 also holds the extra slots (loss, failure and
 * stop flags) and starts last, after the backward pass, once those are filled in. Buckets that
 * start after the backward pass (always the last) go as blocking MPI_Allreduce: with nothing left
 * to overlap, the blocking call is the faster one (Open MPI 4.1's MPI_Iallreduce of 2.1 MB takes
 * 2.4 times as long between two ranks of a node).
 *
 * Bucket boundaries depend only on the model and bucket_mb, never on timing, and every rank starts
 * the buckets in the same order, so each gradient element is summed exactly as one allreduce of
 * the whole block would sum it. bucket_mb = 0 gives one bucket: a single allreduce after the
 * backward pass. */
#ifndef DPTRAIN_GRADSYNC_H
#define DPTRAIN_GRADSYNC_H

#include "dptrain/comm.h"
#include "dptrain/model.h"
#include "dptrain/timeline.h"

typedef struct {
  dp_comm *comm;
  int n;                          /* buckets, started in order 0 .. n-1 */
  int low_layer[DP_MAX_LAYERS];   /* bucket k may start once this layer's backward pass is done */
  float *start[DP_MAX_LAYERS];
  size_t count[DP_MAX_LAYERS];
  MPI_Request req[DP_MAX_LAYERS];
  int started;                    /* buckets started this step */
  int armed;                      /* this backward pass is the step's last: start buckets from it */
  int err;                        /* the first MPI error of the step */
  double t_start[DP_MAX_LAYERS];  /* when each bucket started (for the timeline) */
  dp_timeline *tl;                /* NULL: not recording */
} dp_gradsync;

/* Plans the buckets for m and hooks the plan into m's backward pass. */
void dp_gradsync_init(dp_gradsync *g, dp_model *m, dp_comm *c, double bucket_mb);
/* A new step: no bucket started, not armed. */
void dp_gradsync_begin(dp_gradsync *g);
/* After the backward pass (the extra slots filled in): reduces the buckets not yet started, in
 * order, with blocking allreduces, and waits for the others. Collective; 0 or DP_EMPI. */
int dp_gradsync_finish(dp_gradsync *g);

#endif
