/* Normalisation of a dense layer's net sums z (B, units), applied before the activation:
 *   ẑ = (z − μ) / √(σ² + ε),   out = α ẑ + β   (α = gain, β = shift, one of each per unit).
 *
 * Batch norm: μ_j, σ²_j per unit over the GLOBAL mini-batch (biased variance). Each rank holds a
 * shard of the rows, so with sync the forward pass makes exactly one reduce of 2·units + 1 doubles
 * (per unit Σ(z − K) and Σ(z − K)², then the row count; K = running_mean, identical on every rank
 * and close to μ, so the shifted sums lose nothing in double) and the backward pass exactly one of
 * 2·units doubles. A rank with an empty shard makes the same calls with zeros: every rank must make
 * the same collectives. Without sync the statistics are the shard's own, so the result depends on
 * the number of ranks. Running statistics (PyTorch's convention: unbiased variance, momentum on the
 * new value) are updated by each training forward and used by the evaluation forward.
 *
 * Layer norm: μ_i, σ²_i per sample over its units; no communication, no running statistics, and
 * evaluation is the training forward.
 *
 * A dp_norm owns no memory: parameters, gradients, running statistics and scratch are views into
 * the caller's blocks, sized once for max_batch, and nothing allocates in forward or backward.
 * Data are float; every sum is taken in double. */
#ifndef DPTRAIN_NORM_H
#define DPTRAIN_NORM_H

#include <stddef.h>

/* X(ENUM suffix, name in the config): the one list of normalisations, read by the config parser
 * and the name functions. Append only: checkpoints and written configs store the values in order. */
#define DP_NORM_KIND_MAP(X) X(NONE, "none") X(BATCH, "batch") X(LAYER, "layer")
typedef enum {
#define DP_NORM_KIND_ENUM(e, name) DP_NORM_##e,
  DP_NORM_KIND_MAP(DP_NORM_KIND_ENUM)
#undef DP_NORM_KIND_ENUM
} dp_norm_kind;

#define DP_NORM_EPS 1e-5f
#define DP_NORM_MOMENTUM 0.1f

/* The config name of k ("none", "batch", "layer"); "unknown" for a value outside the enum. */
const char *dp_norm_name(dp_norm_kind k);
/* The inverse of dp_norm_name: 0, or DP_EINVAL with a message naming the accepted values. */
int dp_norm_from_name(const char *s, dp_norm_kind *k);

/* Sums n doubles in place across the ranks sharing the mini-batch; 0 or a negative DP_E code.
 * Every rank calls it the same number of times, in the same order. */
typedef int (*dp_reduce_fn)(void *ctx, double *buf, int n);
/* [train] deterministic: out (n) <- the exact sum over the chunks of every rank of x (n_chunks rows
 * of n doubles, one per chunk of this pass), the same bits however the chunks are split. */
typedef int (*dp_chunk_reduce_fn)(void *ctx, const double *x, int n_chunks, int n, double *out);

typedef struct {
  dp_norm_kind kind;
  int units, max_batch;
  float eps, momentum;                /* DP_NORM_EPS, DP_NORM_MOMENTUM by default */
  int sync;                           /* batch: global statistics through reduce */
  dp_reduce_fn reduce;                /* NULL: a single process, the shard is the batch */
  void *reduce_ctx;
  float *gain, *shift;                /* (units): views into the parameter block */
  float *dgain, *dshift;              /* (units): views into the gradient block */
  float *running_mean, *running_var;  /* (units), batch only: views into a state block */
  float *zhat;                        /* (max_batch, units): ẑ, kept for the backward pass */
  float *inv_std;                     /* (units) for batch, (max_batch) for layer */
  double *work;                       /* (2·units + 1): scratch for the sums */
  int chunk;                          /* rows per chunk (deterministic mode); 0: the pass is one piece */
  dp_chunk_reduce_fn chunk_reduce;    /* with chunk: replaces reduce (ctx: reduce_ctx) */
  double *chunk_sums;                 /* with chunk: (chunks, 2·units + 1) per-chunk sums, shared scratch */
  int rows;                           /* set by the training forward: its B */
  double count;                       /* set by the training forward: the rows its statistics saw */
} dp_norm;

/* Floats the caller provides for zhat followed by inv_std: max_batch·units + (units for batch,
 * max_batch for layer); 0 for none. */
size_t dp_norm_scratch_floats(dp_norm_kind kind, int units, int max_batch);
/* Doubles for work: 2·units + 1 (0 for none). */
size_t dp_norm_work_doubles(dp_norm_kind kind, int units);
/* Trainable floats (gain, shift): 2·units, 0 for none. */
size_t dp_norm_param_floats(dp_norm_kind kind, int units);
/* Non-trainable state floats (running_mean, running_var): 2·units for batch, 0 otherwise. */
size_t dp_norm_state_floats(dp_norm_kind kind, int units);

/* gain = 1, shift = 0; batch also running_mean = 0, running_var = 1. */
void dp_norm_init_params(dp_norm *n);

/* Training forward, z (B, units) in place -> α ẑ + β; keeps ẑ and 1/σ for the backward pass and
 * updates the running statistics. Batch with sync: exactly one reduce, also when B == 0 (then only
 * the running statistics change). Batch without sync and B == 0: nothing. 0, DP_EINVAL for B
 * outside [0, max_batch], or the reduce's error. */
int dp_norm_forward_train(dp_norm *n, float *z, int B);
/* Evaluation forward in place: batch norm with the running statistics (no reduce, no update);
 * layer norm as in training (ẑ is not kept). */
void dp_norm_forward_eval(const dp_norm *n, float *z, int B);
/* g (B, units) in place: dL/d(out) -> dL/dz. dgain, dshift get this shard's own sums (the caller
 * allreduces parameter gradients with the rest), overwritten when accumulate is 0, added to
 * otherwise; an empty shard contributes zeros. Batch with sync: exactly one reduce, also when
 * B == 0. Must follow dp_norm_forward_train on the same rows: DP_EINVAL if B differs from its B. */
int dp_norm_backward(dp_norm *n, float *g, int B, int accumulate);
/* With chunk: the backward pass leaves each chunk's own Σg, Σg·ẑ in chunk_sums instead of dgain and
 * dshift; this puts chunk c's into dgain, dshift. */
void dp_norm_chunk_grads(dp_norm *n, int c);

#endif
