/* Bucketed gradient allreduce, started from the backward pass. */
#include "dptrain/gradsync.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"

static size_t layer_offset(const dp_model *m, int i) { return (size_t)(m->layer[i].w - m->params); }

static void start_bucket(dp_gradsync *g) {
  int k = g->started++;
  g->t_start[k] = MPI_Wtime();
  if (g->err == 0)
    g->err = dp_comm_iallreduce_f32(g->comm, g->start[k], g->count[k], &g->req[k]);
  else
    g->req[k] = MPI_REQUEST_NULL;
}

/* The model's hook: layer i's gradients are final. The last bucket waits for dp_gradsync_finish. */
static void layer_done(void *ctx, int i) {
  dp_gradsync *g = ctx;
  if (!g->armed)
    return;
  while (g->started < g->n - 1 && g->low_layer[g->started] >= i)
    start_bucket(g);
  if (g->started > 0 && g->err == 0)
    g->err = dp_comm_test_all(g->comm, g->req, g->started); /* progress what is in flight */
}

void dp_gradsync_init(dp_gradsync *g, dp_model *m, dp_comm *c, double bucket_mb) {
  memset(g, 0, sizeof *g);
  g->comm = c;
  size_t limit = bucket_mb > 0 ? (size_t)(bucket_mb * 1048576.0 / sizeof(float)) : (size_t)-1;
  size_t end = m->n_floats; /* of the bucket being filled: it grows downwards from here */
  for (int i = m->n_layers - 1; i >= 0; i--) {
    size_t lo = layer_offset(m, i);
    int last_layer = i == 0;
    if (end - lo >= limit || last_layer) { /* close the bucket at this layer */
      g->low_layer[g->n] = i;
      g->start[g->n] = m->grads + lo;
      g->count[g->n] = end - lo;
      g->n++;
      end = lo;
    }
  }
  /* The last bucket (layer 0) carries the extra slots just before the gradients. */
  g->start[g->n - 1] = m->extra;
  g->count[g->n - 1] += DP_GRAD_EXTRA;
  m->on_layer_grad = layer_done;
  m->on_layer_ctx = g;
}

void dp_gradsync_begin(dp_gradsync *g) {
  g->started = 0;
  g->armed = 0;
  g->err = 0;
}

/* The buckets the backward pass did not start go as blocking allreduces, after the nonblocking
 * ones in the same order on every rank: nothing is left to overlap them with, and Open MPI's
 * blocking allreduce is much faster than its nonblocking one (4.1: 0.37 against 0.9 ms for the
 * 2.1 MB of the default model between two ranks of one node). */
int dp_gradsync_finish(dp_gradsync *g) {
  g->armed = 0;
  int overlapped = g->started;
  for (int k = overlapped; k < g->n; k++) {
    g->req[k] = MPI_REQUEST_NULL;
    g->t_start[k] = MPI_Wtime();
    if (g->err == 0)
      g->err = dp_comm_allreduce_grads(g->comm, g->start[k], g->count[k]);
    dp_timeline_span(g->tl, "allreduce bucket", k, g->t_start[k], MPI_Wtime());
  }
  g->started = g->n;
  int rc = dp_comm_wait_all(g->comm, g->req, overlapped);
  double done = MPI_Wtime(); /* one wait for all: each overlapped bucket's span ends here */
  for (int k = 0; k < overlapped; k++)
    dp_timeline_span(g->tl, "allreduce bucket", k, g->t_start[k], done);
  return g->err ? g->err : rc;
}

/* ---- [train] deterministic ---- */

/* The tail, after the slots' maxima in red: the loss and absolute error in fixed point, plain
 * counts, then how many values of each slot did not fit. The int64 block is the gradient (one int64
 * per float of the gradient block) padded with zeros to slice · ranks. */
enum { XS_LOSS, XS_ABSERR, XS_CORRECT, XS_FAILED, XS_STOP, XS_SAVE, XS_BAD };

static int64_t *tail(const dp_exactsync *x) { return x->red + x->n_slots; }

static int tail_len(const dp_exactsync *x) { return XS_BAD + x->n_slots; }

static int plan_block(dp_exactsync *x) {
  size_t ranks = (size_t)x->comm->size, n = x->m->n_floats;
  x->slice = (n + ranks - 1) / ranks;
  if (x->slice > INT_MAX)
    return dp_fail(DP_ENOMEM, "deterministic mode: %zu sums per rank, more than MPI's int count", x->slice);
  x->words = x->slice * ranks;
  x->counts = malloc(sizeof(int) * ranks);
  x->displs = malloc(sizeof(int) * ranks);
  x->rcounts = malloc(sizeof(int) * ranks);
  x->rdispls = malloc(sizeof(int) * ranks);
  x->recv = malloc(sizeof(float) * (ranks > 1 ? x->words : 1));
  if (!x->counts || !x->displs || !x->rcounts || !x->rdispls || !x->recv)
    return dp_fail(DP_ENOMEM, "deterministic mode: cannot allocate the counts of %zu ranks", ranks);
  for (size_t r = 0; r < ranks; r++) {
    size_t lo = r * x->slice < n ? r * x->slice : n, hi = lo + x->slice < n ? lo + x->slice : n;
    x->displs[r] = (int)lo, x->counts[r] = (int)(hi - lo);
  }
  for (size_t r = 0; r < ranks; r++)
    x->rdispls[r] = (int)(r * x->slice), x->rcounts[r] = x->counts[x->comm->rank];
  return 0;
}

static void add_scalar(dp_exactsync *x, int k, double v, int64_t *acc) {
  double a = fabs(v);
  if (isfinite(a) && a > x->maxabs[k])
    x->maxabs[k] = a;
  if (fabs(ldexp(v, x->e[k])) < x->limit) /* false for NaN */
    *acc += dp_reprosum_fixed(v, x->e[k]);
  else
    x->bad[k]++;
}

static size_t clamp(size_t v, size_t lo, size_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Slot k's values [a, b) of the gradient block: converted and stored, or only scanned. */
static size_t convert(dp_exactsync *x, int k, size_t a, size_t b, int add, int scan, float *mx) {
  const float *g = x->m->grads + a;
  if (scan)
    return dp_reprosum_scan_f32(g, b - a, x->e[k], x->limit, mx);
  return add ? dp_reprosum_add_f32(x->acc + a, g, b - a, x->e[k], x->limit, mx)
             : dp_reprosum_set_f32(x->acc + a, g, b - a, x->e[k], x->limit, mx);
}

/* The model's hook: chunk c's gradients of layer i are in the gradient block. */
static void chunk_done(void *ctx, int i, int c) {
  dp_exactsync *x = ctx;
  dp_model *m = x->m;
  size_t lo = (size_t)x->displs[x->comm->rank], hi = lo + (size_t)x->counts[x->comm->rank];
  for (int k = x->first[i]; k < x->first[i + 1]; k++) {
    float mx = (float)x->maxabs[k];
    size_t a = x->off[k], b = a + x->len[k], m0 = b, m1 = b; /* [m0, m1) stays floats in the block */
    if (x->floats)
      m0 = a; /* all of it, to be sent as it is */
    else if (x->defer)
      m0 = clamp(lo, a, b), m1 = clamp(hi, a, b); /* this rank's slice, converted as the sum is made */
    x->bad[k] += convert(x, k, a, m0, x->written[i], 0, &mx) + convert(x, k, m0, m1, 0, 1, &mx) +
                 convert(x, k, m1, b, x->written[i], 0, &mx);
    x->maxabs[k] = mx;
  }
  x->written[i] = 1;
  if (i != m->n_layers - 1)
    return;
  int64_t *t = tail(x);
  add_scalar(x, x->n_slots - 2, m->chunk_loss[c], &t[XS_LOSS]);
  add_scalar(x, x->n_slots - 1, m->chunk_abserr[c], &t[XS_ABSERR]);
  t[XS_CORRECT] += m->chunk_hits[c];
}

static int exact_reduce(void *ctx, const double *v, int n_chunks, int n, double *out) {
  dp_exactsync *x = ctx;
  return dp_reprosum_chunks(&x->sums, v, n_chunks, n, x->n_terms, out);
}

int dp_exactsync_init(dp_exactsync *x, dp_model *m, dp_comm *c, int chunk_rows) {
  memset(x, 0, sizeof *x);
  x->comm = c;
  x->m = m;
  for (int i = 0; i < m->n_layers; i++) {
    dp_tensor ts[DP_MAX_TENSORS];
    int n = dp_model_tensors(m, i, ts);
    x->first[i] = x->n_slots;
    for (int k = 0; k < n; k++, x->n_slots++) {
      x->off[x->n_slots] = ts[k].offset;
      x->len[x->n_slots] = (size_t)ts[k].dims[0] * (size_t)(ts[k].rank > 1 ? ts[k].dims[1] : 1);
    }
  }
  x->first[m->n_layers] = x->n_slots;
  x->n_slots += 2; /* the loss, the absolute error */
  for (int k = 0; k < x->n_slots; k++)
    x->kmax[k] = 1; /* before any reduction: values below 2 */
  int widest = 3;
  for (int i = 0; i < m->n_layers; i++)
    widest = 2 * m->layer[i].out + 1 > widest ? 2 * m->layer[i].out + 1 : widest;
  DP_TRY(plan_block(x));
  /* calloc: the padding between tensors stays zero; the tensors are stored over by their first chunk. */
  x->acc = calloc(x->words, sizeof(int64_t));
  x->mine = malloc(sizeof(int64_t) * 2 * x->slice); /* and the reduce-scatter's work */
  x->red = malloc(sizeof(int64_t) * (size_t)(x->n_slots + tail_len(x)));
  x->stats = malloc(sizeof(float) * (m->n_stats ? m->n_stats : 1));
  if (!x->acc || !x->mine || !x->red || !x->stats)
    return dp_fail(DP_ENOMEM, "deterministic mode: cannot allocate %zu fixed-point sums", m->n_floats);
  DP_TRY(dp_reprosum_init(&x->sums, c, widest));
  return dp_model_set_chunks(m, chunk_rows, exact_reduce, x, chunk_done, x);
}

void dp_exactsync_free(dp_exactsync *x) {
  free(x->acc);
  free(x->counts);
  free(x->displs);
  free(x->rcounts);
  free(x->rdispls);
  free(x->recv);
  free(x->mine);
  free(x->red);
  free(x->stats);
  dp_reprosum_free(&x->sums);
  memset(x, 0, sizeof *x);
}

int dp_exactsync_register(dp_exactsync *x, dp_state *st) {
  int64_t dims[2] = {x->n_slots, 0};
  return dp_state_tensor(st, DP_T_F64, x->kmax, 1, dims, DP_ST_OPTIONAL, "deterministic/exponents");
}

void dp_exactsync_begin(dp_exactsync *x, int64_t n_terms, int64_t mine) {
  x->n_terms = n_terms;
  x->floats = n_terms <= x->comm->size && x->comm->size > 1;
  x->defer = !x->floats && mine == 1 && x->comm->size > 1;
  x->limit = dp_reprosum_limit(n_terms);
  memset(tail(x), 0, sizeof(int64_t) * (size_t)tail_len(x));
  memset(x->written, 0, sizeof x->written);
  for (int k = 0; k < x->n_slots; k++) {
    double kk = x->kmax[k] > 1000 ? 1000 : !(x->kmax[k] > -1000) ? -1000 : x->kmax[k]; /* a loaded value */
    x->e[k] = dp_reprosum_exponent(ldexp(0.5, (int)kk), n_terms, DP_EXACT_HEADROOM);
    x->maxabs[k] = 0.0;
    x->bad[k] = 0;
  }
  memcpy(x->stats, x->m->stats, sizeof(float) * x->m->n_stats);
}

/* From the largest chunk values of all ranks: whether this reduction must be redone (a value beyond
 * the headroom, or far below the exponent's range), and every slot's bound for the next one. */
static int next_exponents(dp_exactsync *x) {
  int redo = 0;
  for (int k = 0; k < x->n_slots; k++) {
    if (!(x->gmax[k] > 0.0) || !isfinite(x->gmax[k]))
      continue; /* nothing to go by: keep the bound */
    int kk;
    frexp(x->gmax[k], &kk);
    redo |= ldexp(x->gmax[k], x->e[k]) >= x->limit || kk < x->kmax[k] - DP_EXACT_SLACK;
    x->kmax[k] = kk;
  }
  return redo;
}

/* This rank's slice of the reduced block (its own part in acc, the other ranks' sum in mine) into
 * the gradient block, each tensor's part at its exponent. */
static void slice_to_floats(dp_exactsync *x) {
  size_t lo = (size_t)x->displs[x->comm->rank], hi = lo + (size_t)x->counts[x->comm->rank];
  float *g = x->m->grads;
  for (int i = 0; i < x->m->n_layers; i++)
    for (int k = x->first[i]; k < x->first[i + 1]; k++) {
      size_t a = clamp(lo, x->off[k], x->off[k] + x->len[k]), b = clamp(hi, x->off[k], x->off[k] + x->len[k]);
      if (a == b)
        continue;
      if (x->comm->size == 1)
        dp_reprosum_to_f32(g + a, x->acc + a, b - a, x->e[k]);
      else if (x->defer && x->written[i]) /* this rank's one chunk is still in g */
        dp_reprosum_fixed_sum_to_f32(g + a, g + a, x->mine + (a - lo), b - a, x->e[k], x->limit);
      else
        dp_reprosum_sum_to_f32(g + a, x->acc + a, x->mine + (a - lo), b - a, x->e[k]);
    }
}

/* With floats: this rank's slice from every rank's values of it, summed exactly in fixed point. */
static void sum_received(dp_exactsync *x) {
  int P = x->comm->size;
  size_t lo = (size_t)x->displs[x->comm->rank], hi = lo + (size_t)x->counts[x->comm->rank];
  for (int k = 0; k < x->n_slots - 2; k++) {
    size_t a = clamp(lo, x->off[k], x->off[k] + x->len[k]), n = clamp(hi, x->off[k], x->off[k] + x->len[k]) - a;
    int64_t *acc = x->mine + (a - lo);
    float unused = 0.0f; /* the senders counted and measured their values */
    if (n && P == 2) {
      dp_reprosum_fixed2_to_f32(x->m->grads + a, x->recv + (a - lo), x->recv + (size_t)x->rdispls[1] + (a - lo), n,
                                x->e[k], x->limit);
      continue;
    }
    for (int q = 0; n && q < P - 1; q++) {
      const float *v = x->recv + (size_t)x->rdispls[q] + (a - lo);
      if (q)
        dp_reprosum_add_f32(acc, v, n, x->e[k], x->limit, &unused);
      else
        dp_reprosum_set_f32(acc, v, n, x->e[k], x->limit, &unused);
    }
    if (n)
      dp_reprosum_fixed_sum_to_f32(x->m->grads + a, x->recv + (size_t)x->rdispls[P - 1] + (a - lo), acc, n, x->e[k],
                                   x->limit);
  }
}

static void mark_nonfinite(dp_exactsync *x) {
  for (int k = 0; k < x->n_slots - 2; k++)
    if (tail(x)[XS_BAD + k] > 0) /* NaN or Inf somewhere: the trainer's check must see it */
      for (size_t j = 0; j < x->len[k]; j++)
        x->m->grads[x->off[k] + j] = NAN;
}

static double scalar(const dp_exactsync *x, int k, int slot) {
  return tail(x)[XS_BAD + k] > 0 ? NAN : dp_reprosum_value(tail(x)[slot], x->e[k]);
}

int dp_exactsync_finish(dp_exactsync *x, int failed, int stop, int save, int may_redo, dp_exact_sums *s) {
  int64_t *t = tail(x);
  t[XS_FAILED] = failed, t[XS_STOP] = stop, t[XS_SAVE] = save;
  for (int k = 0; k < x->n_slots; k++) {
    t[XS_BAD + k] = (int64_t)x->bad[k];
    memcpy(&x->red[k], &x->maxabs[k], sizeof(double)); /* >= 0: the bits order as the values do */
  }
  DP_TRY(dp_comm_allreduce_max_sum_i64(x->comm, x->red, x->n_slots, tail_len(x)));
  for (int k = 0; k < x->n_slots; k++)
    memcpy(&x->gmax[k], &x->red[k], sizeof(double));
  if (next_exponents(x) && may_redo) {
    memcpy(x->m->stats, x->stats, sizeof(float) * x->m->n_stats);
    return 1;
  }
  for (int i = 0; i < x->m->n_layers; i++) /* no chunk here: this rank adds zeros */
    for (int k = x->first[i]; !x->written[i] && k < x->first[i + 1]; k++)
      if (x->floats)
        memset(x->m->grads + x->off[k], 0, sizeof(float) * x->len[k]);
      else
        memset(x->acc + x->off[k], 0, sizeof(int64_t) * x->len[k]);
  if (x->floats) {
    DP_TRY(dp_comm_alltoallv_f32(x->comm, x->m->grads, x->counts, x->displs, x->recv, x->rcounts, x->rdispls));
    sum_received(x);
  } else {
    DP_TRY(dp_comm_reduce_scatter_i64(x->comm, x->acc, x->mine, x->mine + x->slice, (int)x->slice));
    slice_to_floats(x);
  }
  DP_TRY(dp_comm_allgatherv_f32(x->comm, x->m->grads, x->counts, x->displs));
  mark_nonfinite(x);
  *s = (dp_exact_sums){.loss = scalar(x, x->n_slots - 2, XS_LOSS), .abserr = scalar(x, x->n_slots - 1, XS_ABSERR),
                       .correct = t[XS_CORRECT], .failed = t[XS_FAILED], .stop = t[XS_STOP], .save = t[XS_SAVE]};
  return 0;
}
