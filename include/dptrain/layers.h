/* The fully-connected layer: y = f(norm(x Wᵀ) ) or y = f(x Wᵀ + b), weights [out, in] row-major
 * (PyTorch's nn.Linear layout).
 *
 * A layer owns no memory: its parameter and gradient pointers are views into the model's two flat
 * blocks, and its activation buffers views into the model's activation block, all sized once for
 * the largest micro-batch. Forward and backward are a few large sgemm calls plus one fused pass.
 * A normalised layer has no bias: the norm's shift takes its place. */
#ifndef DPTRAIN_LAYERS_H
#define DPTRAIN_LAYERS_H

#include "dptrain/activations.h"
#include "dptrain/norm.h"

typedef struct {
  int in, out;
  dp_act act;
  float *w, *b;   /* (out, in), (out): views into the parameter block; b is NULL with a norm */
  float *dw, *db; /* the same shapes, views into the gradient block */
  float *y;       /* (max_batch, out): the activation output, kept for the backward pass */
  float *dy;      /* (max_batch, out): dL/dy, turned into dL/dz in place by the backward pass */
  dp_norm norm;   /* kind DP_NORM_NONE: no normalisation */
  int eval;       /* 1: the norm uses its running statistics (evaluation) */
  int chunk;      /* rows per chunk ([train] deterministic): every product runs on whole chunks; 0 = off */
} dp_dense;

/* y = f(x Wᵀ + b) for x (B, in). 0, or the norm's error (a failed reduce). A layer with synchronised
 * batch norm must be called on every rank, also with B == 0. */
int dp_dense_forward(dp_dense *l, const float *x, int B);
/* From l->dy (B, out) and the forward input x (B, in): gradients into dw, db (overwritten when
 * accumulate is 0, added to otherwise) and, if dx is not NULL, dL/dx (B, in) into dx. */
int dp_dense_backward(dp_dense *l, const float *x, int B, float *dx, int accumulate);
/* With chunk: dp_dense_backward computes dx only; this puts chunk c's own weight and bias (or gain,
 * shift) gradients, from its rows alone, into dw, db (overwritten). */
void dp_dense_chunk_grads(dp_dense *l, const float *x, int B, int c);
/* After dp_dense_backward with dx = NULL: dL/dx (B, in) = dz · W into dx, chunk by chunk with chunk
 * (a conv2d's column gradient, made once its columns' scratch is free). */
void dp_dense_input_grad(const dp_dense *l, int B, float *dx);

#endif
