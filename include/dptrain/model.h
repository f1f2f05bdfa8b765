/* The model: a stack of layers (dense, conv2d, pools, flatten, dropout) over ONE contiguous
 * parameter block and ONE gradient block of the same layout (llm.c style), so a single allreduce
 * and a single optimizer loop cover every parameter. Every buffer is allocated when the model is
 * built; forward and backward allocate nothing. */
#ifndef DPTRAIN_MODEL_H
#define DPTRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "dptrain/config.h"
#include "dptrain/conv.h"
#include "dptrain/layers.h"
#include "dptrain/loss.h"
#include "dptrain/state.h"

/* Slots right BEFORE the gradients (m->extra), reduced with them by the same allreduce: the
 * shard's scaled loss sum, its count of correct predictions, a count of ranks whose part of the
 * step failed (so a local failure stops every rank at the same step, with no extra collective), of
 * ranks that caught a stop signal, of ranks that want a checkpoint, and (mse) the shard's scaled sum
 * of |y - t| for the MAE. Before, not after: the
 * bucket that is reduced last (it holds layer 0, whose backward pass ends the step) carries them. */
enum { DP_EXTRA_LOSS, DP_EXTRA_CORRECT, DP_EXTRA_FAILED, DP_EXTRA_STOP, DP_EXTRA_SAVE, DP_EXTRA_ABSERR, DP_GRAD_EXTRA };

/* What a layer does to one sample besides its dense part. A conv2d is a dp_dense over the im2col
 * rows (in = c·kh·kw, out = filters, pix = oh·ow rows per sample); pools, flatten and dropout have
 * no parameters: their dp_dense has in = out = 0, a zero-sized view at their place in the parameter
 * block, and y, dy for their output. Image activations are NHWC, the data's rows NCHW. */
typedef struct {
  dp_layer_type type;
  int c, h, w;         /* the input: an image (h > 0), or c features (h = 0) */
  int oc, oh, ow;      /* the output, alike */
  size_t n_in, n_out;  /* floats per sample */
  int nchw;            /* the input is in the data's layout (NCHW rows), not NHWC */
  int pix;             /* rows of the dense part per sample: oh·ow for conv2d, else 1 */
  dp_conv_geom conv;
  dp_pool_geom pool;
  float rate;          /* dropout */
  float *mask;         /* dropout: (max_batch, n_out), the last training pass's */
  int32_t *arg;        /* maxpool: the winners of the last pass */
  float *flat, *dflat; /* a dense layer fed an NHWC image: its input as NCHW rows, and its gradient */
} dp_layer_geom;

typedef struct {
  int n_layers;
  dp_dense layer[DP_MAX_LAYERS];  /* every layer's parameter views and y, dy */
  dp_layer_geom geom[DP_MAX_LAYERS];
  int in_dim, out_dim;
  int max_batch;      /* rows per forward/backward pass (a micro-batch) */
  dp_loss_kind loss;
  size_t n_params;    /* real parameters */
  size_t n_floats;    /* length of params/grads, views padded to 64-byte boundaries */
  float *params;      /* (n_floats) */
  float *grads;       /* (n_floats), preceded by extra */
  float *extra;       /* (DP_GRAD_EXTRA) = grads - DP_GRAD_EXTRA */
  float *grad_block;  /* the allocation holding extra and grads */
  int shared_params, shared_grads; /* the blocks belong to a shared window (dp_model_adopt): not freed */
  float *acts;        /* every layer's y and dy */
  float *aux;         /* the layers' masks, winners and flattened inputs */
  float *col;         /* the im2col scratch: the largest conv2d's (max_batch·oh·ow, c·kh·kw) */
  uint64_t seed;      /* dropout's masks: dp_model_set_pass */
  int64_t step, row0;
  size_t n_stats;     /* running statistics of batch-norm layers: not trained, not averaged */
  float *stats;       /* (n_stats) */
  float *norm_scratch;/* every normed layer's ẑ and 1/σ */
  double *norm_work;  /* every normed layer's sums */
  int64_t n_layers_i64; /* n_layers as the training state stores it */
  int err;            /* the first error of a forward or backward pass (a failed reduce); 0 none */
  void (*on_layer_grad)(void *ctx, int layer); /* called as each layer's backward pass ends */
  void *on_layer_ctx;
  /* [train] deterministic (dp_model_set_chunks): passes are cut into chunks of chunk_rows rows, each
   * with its own gradients, handed one by one to on_chunk_grad, and its own loss sum and hits. */
  int chunk_rows;     /* 0: off */
  void (*on_chunk_grad)(void *ctx, int layer, int chunk); /* layer's gradients of chunk c are in grads */
  void *on_chunk_ctx;
  double *chunk_loss; /* (chunks per pass): each chunk's loss sum, set by dp_model_backward */
  int *chunk_hits;    /* (chunks per pass): each chunk's correct predictions */
  double *chunk_abserr; /* (chunks per pass): mse: each chunk's Σ|y - t| */
  double *chunk_sums; /* the norms' per-chunk sums */
} dp_model;

/* Builds the stack of n_layers layers for inputs of in_dim features (shape: C, H, W of the image a
 * row holds, or NULL), passes of at most max_batch rows. Parameters are zero until dp_model_init.
 * A kernel or pool that does not fit its input, or a shape that is not in_dim values, is DP_ECONFIG
 * naming the layer and the sizes. */
int dp_model_create(dp_model *m, const dp_layer_cfg *layers, int n_layers, dp_loss_kind loss, const int64_t *shape,
                    int in_dim, int max_batch);
void dp_model_free(dp_model *m);
/* The floats dp_model_create would allocate for these arguments, without allocating: the parameter
 * block's, and everything else (activations, scratch, statistics; the gradient block is another
 * parameter block's worth). Its errors, without a model. */
int dp_model_plan(const dp_layer_cfg *layers, int n_layers, dp_loss_kind loss, const int64_t *shape, int in_dim,
                  int max_batch, double *params, double *other);
/* Initial weights per each layer's rule (layers as given to dp_model_create), from seed; biases zero. */
void dp_model_init(dp_model *m, const dp_layer_cfg *layers, uint64_t seed);
/* Parameters of a dense layer (or a conv2d's dense part): weight (out, in), then a bias, or a norm's
 * gain and shift. The one formula for it. */
size_t dp_dense_params(int in, int out, int normed);
/* Registers the model in the training state: every layer's parameters (/model/layer<i>/weight,
 * bias or gain and shift), batch norm's running statistics, and the layer count. */
int dp_model_register(dp_model *m, dp_state *st);

/* Output (B, out_dim) for x (B, in_dim); B <= max_batch. A model with synchronised batch norm
 * makes one reduce per such layer (also when B == 0), and m->err records a failure. */
const float *dp_model_forward(dp_model *m, const float *x, int B);
/* Training (batch statistics, running statistics updated) or evaluation (running statistics). */
void dp_model_set_eval(dp_model *m, int eval);
/* Before a training pass: dropout's masks come from (seed, step, row0 + r, layer) for the pass's row
 * r, row0 being its first row's position in the epoch's order, so that they do not depend on the
 * ranks, the passes or a resume. */
void dp_model_set_pass(dp_model *m, uint64_t seed, int64_t step, int64_t row0);
/* How batch norm sums across the ranks that share a mini-batch (NULL: one process). */
void dp_model_set_reduce(dp_model *m, dp_reduce_fn fn, void *ctx);
/* Deterministic passes: chunks of rows rows (passes start on a chunk), batch norm's sums through
 * reduce (with ctx), each chunk's gradients of each layer handed to on_grad (with grad_ctx) in the
 * backward pass instead of accumulating. 0 or DP_ENOMEM. */
int dp_model_set_chunks(dp_model *m, int rows, dp_chunk_reduce_fn reduce, void *ctx,
                        void (*on_grad)(void *grad_ctx, int layer, int chunk), void *grad_ctx);
/* After dp_model_forward(x): the loss sum of the B rows, and gradients of (loss sum × scale) into
 * the gradient block (added when accumulate is set). labels (B) for cross-entropy, targets (B, K)
 * for mse. *correct (may be NULL) counts argmax hits for cross-entropy. */
double dp_model_backward(dp_model *m, const float *x, const int32_t *labels, const float *targets, int B,
                         float scale, int accumulate, int *correct);
/* The loss sum only (evaluation), after dp_model_forward. */
double dp_model_loss(dp_model *m, const int32_t *labels, const float *targets, int B, int *correct);

/* A named tensor of one layer, for checkpoints: `offset` floats into the parameter block, and at the
 * same offset into the gradient block and every optimizer state slot. */
enum { DP_MAX_TENSORS = 4 };
typedef struct {
  const char *name; /* "weight", "bias", ... */
  size_t offset;
  int rank;
  int dims[2];      /* (out, in) or (out) */
} dp_tensor;

/* Layer i's tensors in the parameter block: weight (out, in) — a conv2d's (filters, c·kh·kw), i.e.
 * (filters, c, kh, kw) row-major — then bias (out), or gain and shift (out) for a normed layer.
 * Returns the count: 0 for a layer without parameters. */
int dp_model_tensors(const dp_model *m, int i, dp_tensor t[DP_MAX_TENSORS]);
/* Layer i's tensors in the statistics block: running_mean, running_var for batch norm; else 0. */
int dp_model_stat_tensors(const dp_model *m, int i, dp_tensor t[DP_MAX_TENSORS]);

/* [train] comm = node: the parameters (n_floats) and the gradient block (16 + n_floats, grads at +16)
 * move to shared memory the caller owns (either may be NULL: kept); the views follow, the values
 * are not copied. */
void dp_model_adopt(dp_model *m, float *params, float *grad_block);

/* FLOPs of one sample's forward pass (2 per weight and output pixel). */
double dp_model_flops_forward(const dp_model *m);

#endif
