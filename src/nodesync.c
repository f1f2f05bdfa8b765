#include "dptrain/nodesync.h"

#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"

static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

/* The fused sum and update goes in pieces this long: the summed piece stays in L1 for the update. */
enum { PIECE = 2048 };

int dp_nodesync_wanted(const dp_comm *c, int comm_mode, int line_search, int *want, const char **why) {
  int even = c->node_size_min == c->node_size_max;
  *want = 0;
  *why = NULL;
  if (comm_mode == DP_COMM_FLAT)
    return 0;
  if (comm_mode == DP_COMM_NODE && !even)
    return dp_fail(DP_ECONFIG, "[train] comm = node needs as many ranks on every node (here %d to %d): use comm = "
                               "flat, or auto (which falls back to flat)", c->node_size_min, c->node_size_max);
  if (line_search) /* its line search moves every weight at once, on every rank */
    *why = "lbfgs keeps a copy per rank";
  else if (!even)
    *why = "the nodes run different numbers of ranks";
  else if (comm_mode == DP_COMM_AUTO && c->node_size == 1)
    *why = "one rank per node";
  *want = *why == NULL;
  return 0;
}

/* Local rank r's slice of n parameters: 16-float (64-byte) aligned boundaries, sizes within 16. */
static size_t slice_start(size_t n, int r, int size) {
  size_t units = n / 16, lo = units * (size_t)r / (size_t)size;
  return r == size ? n : lo * 16;
}

static int mpi_check(int rc, const char *what) {
  if (rc == MPI_SUCCESS)
    return 0;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  return dp_fail(DP_EMPI, "[train] comm = node: %s failed: %s (comm = flat keeps a copy of the model per rank instead)",
                 what, msg);
}

/* A window of mine floats on this rank, its memory on this rank's own pages (first touch). */
static int alloc_window(dp_comm *c, size_t floats, MPI_Win *win, float **base) {
  MPI_Info info;
  MPI_Info_create(&info);
  MPI_Info_set(info, "alloc_shared_noncontig", "true");
  int rc = MPI_Win_allocate_shared((MPI_Aint)(floats * sizeof(float)), (int)sizeof(float), info, c->node, base, win);
  MPI_Info_free(&info);
  DP_TRY(mpi_check(rc, "MPI_Win_allocate_shared"));
  return mpi_check(MPI_Win_lock_all(MPI_MODE_NOCHECK, *win), "MPI_Win_lock_all");
}

static float *peer_base(MPI_Win win, int r) {
  MPI_Aint size;
  int unit;
  float *p = NULL;
  MPI_Win_shared_query(win, r, &size, &unit, &p);
  return p;
}

static int create(dp_nodesync *s, dp_comm *c, dp_model *m, dp_optim *o, int deterministic) {
  int L = c->node_size, l = c->node_rank;
  s->n = m->n_floats;
  s->block = 16 + s->n;
  size_t state = (size_t)o->n_slots * s->n, flags = pad16((size_t)L);
  size_t mine = l == 0 ? s->n + s->block + state + flags : 0;
  float *base;
  DP_TRY(alloc_window(c, mine, &s->node_win, &base));
  float *node = peer_base(s->node_win, 0);
  s->params = node;
  s->reduced = node + s->n;
  s->state = s->reduced + s->block;
  s->bad = (int *)(s->state + state);
  s->reduce = !deterministic;
  if (s->reduce) {
    DP_TRY(alloc_window(c, s->block, &s->grad_win, &base));
    if (!(s->grads = malloc(sizeof(float *) * (size_t)L)))
      return dp_fail(DP_ENOMEM, "comm = node: cannot allocate %d pointers", L);
    for (int r = 0; r < L; r++)
      s->grads[r] = peer_base(s->grad_win, r);
    memset(base, 0, sizeof(float) * s->block);
    if (!(s->piece = aligned_alloc(64, sizeof(float) * PIECE)))
      return dp_fail(DP_ENOMEM, "comm = node: cannot allocate %d floats", PIECE);
  }
  s->lo = slice_start(s->n, l, L);
  s->hi = slice_start(s->n, l + 1, L);
  s->block_lo = l == 0 ? 0 : 16 + s->lo;
  /* Each rank zeroes its own slices (first touch puts the pages near it); rank 0 the flags. */
  memset(s->params + s->lo, 0, sizeof(float) * (s->hi - s->lo));
  memset(s->reduced + s->block_lo, 0, sizeof(float) * (16 + s->hi - s->block_lo));
  for (int i = 0; i < o->n_slots; i++)
    memset(s->state + (size_t)i * s->n + s->lo, 0, sizeof(float) * (s->hi - s->lo));
  if (l == 0)
    memset(s->bad, 0, sizeof(int) * flags);
  dp_model_adopt(m, s->params, s->reduce ? s->grads[l] : NULL);
  dp_optim_adopt_state(o, s->state);
  s->bytes_shared = (double)(s->n + state) * sizeof(float);
  return 0;
}

int dp_nodesync_init(dp_nodesync *s, dp_comm *c, dp_model *m, dp_optim *o, int deterministic) {
  memset(s, 0, sizeof *s);
  s->comm = c;
  s->node_win = s->grad_win = MPI_WIN_NULL;
  int rc = create(s, c, m, o, deterministic);
  if (s->node_win != MPI_WIN_NULL)
    MPI_Win_sync(s->node_win);
  /* Every rank gets here, also one whose allocation failed: the agreement is also the barrier after
   * which every rank's zeroed slices are seen by all. */
  rc = dp_comm_agree(c, rc, NULL);
  if (s->node_win != MPI_WIN_NULL)
    MPI_Win_sync(s->node_win);
  s->on = rc == 0;
  return rc;
}

void dp_nodesync_mark(const dp_nodesync *s, dp_state *st) {
  if (!s->on)
    return;
  dp_state_flag_range(st, s->params, sizeof(float) * s->n, DP_ST_NODE);
  dp_state_flag_range(st, s->state, (size_t)s->bytes_shared - sizeof(float) * s->n, DP_ST_NODE);
}

void dp_nodesync_free(dp_nodesync *s) {
  if (!s->comm) /* never initialised: a zeroed struct's windows are not MPI_WIN_NULL */
    return;
  MPI_Win *w[] = {&s->grad_win, &s->node_win};
  for (int i = 0; i < 2; i++)
    if (*w[i] != MPI_WIN_NULL) {
      MPI_Win_unlock_all(*w[i]);
      MPI_Win_free(w[i]);
    }
  free(s->grads);
  free(s->piece);
  memset(s, 0, sizeof *s);
}

/* out[k] = Σ_r in_r[at + k] for k < n, r = 0 .. L-1 in that order: the same sum on every node. */
static void sum_into(float *restrict out, float *const *in, int L, size_t at, size_t n) {
  memcpy(out, in[0] + at, sizeof(float) * n);
  for (int r = 1; r < L; r++) {
    const float *restrict b = in[r] + at;
    for (size_t k = 0; k < n; k++)
      out[k] += b[k];
  }
}

/* The node barrier with what each rank wrote to the windows before it seen by all after it. */
static int node_barrier(dp_nodesync *s) {
  MPI_Win_sync(s->node_win);
  if (s->grad_win != MPI_WIN_NULL)
    MPI_Win_sync(s->grad_win);
  DP_TRY(dp_comm_node_barrier(s->comm));
  MPI_Win_sync(s->node_win);
  if (s->grad_win != MPI_WIN_NULL)
    MPI_Win_sync(s->grad_win);
  return 0;
}

/* After this rank updated its slice (b: its gradient was not finite): the barrier after which every
 * rank sees the new weights, and *bad, the same on every rank. */
static int updated(dp_nodesync *s, int b, int *bad) {
  s->bad[s->comm->node_rank] = b;
  DP_TRY(node_barrier(s));
  *bad = 0;
  for (int r = 0; r < s->comm->node_size; r++)
    *bad |= s->bad[r];
  return 0;
}

/* This rank's slice of the gradient blocks summed into the reduced block (slice 0 with the extra slots). */
static void sum_slice(dp_nodesync *s) {
  sum_into(s->reduced + s->block_lo, s->grads, s->comm->node_size, s->block_lo, 16 + s->hi - s->block_lo);
}

int dp_nodesync_reduce(dp_nodesync *s) {
  dp_comm *c = s->comm;
  DP_TRY(node_barrier(s)); /* every gradient block is complete */
  sum_slice(s);
  if (c->n_nodes > 1)
    DP_TRY(dp_comm_allreduce_cross_f32(c, s->reduced + s->block_lo, 16 + s->hi - s->block_lo));
  return node_barrier(s); /* every slice is reduced */
}

int dp_nodesync_update(dp_nodesync *s, dp_optim *o, const float *g, float lr, int *bad) {
  return updated(s, dp_optim_step_range(o, s->params, g, lr, s->lo, s->hi), bad);
}

int dp_nodesync_reduce_update(dp_nodesync *s, dp_optim *o, float lr, int *bad, double *wait) {
  int L = s->comm->node_size, b = 0;
  double t0 = MPI_Wtime();
  DP_TRY(node_barrier(s)); /* every gradient block is complete */
  *wait = MPI_Wtime() - t0;
  if (s->comm->node_rank == 0) /* the extra slots: the loss, the counts and the flags */
    sum_into(s->reduced, s->grads, L, 0, 16);
  for (size_t i = s->lo; i < s->hi; i += PIECE) {
    size_t n = s->hi - i < PIECE ? s->hi - i : PIECE;
    sum_into(s->piece, s->grads, L, 16 + i, n);
    b |= dp_optim_step_slice(o, s->params + i, s->piece, lr, i, n);
  }
  o->t++; /* the slices were one step */
  return updated(s, b, bad); /* the extra slots are summed too */
}

int dp_nodesync_materialize(dp_nodesync *s) {
  sum_slice(s);
  return node_barrier(s);
}
