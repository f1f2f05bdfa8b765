/* [train] comm = node: one copy of the model per node, the gradient reduced through shared memory, the
 * optimizer step split across the node's ranks (Horovod's hierarchical allreduce and DeepSpeed ZeRO-1's
 * sharded optimizer state, on MPI-3 shared-memory windows).
 *
 * Per node, in one window the node leader allocates: the parameters (n floats), the reduced gradient
 * block (extra slots in front, as the model's) and the optimizer's state slots; in a second window
 * every rank its own gradient block, which its backward pass fills. The blocks are cut into as many
 * slices as the node has ranks (64-byte aligned; slice 0 starts at the extra slots). A step:
 *
 *   backward → node barrier → local rank l sums slice l of the node's gradient blocks into the
 *   reduced block by loads → allreduce of that slice with local rank l of every other node →
 *   node barrier → (every rank reads the reduced extras and checks the gradient) → local rank l
 *   updates slice l of the weights and of the optimizer state → node barrier.
 *
 * No rank copies gradients through MPI within a node, each rank carries 1/L of the inter-node
 * traffic, and the optimizer's memory traffic is split L ways. The sums are made in a fixed order
 * (rank 0 to L-1, then the cross allreduce), so every node holds the same reduced gradient and every
 * rank sees the same one: the trainer's checks (loss, flags, NaN/Inf, clipping's norm) read it as
 * they read the flat allreduce's. Deterministic mode keeps its exact reduction and only shares the
 * weights and splits the optimizer step (the same bits as flat). */
#ifndef DPTRAIN_NODESYNC_H
#define DPTRAIN_NODESYNC_H

#include <stddef.h>

#include "dptrain/comm.h"
#include "dptrain/model.h"
#include "dptrain/optim.h"
#include "dptrain/state.h"

typedef struct {
  dp_comm *comm;
  int on;              /* 0: flat (nothing here is used) */
  int reduce;          /* 1: gradients reduced here; 0: deterministic mode reduces them */
  MPI_Win node_win, grad_win;
  float *params;       /* (n): the node's weights */
  float *reduced;      /* (16 + n): the reduced gradient block, extra slots at reduced + 16 - DP_GRAD_EXTRA */
  float *state;        /* (slots × n): the optimizer's */
  int *bad;            /* (node_size): each rank's "its slice of the gradient was not finite" */
  float **grads;       /* (node_size): every local rank's gradient block (16 + n) */
  float *piece;        /* a piece of this rank's slice of the summed gradient (dp_nodesync_reduce_update) */
  size_t n, block;     /* parameters; floats of a gradient block */
  size_t lo, hi;       /* this rank's slice of the parameters */
  size_t block_lo;     /* this rank's slice of a gradient block starts here (0 for local rank 0) */
  double bytes_shared; /* parameters and optimizer state held once per node */
} dp_nodesync;

/* Whether [train] comm resolves to node for this run (auto: node where every node runs the same
 * number of ranks, more than one, and the optimizer is first-order). Sets *why to the reason it does
 * not, or NULL. DP_ECONFIG for comm = node where it cannot work. Collective-free. */
int dp_nodesync_wanted(const dp_comm *c, int comm_mode, int line_search, int *want, const char **why);
/* Allocates the windows and moves m's parameters and gradients and o's state into them (the values
 * they hold are lost: call before initialising). deterministic: the gradients stay the model's own.
 * Collective over c. */
int dp_nodesync_init(dp_nodesync *s, dp_comm *c, dp_model *m, dp_optim *o, int deterministic);
/* Marks the registered tensors in shared memory DP_ST_NODE (after they are registered). */
void dp_nodesync_mark(const dp_nodesync *s, dp_state *st);
void dp_nodesync_free(dp_nodesync *s);

/* After the backward pass (m's extra slots filled in): the reduced gradient block, the same on every
 * rank. Collective; 0 or DP_EMPI. */
int dp_nodesync_reduce(dp_nodesync *s);
/* The first-order update of this rank's slice of the weights with gradient g (the parameter layout;
 * only [lo, hi) is read), then the node barrier after which every rank sees the new weights. *bad: 1
 * when some rank's slice of g was not finite (the same answer on every rank). Collective. */
int dp_nodesync_update(dp_nodesync *s, dp_optim *o, const float *g, float lr, int *bad);

/* One node, the update needing nothing but the gradient (no clipping, no check before it): the sum
 * of this rank's slice and its update in one pass, piece by piece, with the bits of reduce + update
 * but without writing the reduced gradient and reading it back (two fewer passes over a slice).
 * Only the extra slots of the reduced block are made; dp_nodesync_materialize makes the rest when
 * needed (to name a non-finite gradient). *wait: seconds waiting for the node's backward passes.
 * Collective over the node. */
int dp_nodesync_reduce_update(dp_nodesync *s, dp_optim *o, float lr, int *bad, double *wait);
/* The reduced gradient after dp_nodesync_reduce_update (one node). Collective over the node. */
int dp_nodesync_materialize(dp_nodesync *s);

#endif
