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
#include "dptrain/reprosum.h"
#include "dptrain/state.h"
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

/* [train] deterministic: the gradient reduction made independent of the rank count and of bucket_mb.
 *
 * The global batch is cut into chunks of chunk_rows rows; every chunk's gradient (each layer's
 * tensors, as dp_model_set_chunks hands them over), loss sum, hits and (mse) absolute error is added
 * in fixed point (include/dptrain/reprosum.h) into one int64 block. One int64 SUM reduce-scatter
 * combines the ranks, each rank converts its slice of the exact sums to floats and one allgather
 * shares the floats: 12 bytes a value instead of an int64 allreduce's 16, and 1/ranks of the
 * conversion each. The loss, counts and flags ride on the small allreduce of the maxima. When no
 * rank has more than one chunk (fashion_mlp.ini at 2 ranks), a rank's contribution is its float
 * gradient, which any rank converts to the same integers: an all-to-all of those floats replaces the
 * int64 reduce-scatter, the bytes of a float allreduce. The exponent of each tensor comes from the
 * largest chunk value it had at the previous reduction (8 bits of headroom; registered in the
 * training state, so that a resume at any rank count continues alike) and the small allreduce
 * (maximum and sum) learns this reduction's. A value beyond the
 * headroom (or 16 bits of precision lost) makes every rank redo the reduction at the exponent just
 * learnt (dp_exactsync_finish returns 1, once; the running statistics are put back first). NaN and
 * Inf add nothing and are counted: their tensor comes out NaN, so the trainer's check sees it. */
enum { DP_EXACT_HEADROOM = 8, DP_EXACT_SLACK = 16 };

/* What the ranks agreed on, besides the gradient. */
typedef struct {
  double loss, abserr;       /* sums over the global batch */
  int64_t correct, failed, stop, save;
} dp_exact_sums;

typedef struct {
  dp_comm *comm;
  dp_model *m;
  int n_slots;              /* the model's tensors, then the loss, then the absolute error */
  size_t off[3 * DP_MAX_LAYERS + 2], len[3 * DP_MAX_LAYERS + 2];
  int first[DP_MAX_LAYERS + 1]; /* layer i's first slot; [n_layers]: the loss's */
  double kmax[3 * DP_MAX_LAYERS + 2]; /* 2^kmax bounds each slot's chunk values: the last reduction's */
  double maxabs[3 * DP_MAX_LAYERS + 2]; /* this reduction's, on this rank */
  double gmax[3 * DP_MAX_LAYERS + 2];
  int e[3 * DP_MAX_LAYERS + 2];        /* this reduction's exponents */
  double limit;                        /* on one chunk value times 2^e */
  size_t bad[3 * DP_MAX_LAYERS + 2];   /* values that did not fit, per slot */
  int64_t n_terms;          /* chunks of the global batch */
  int written[DP_MAX_LAYERS]; /* this reduction's first chunk of layer i is in acc */
  int defer;                /* this rank adds one chunk: its own slice stays floats until the sum */
  int floats;               /* no rank adds more than one chunk: the ranks exchange floats */
  int64_t *acc;             /* (words) the gradient, then zeros */
  size_t slice, words;      /* int64 per rank in the reduce-scatter; slice · ranks */
  int64_t *mine;            /* (slice) the other ranks' sum of this rank's slice; then as much work */
  int *counts, *displs;     /* each rank's floats of the gradient block in the allgather */
  float *recv;              /* (slice · ranks) with floats: every rank's values of this rank's slice */
  int *rcounts, *rdispls;
  int64_t *red;             /* (n_slots + tail) the slots' maxima as bits, then the tail (gradsync.c) */
  float *stats;             /* the running statistics as the reduction began */
  dp_reprosum sums;         /* batch norm's and evaluation's sums */
} dp_exactsync;

/* Sets up m for chunks of chunk_rows rows and allocates; 0 or DP_ENOMEM. */
int dp_exactsync_init(dp_exactsync *x, dp_model *m, dp_comm *c, int chunk_rows);
void dp_exactsync_free(dp_exactsync *x);
/* Registers the exponents (optional: an older checkpoint starts from the default). */
int dp_exactsync_register(dp_exactsync *x, dp_state *st);
/* A reduction over n_terms chunks of the global batch begins, mine of them on this rank. */
void dp_exactsync_begin(dp_exactsync *x, int64_t n_terms, int64_t mine);
/* After the pass: this rank's flags join the sums; the two collectives; then either 1 (redo: the
 * running statistics are back as they were) or 0 with the gradient block and *s filled in. Collective;
 * < 0 for an MPI error. */
int dp_exactsync_finish(dp_exactsync *x, int failed, int stop, int save, int may_redo, dp_exact_sums *s);

#endif
