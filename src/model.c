#include "dptrain/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"
#include "dptrain/init.h"
#include "dptrain/rng.h"

/* 16 floats = 64 bytes: every view starts on a cache line, which AVX-512 loads like. */
static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

static float *alloc_floats(size_t n) {
  size_t bytes = pad16(n ? n : 1) * sizeof(float);
  float *p = aligned_alloc(64, bytes);
  if (p)
    memset(p, 0, bytes);
  return p;
}

/* Sizes of every block, walked in one place so that counting and assigning views cannot drift. */
typedef struct {
  size_t params, acts, stats, scratch, work;
} block_sizes;

/* Counts layer l's share of each block and, when m's blocks exist, points l's views into them. */
static void place_layer(dp_model *m, dp_dense *l, block_sizes *o) {
  int have = m->params != NULL;
  size_t B = (size_t)m->max_batch, u = (size_t)l->out;
  dp_norm *n = &l->norm;
  if (have) {
    l->w = m->params + o->params, l->dw = m->grads + o->params;
    l->y = m->acts + o->acts, l->dy = m->acts + o->acts + pad16(B * u);
  }
  o->params += pad16(u * (size_t)l->in);
  o->acts += 2 * pad16(B * u);
  if (n->kind == DP_NORM_NONE) {
    if (have)
      l->b = m->params + o->params, l->db = m->grads + o->params;
    o->params += pad16(u);
    return;
  }
  if (have) {
    n->gain = m->params + o->params, n->dgain = m->grads + o->params;
    n->shift = n->gain + pad16(u), n->dshift = n->dgain + pad16(u);
    n->zhat = m->norm_scratch + o->scratch;
    n->inv_std = n->zhat + B * u;
    n->work = m->norm_work + o->work;
    if (n->kind == DP_NORM_BATCH)
      n->running_mean = m->stats + o->stats, n->running_var = m->stats + o->stats + pad16(u);
  }
  o->params += 2 * pad16(u);
  o->scratch += pad16(dp_norm_scratch_floats(n->kind, l->out, m->max_batch));
  o->work += dp_norm_work_doubles(n->kind, l->out);
  o->stats += n->kind == DP_NORM_BATCH ? 2 * pad16(u) : 0;
}

static void place_all(dp_model *m, block_sizes *o) {
  memset(o, 0, sizeof *o);
  for (int i = 0; i < m->n_layers; i++)
    place_layer(m, &m->layer[i], o);
}

static void configure_layer(dp_model *m, dp_dense *l, const dp_layer_cfg *lc, int in) {
  l->in = in;
  l->out = lc->units;
  l->act = lc->activation;
  l->norm = (dp_norm){.kind = (dp_norm_kind)lc->norm,
                      .units = lc->units,
                      .max_batch = m->max_batch,
                      .eps = (float)lc->eps,
                      .momentum = (float)lc->norm_momentum,
                      .sync = lc->sync};
  m->n_params += dp_dense_params(l->in, l->out, lc->norm != DP_NORM_NONE);
}

static int alloc_blocks(dp_model *m, const block_sizes *o) {
  m->params = alloc_floats(o->params);
  m->grad_block = alloc_floats(16 + o->params); /* 16: extra stays in front, grads stay aligned */
  m->grads = m->grad_block ? m->grad_block + 16 : NULL;
  m->extra = m->grads ? m->grads - DP_GRAD_EXTRA : NULL;
  m->acts = alloc_floats(o->acts);
  m->stats = alloc_floats(o->stats);
  m->norm_scratch = alloc_floats(o->scratch);
  m->norm_work = calloc(o->work ? o->work : 1, sizeof(double));
  if (!m->params || !m->grads || !m->acts || !m->stats || !m->norm_scratch || !m->norm_work)
    return dp_fail(DP_ENOMEM, "model: cannot allocate %zu parameters and %zu activation floats", o->params, o->acts);
  return 0;
}

int dp_model_create(dp_model *m, const dp_layer_cfg *layers, int n_layers, dp_loss_kind loss, int in_dim,
                    int max_batch) {
  memset(m, 0, sizeof *m);
  if (n_layers < 1 || n_layers > DP_MAX_LAYERS || in_dim < 1 || max_batch < 1)
    return dp_fail(DP_EINVAL, "model: needs at least one layer, inputs and a batch");
  m->n_layers = n_layers;
  m->in_dim = in_dim;
  m->max_batch = max_batch;
  m->loss = loss;
  int in = in_dim;
  for (int i = 0; i < m->n_layers; i++) {
    configure_layer(m, &m->layer[i], &layers[i], in);
    in = m->layer[i].out;
  }
  m->out_dim = in;
  block_sizes o;
  place_all(m, &o); /* count */
  m->n_floats = o.params;
  m->n_stats = o.stats;
  int rc = alloc_blocks(m, &o);
  if (rc < 0) {
    dp_model_free(m);
    return rc;
  }
  place_all(m, &o); /* assign the views */
  return 0;
}

void dp_model_free(dp_model *m) {
  free(m->params);
  free(m->grad_block);
  free(m->acts);
  free(m->stats);
  free(m->norm_scratch);
  free(m->norm_work);
  free(m->chunk_loss);
  free(m->chunk_hits);
  free(m->chunk_sums);
  m->chunk_loss = m->chunk_abserr = m->chunk_sums = NULL;
  m->chunk_hits = NULL;
  m->params = m->grads = m->grad_block = m->extra = m->acts = m->stats = m->norm_scratch = NULL;
  m->norm_work = NULL;
}

void dp_model_set_eval(dp_model *m, int eval) {
  for (int i = 0; i < m->n_layers; i++)
    m->layer[i].eval = eval;
}

void dp_model_set_reduce(dp_model *m, dp_reduce_fn fn, void *ctx) {
  for (int i = 0; i < m->n_layers; i++) {
    m->layer[i].norm.reduce = fn;
    m->layer[i].norm.reduce_ctx = ctx;
  }
}

int dp_model_set_chunks(dp_model *m, int rows, dp_chunk_reduce_fn reduce, void *ctx,
                        void (*on_grad)(void *grad_ctx, int layer, int chunk), void *grad_ctx) {
  size_t chunks = (size_t)(m->max_batch + rows - 1) / (size_t)rows, widest = 0;
  for (int i = 0; i < m->n_layers; i++)
    widest = (size_t)m->layer[i].out > widest ? (size_t)m->layer[i].out : widest;
  m->chunk_loss = malloc(sizeof(double) * 2 * chunks);
  m->chunk_abserr = m->chunk_loss ? m->chunk_loss + chunks : NULL;
  m->chunk_hits = malloc(sizeof(int) * chunks);
  m->chunk_sums = malloc(sizeof(double) * chunks * (2 * widest + 1));
  if (!m->chunk_loss || !m->chunk_hits || !m->chunk_sums)
    return dp_fail(DP_ENOMEM, "model: cannot allocate the sums of %zu chunks", chunks);
  m->chunk_rows = rows;
  m->on_chunk_grad = on_grad;
  m->on_chunk_ctx = grad_ctx;
  for (int i = 0; i < m->n_layers; i++) {
    dp_dense *l = &m->layer[i];
    l->chunk = l->norm.chunk = rows;
    l->norm.chunk_reduce = reduce;
    l->norm.reduce_ctx = ctx;
    l->norm.chunk_sums = m->chunk_sums;
  }
  return 0;
}

void dp_model_init(dp_model *m, const dp_layer_cfg *layers, uint64_t seed) {
  dp_rng rng;
  for (int i = 0; i < m->n_layers; i++) {
    dp_dense *l = &m->layer[i];
    const dp_layer_cfg *lc = &layers[i];
    /* One stream per layer: adding a layer does not change the others' initial weights. */
    dp_rng_seed(&rng, seed, 0x1000 + (uint64_t)i);
    dp_init_weights(l->w, l->in, l->out, lc->init, lc->init_dist, l->act, &rng);
    if (l->b)
      memset(l->b, 0, sizeof(float) * (size_t)l->out);
    if (l->norm.kind != DP_NORM_NONE)
      dp_norm_init_params(&l->norm);
  }
}

const float *dp_model_forward(dp_model *m, const float *x, int B) {
  for (int i = 0; i < m->n_layers; i++) {
    int rc = dp_dense_forward(&m->layer[i], x, B);
    if (rc < 0 && m->err == 0)
      m->err = rc; /* go on: every rank must make the same reduces */
    x = m->layer[i].y;
  }
  return x;
}

static double output_loss(dp_model *m, const int32_t *labels, const float *targets, int B, float scale,
                          float *dout, int *correct) {
  const float *out = m->layer[m->n_layers - 1].y;
  if (m->loss == DP_LOSS_MSE) {
    if (correct)
      *correct = 0;
    return dp_loss_mse(out, targets, B, m->out_dim, scale, dout);
  }
  return dp_loss_softmax_ce(out, labels, B, m->out_dim, scale, dout, correct);
}

double dp_model_loss(dp_model *m, const int32_t *labels, const float *targets, int B, int *correct) {
  return output_loss(m, labels, targets, B, 1.0f, NULL, correct);
}

/* Each chunk's loss sum and hits on its own (deterministic mode); returns their total. */
static double chunk_losses(dp_model *m, const int32_t *labels, const float *targets, int B, float scale, int *correct) {
  const dp_dense *last = &m->layer[m->n_layers - 1];
  size_t K = (size_t)m->out_dim;
  double total = 0.0;
  int hits = 0;
  for (int c = 0, r = 0; r < B; c++, r += m->chunk_rows) {
    int n = B - r < m->chunk_rows ? B - r : m->chunk_rows;
    const float *y = last->y + r * K;
    m->chunk_hits[c] = 0;
    m->chunk_abserr[c] = 0.0;
    if (m->loss == DP_LOSS_MSE) {
      m->chunk_loss[c] = dp_loss_mse(y, targets + r * K, n, m->out_dim, scale, last->dy + r * K);
      for (size_t j = 0; j < (size_t)n * K; j++)
        m->chunk_abserr[c] += fabs((double)y[j] - (double)targets[r * K + j]);
    } else
      m->chunk_loss[c] = dp_loss_softmax_ce(y, labels + r, n, m->out_dim, scale, last->dy + r * K, &m->chunk_hits[c]);
    total += m->chunk_loss[c];
    hits += m->chunk_hits[c];
  }
  if (correct)
    *correct = hits;
  return total;
}

/* Deterministic mode: layer i's gradients chunk by chunk, each handed on before the next overwrites it. */
static void chunk_grads(dp_model *m, int i, const float *in, int B) {
  for (int c = 0; c * m->chunk_rows < B; c++) {
    dp_dense_chunk_grads(&m->layer[i], in, B, c);
    if (m->on_chunk_grad)
      m->on_chunk_grad(m->on_chunk_ctx, i, c);
  }
}

double dp_model_backward(dp_model *m, const float *x, const int32_t *labels, const float *targets, int B,
                         float scale, int accumulate, int *correct) {
  dp_dense *last = &m->layer[m->n_layers - 1];
  double loss = !B ? 0.0
                : m->chunk_rows ? chunk_losses(m, labels, targets, B, scale, correct)
                                : output_loss(m, labels, targets, B, scale, last->dy, correct);
  if (!B && correct)
    *correct = 0;
  for (int i = m->n_layers - 1; i >= 0; i--) {
    const float *in = i ? m->layer[i - 1].y : x;
    float *dx = i ? m->layer[i - 1].dy : NULL; /* the input needs no gradient */
    int rc = dp_dense_backward(&m->layer[i], in, B, dx, accumulate);
    if (rc < 0 && m->err == 0)
      m->err = rc;
    if (m->chunk_rows)
      chunk_grads(m, i, in, B);
    if (m->on_layer_grad)
      m->on_layer_grad(m->on_layer_ctx, i);
  }
  return loss;
}

double dp_model_flops_forward(const dp_model *m) {
  double f = 0.0;
  for (int i = 0; i < m->n_layers; i++)
    f += 2.0 * m->layer[i].in * m->layer[i].out;
  return f;
}

int dp_model_tensors(const dp_model *m, int i, dp_tensor t[DP_MAX_TENSORS]) {
  const dp_dense *l = &m->layer[i];
  t[0] = (dp_tensor){"weight", (size_t)(l->w - m->params), 2, {l->out, l->in}};
  if (l->norm.kind == DP_NORM_NONE) {
    t[1] = (dp_tensor){"bias", (size_t)(l->b - m->params), 1, {l->out, 0}};
    return 2;
  }
  t[1] = (dp_tensor){"gain", (size_t)(l->norm.gain - m->params), 1, {l->out, 0}};
  t[2] = (dp_tensor){"shift", (size_t)(l->norm.shift - m->params), 1, {l->out, 0}};
  return 3;
}

int dp_model_stat_tensors(const dp_model *m, int i, dp_tensor t[DP_MAX_TENSORS]) {
  const dp_dense *l = &m->layer[i];
  if (l->norm.kind != DP_NORM_BATCH)
    return 0;
  t[0] = (dp_tensor){"running_mean", (size_t)(l->norm.running_mean - m->stats), 1, {l->out, 0}};
  t[1] = (dp_tensor){"running_var", (size_t)(l->norm.running_var - m->stats), 1, {l->out, 0}};
  return 2;
}

size_t dp_dense_params(int in, int out, int normed) { return (size_t)out * (size_t)in + (normed ? 2u : 1u) * (size_t)out; }

/* A different layer count says more than the first tensor that does not fit. */
static int check_layer_count(void *ctx, const dp_state *st, const char *path) {
  const dp_model *m = ctx;
  const int64_t *n = dp_state_loaded(st, "n_layers");
  if (n && *n != m->n_layers)
    return dp_fail(DP_ECKPT, "%s: the checkpoint's model has %lld layer%s, the config %d", path, (long long)*n,
                   dp_plural(*n), m->n_layers);
  return 0;
}

static int register_tensors(dp_state *st, float *block, const dp_tensor *ts, int n, int layer) {
  for (int k = 0; k < n; k++) {
    int64_t dims[2] = {ts[k].dims[0], ts[k].dims[1]};
    DP_TRY(dp_state_tensor(st, DP_T_F32, block + ts[k].offset, ts[k].rank, dims, DP_ST_MODEL, "model/layer%d/%s",
                           layer, ts[k].name));
  }
  return 0;
}

int dp_model_register(dp_model *m, dp_state *st) {
  for (int i = 0; i < m->n_layers; i++) {
    dp_tensor ts[DP_MAX_TENSORS];
    DP_TRY(register_tensors(st, m->params, ts, dp_model_tensors(m, i, ts), i));
    DP_TRY(register_tensors(st, m->stats, ts, dp_model_stat_tensors(m, i, ts), i));
  }
  /* Files written before the layer count was stored (and foreign weight files) lack it. */
  m->n_layers_i64 = m->n_layers;
  DP_TRY(dp_state_i64(st, &m->n_layers_i64, 0, DP_MAX_LAYERS, DP_ST_MODEL | DP_ST_CONST | DP_ST_OPTIONAL, "n_layers"));
  return dp_state_add_check(st, check_layer_count, m, DP_ST_MODEL);
}
