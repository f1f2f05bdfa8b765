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
  size_t params, acts, stats, scratch, work, aux, col;
} block_sizes;

static int has_params(const dp_layer_geom *g) { return g->type == DP_LAYER_DENSE || g->type == DP_LAYER_CONV2D; }

/* A dense layer fed an NHWC image flattens it first (the implicit flatten). */
static int flattens(const dp_layer_geom *g) { return g->type == DP_LAYER_DENSE && g->h > 0 && !g->nchw; }

/* Layer g's masks, winners and flattened inputs in the aux block; the im2col scratch it needs. */
static void place_aux(dp_model *m, dp_layer_geom *g, block_sizes *o) {
  int have = m->params != NULL;
  size_t B = (size_t)m->max_batch, n = 0;
  if (g->type == DP_LAYER_DROPOUT) {
    if (have)
      g->mask = m->aux + o->aux;
    n = B * g->n_out;
  } else if (g->type == DP_LAYER_MAXPOOL) {
    if (have)
      g->arg = (int32_t *)(m->aux + o->aux); /* int32 and float are both 4 bytes */
    n = B * g->n_out;
  } else if (flattens(g)) {
    if (have)
      g->flat = m->aux + o->aux, g->dflat = m->aux + o->aux + pad16(B * g->n_in);
    n = pad16(B * g->n_in) + B * g->n_in;
  }
  o->aux += pad16(n);
  if (g->type == DP_LAYER_CONV2D) {
    size_t col = dp_conv_col_floats(&g->conv, m->max_batch);
    o->col = col > o->col ? col : o->col;
  }
}

/* Counts layer i's share of each block and, when m's blocks exist, points its views into them. */
static void place_layer(dp_model *m, int i, block_sizes *o) {
  int have = m->params != NULL;
  dp_dense *l = &m->layer[i];
  dp_layer_geom *g = &m->geom[i];
  size_t B = (size_t)m->max_batch * (size_t)g->pix, u = has_params(g) ? (size_t)l->out : g->n_out;
  dp_norm *n = &l->norm;
  if (have) {
    l->w = m->params + o->params, l->dw = m->grads + o->params;
    l->y = m->acts + o->acts, l->dy = m->acts + o->acts + pad16(B * u);
  }
  o->params += pad16((size_t)l->out * (size_t)l->in);
  o->acts += 2 * pad16(B * u);
  place_aux(m, g, o);
  if (!has_params(g))
    return;
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
  o->scratch += pad16(dp_norm_scratch_floats(n->kind, l->out, m->max_batch * g->pix));
  o->work += dp_norm_work_doubles(n->kind, l->out);
  o->stats += n->kind == DP_NORM_BATCH ? 2 * pad16(u) : 0;
}

static void place_all(dp_model *m, block_sizes *o) {
  memset(o, 0, sizeof *o);
  for (int i = 0; i < m->n_layers; i++)
    place_layer(m, i, o);
}

/* The dense part: in inputs and out outputs per row, pix rows per sample. */
static void configure_dense(dp_model *m, dp_dense *l, const dp_layer_cfg *lc, int in, int out, int pix) {
  l->in = in;
  l->out = out;
  l->act = lc->activation;
  l->norm = (dp_norm){.kind = (dp_norm_kind)lc->norm,
                      .units = out,
                      .max_batch = m->max_batch * pix,
                      .eps = (float)lc->eps,
                      .momentum = (float)lc->norm_momentum,
                      .sync = lc->sync};
  m->n_params += dp_dense_params(l->in, l->out, lc->norm != DP_NORM_NONE);
}

static void set_output(dp_layer_geom *g, int c, int h, int w) {
  g->oc = c, g->oh = h, g->ow = w;
  g->n_out = (size_t)c * (size_t)(h ? h : 1) * (size_t)(w ? w : 1);
}

/* An image layer's geometry from its input g->c, h, w; DP_ECONFIG naming the layer when it does not fit. */
static int configure_image(dp_layer_geom *g, const dp_layer_cfg *lc, int i) {
  int kh = (int)lc->kernel[0], kw = lc->n_kernel > 1 ? (int)lc->kernel[1] : kh, rc;
  if (g->type == DP_LAYER_CONV2D) {
    rc = dp_conv_geom_init(&g->conv, g->c, g->h, g->w, lc->filters, kh, kw, lc->stride ? lc->stride : 1, lc->padding);
    set_output(g, lc->filters, g->conv.oh, g->conv.ow);
    g->pix = g->conv.oh * g->conv.ow;
  } else {
    rc = dp_pool_geom_init(&g->pool, g->c, g->h, g->w, kh, lc->stride ? lc->stride : kh, g->type == DP_LAYER_MAXPOOL);
    set_output(g, g->c, g->pool.oh, g->pool.ow);
  }
  if (rc == 0)
    return 0;
  char msg[256]; /* dp_fail writes where dp_errmsg reads */
  snprintf(msg, sizeof msg, "%s", dp_errmsg(rc));
  return dp_fail(DP_ECONFIG, "[layer %d] %s", i, msg);
}

/* Layer i's kind and sizes from its input (g->c, h, w, nchw already set). */
static int configure(dp_model *m, int i, const dp_layer_cfg *lc) {
  dp_layer_geom *g = &m->geom[i];
  g->type = lc->type;
  g->n_in = (size_t)g->c * (size_t)(g->h ? g->h : 1) * (size_t)(g->w ? g->w : 1);
  g->pix = 1;
  switch (lc->type) {
  case DP_LAYER_DENSE:
    set_output(g, lc->units, 0, 0);
    configure_dense(m, &m->layer[i], lc, (int)g->n_in, lc->units, 1);
    return 0;
  case DP_LAYER_CONV2D:
    DP_TRY(configure_image(g, lc, i));
    configure_dense(m, &m->layer[i], lc, g->c * g->conv.kh * g->conv.kw, lc->filters, g->pix);
    return 0;
  case DP_LAYER_MAXPOOL:
  case DP_LAYER_AVGPOOL:
    return configure_image(g, lc, i);
  case DP_LAYER_FLATTEN:
    set_output(g, (int)g->n_in, 0, 0);
    return 0;
  case DP_LAYER_DROPOUT:
    set_output(g, g->c, g->h, g->w);
    g->rate = (float)lc->rate;
    return 0;
  }
  return dp_fail(DP_EINVAL, "[layer %d]: unknown type %d", i, (int)lc->type);
}

/* Every layer's geometry, each from the previous one's output. */
static int configure_all(dp_model *m, const dp_layer_cfg *layers, const int64_t *shape) {
  int c = m->in_dim, h = 0, w = 0, nchw = 1;
  if (shape) {
    if (shape[0] * shape[1] * shape[2] != m->in_dim)
      return dp_fail(DP_ECONFIG, "[data] shape = %lld,%lld,%lld is %lld values per row, the data's rows have %d",
                     (long long)shape[0], (long long)shape[1], (long long)shape[2],
                     (long long)(shape[0] * shape[1] * shape[2]), m->in_dim);
    c = (int)shape[0], h = (int)shape[1], w = (int)shape[2];
  }
  for (int i = 0; i < m->n_layers; i++) {
    dp_layer_geom *g = &m->geom[i];
    g->c = c, g->h = h, g->w = w, g->nchw = nchw;
    DP_TRY(configure(m, i, &layers[i]));
    c = g->oc, h = g->oh, w = g->ow;
    /* conv2d and the pools write NHWC, flatten and dense rows; dropout keeps its input's layout */
    nchw = g->type == DP_LAYER_DROPOUT ? nchw : !(g->type == DP_LAYER_CONV2D || g->type == DP_LAYER_MAXPOOL ||
                                                  g->type == DP_LAYER_AVGPOOL);
  }
  return 0;
}

static int alloc_blocks(dp_model *m, const block_sizes *o) {
  m->params = alloc_floats(o->params);
  m->grad_block = alloc_floats(16 + o->params); /* 16: extra stays in front, grads stay aligned */
  m->grads = m->grad_block ? m->grad_block + 16 : NULL;
  m->extra = m->grads ? m->grads - DP_GRAD_EXTRA : NULL;
  m->acts = alloc_floats(o->acts);
  m->aux = alloc_floats(o->aux);
  m->col = alloc_floats(o->col);
  m->stats = alloc_floats(o->stats);
  m->norm_scratch = alloc_floats(o->scratch);
  m->norm_work = calloc(o->work ? o->work : 1, sizeof(double));
  if (!m->params || !m->grads || !m->acts || !m->aux || !m->col || !m->stats || !m->norm_scratch || !m->norm_work)
    return dp_fail(DP_ENOMEM, "model: cannot allocate %zu parameters and %zu activation floats", o->params,
                   o->acts + o->aux + o->col);
  return 0;
}

/* The layers configured and every block counted, nothing allocated. */
static int plan(dp_model *m, const dp_layer_cfg *layers, int n_layers, dp_loss_kind loss, const int64_t *shape,
                int in_dim, int max_batch, block_sizes *o) {
  memset(m, 0, sizeof *m);
  if (n_layers < 1 || n_layers > DP_MAX_LAYERS || in_dim < 1 || max_batch < 1)
    return dp_fail(DP_EINVAL, "model: needs at least one layer, inputs and a batch");
  m->n_layers = n_layers;
  m->in_dim = in_dim;
  m->max_batch = max_batch;
  m->loss = loss;
  DP_TRY(configure_all(m, layers, shape));
  m->out_dim = m->layer[n_layers - 1].out;
  place_all(m, o); /* count */
  m->n_floats = o->params;
  m->n_stats = o->stats;
  return 0;
}

int dp_model_plan(const dp_layer_cfg *layers, int n_layers, dp_loss_kind loss, const int64_t *shape, int in_dim,
                  int max_batch, double *params, double *other) {
  dp_model *m = malloc(sizeof *m); /* large: its layer arrays */
  if (!m)
    return dp_fail(DP_ENOMEM, "model: out of memory");
  block_sizes o = {0};
  int rc = plan(m, layers, n_layers, loss, shape, in_dim, max_batch, &o);
  *params = (double)o.params;
  *other = (double)(o.acts + o.stats + o.scratch + o.aux + o.col) + 2.0 * (double)o.work;
  free(m);
  return rc;
}

int dp_model_create(dp_model *m, const dp_layer_cfg *layers, int n_layers, dp_loss_kind loss, const int64_t *shape,
                    int in_dim, int max_batch) {
  block_sizes o;
  int rc = plan(m, layers, n_layers, loss, shape, in_dim, max_batch, &o);
  if (rc < 0)
    return rc;
  rc = alloc_blocks(m, &o);
  if (rc < 0) {
    dp_model_free(m);
    return rc;
  }
  place_all(m, &o); /* assign the views */
  return 0;
}

void dp_model_free(dp_model *m) {
  if (!m->shared_params)
    free(m->params);
  if (!m->shared_grads)
    free(m->grad_block);
  m->shared_params = m->shared_grads = 0;
  free(m->acts);
  free(m->aux);
  free(m->col);
  m->aux = m->col = NULL;
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
    l->chunk = l->norm.chunk = rows * m->geom[i].pix; /* a conv2d's chunk: its samples' pixels */
    l->norm.chunk_reduce = reduce;
    l->norm.reduce_ctx = ctx;
    l->norm.chunk_sums = m->chunk_sums;
  }
  return 0;
}

/* A conv2d's weights by the table with fan_in = c·kh·kw, fan_out = filters·kh·kw (PyTorch's). */
static void init_conv(const dp_dense *l, const dp_layer_geom *g, const dp_layer_cfg *lc, dp_rng *rng) {
  int is_normal;
  double width;
  dp_init_params(lc->init, lc->init_dist, l->act, l->in, l->out * g->conv.kh * g->conv.kw, &is_normal, &width);
  for (size_t i = 0; i < (size_t)l->in * (size_t)l->out; i++)
    l->w[i] = (float)(is_normal ? width * dp_rng_normal(rng) : width * (2.0 * dp_rng_uniform(rng) - 1.0));
}

void dp_model_init(dp_model *m, const dp_layer_cfg *layers, uint64_t seed) {
  dp_rng rng;
  for (int i = 0; i < m->n_layers; i++) {
    dp_dense *l = &m->layer[i];
    const dp_layer_cfg *lc = &layers[i];
    if (!has_params(&m->geom[i]))
      continue;
    /* One stream per layer: adding a layer does not change the others' initial weights. */
    dp_rng_seed(&rng, seed, 0x1000 + (uint64_t)i);
    if (m->geom[i].type == DP_LAYER_CONV2D)
      init_conv(l, &m->geom[i], lc, &rng);
    else
      dp_init_weights(l->w, l->in, l->out, lc->init, lc->init_dist, l->act, &rng);
    if (l->b)
      memset(l->b, 0, sizeof(float) * (size_t)l->out);
    if (l->norm.kind != DP_NORM_NONE)
      dp_norm_init_params(&l->norm);
  }
}

void dp_model_set_pass(dp_model *m, uint64_t seed, int64_t step, int64_t row0) {
  m->seed = seed;
  m->step = step;
  m->row0 = row0;
}

static dp_img input_layout(const dp_layer_geom *g) {
  return g->nchw ? dp_img_nchw(g->c, g->h, g->w) : dp_img_nhwc(g->c, g->h, g->w);
}

static void dropout_forward(dp_model *m, int i, const float *x, int B) {
  dp_dense *l = &m->layer[i];
  dp_layer_geom *g = &m->geom[i];
  size_t n = (size_t)B * g->n_out;
  if (l->eval || g->rate == 0.0f) {
    memcpy(l->y, x, sizeof(float) * n);
    return;
  }
  dp_dropout_mask(m->seed, m->step, i, m->row0, B, (int)g->n_out, g->rate, g->mask);
  for (size_t j = 0; j < n; j++)
    l->y[j] = x[j] * g->mask[j];
}

/* Layer i's output y from its input x (B samples); 0 or the norm's error. */
static int layer_forward(dp_model *m, int i, const float *x, int B) {
  dp_dense *l = &m->layer[i];
  dp_layer_geom *g = &m->geom[i];
  switch (g->type) {
  case DP_LAYER_DENSE:
    if (flattens(g)) {
      dp_nhwc_to_nchw(x, B, g->c, g->h, g->w, g->flat);
      x = g->flat;
    }
    return dp_dense_forward(l, x, B);
  case DP_LAYER_CONV2D:
    dp_im2col(&g->conv, x, input_layout(g), B, m->col);
    return dp_dense_forward(l, m->col, B * g->pix);
  case DP_LAYER_MAXPOOL:
  case DP_LAYER_AVGPOOL:
    dp_pool_forward(&g->pool, x, B, l->y, g->arg);
    return 0;
  case DP_LAYER_FLATTEN:
    if (g->nchw)
      memcpy(l->y, x, sizeof(float) * (size_t)B * g->n_in);
    else
      dp_nhwc_to_nchw(x, B, g->c, g->h, g->w, l->y);
    return 0;
  case DP_LAYER_DROPOUT:
    dropout_forward(m, i, x, B);
    return 0;
  }
  return 0;
}

const float *dp_model_forward(dp_model *m, const float *x, int B) {
  for (int i = 0; i < m->n_layers; i++) {
    int rc = layer_forward(m, i, x, B);
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

/* Deterministic mode: layer i's gradients chunk by chunk, each handed on before the next overwrites it.
 * rows: of the dense part (a conv2d's B·oh·ow). */
static void chunk_grads(dp_model *m, int i, const float *in, int rows) {
  for (int c = 0; c * m->layer[i].chunk < rows; c++) {
    dp_dense_chunk_grads(&m->layer[i], in, rows, c);
    if (m->on_chunk_grad)
      m->on_chunk_grad(m->on_chunk_ctx, i, c);
  }
}

/* The dense part's gradients from l->dy and its input x (rows rows); dL/dx into dx (may be NULL). */
static int dense_backward(dp_model *m, int i, const float *x, int rows, float *dx, int accumulate) {
  int rc = dp_dense_backward(&m->layer[i], x, rows, dx, accumulate);
  if (m->chunk_rows)
    chunk_grads(m, i, x, rows);
  return rc;
}

/* A conv2d: the forward's im2col is recomputed into the one scratch, which then takes the columns'
 * gradient for col2im. */
static int conv_backward(dp_model *m, int i, const float *x, int B, float *dx, int accumulate) {
  dp_layer_geom *g = &m->geom[i];
  dp_im2col(&g->conv, x, input_layout(g), B, m->col);
  int rc = dense_backward(m, i, m->col, B * g->pix, NULL, accumulate);
  if (dx) {
    dp_dense_input_grad(&m->layer[i], B * g->pix, m->col);
    dp_col2im(&g->conv, m->col, B, dx, input_layout(g));
  }
  return rc;
}

/* From layer i's dy: its parameters' gradients and dL/dx of its input x into dx (NULL: not needed). */
static int layer_backward(dp_model *m, int i, const float *x, int B, float *dx, int accumulate) {
  dp_dense *l = &m->layer[i];
  dp_layer_geom *g = &m->geom[i];
  size_t n = (size_t)B * g->n_in;
  switch (g->type) {
  case DP_LAYER_DENSE: {
    if (!flattens(g))
      return dense_backward(m, i, x, B, dx, accumulate);
    int rc = dense_backward(m, i, g->flat, B, dx ? g->dflat : NULL, accumulate);
    if (dx)
      dp_nchw_to_nhwc(g->dflat, B, g->c, g->h, g->w, dx);
    return rc;
  }
  case DP_LAYER_CONV2D:
    return conv_backward(m, i, x, B, dx, accumulate);
  case DP_LAYER_MAXPOOL:
  case DP_LAYER_AVGPOOL:
    if (dx)
      dp_pool_backward(&g->pool, l->dy, B, g->arg, dx);
    return 0;
  case DP_LAYER_FLATTEN:
    if (dx && g->nchw)
      memcpy(dx, l->dy, sizeof(float) * n);
    else if (dx)
      dp_nchw_to_nhwc(l->dy, B, g->c, g->h, g->w, dx);
    return 0;
  case DP_LAYER_DROPOUT:
    for (size_t j = 0; dx && j < n; j++)
      dx[j] = l->eval || g->rate == 0.0f ? l->dy[j] : l->dy[j] * g->mask[j];
    return 0;
  }
  return 0;
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
    int rc = layer_backward(m, i, in, B, dx, accumulate);
    if (rc < 0 && m->err == 0)
      m->err = rc;
    if (m->on_layer_grad)
      m->on_layer_grad(m->on_layer_ctx, i);
  }
  return loss;
}

double dp_model_flops_forward(const dp_model *m) {
  double f = 0.0;
  for (int i = 0; i < m->n_layers; i++)
    f += 2.0 * m->geom[i].pix * m->layer[i].in * m->layer[i].out;
  return f;
}

int dp_model_tensors(const dp_model *m, int i, dp_tensor t[DP_MAX_TENSORS]) {
  const dp_dense *l = &m->layer[i];
  if (!has_params(&m->geom[i]))
    return 0;
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

void dp_model_adopt(dp_model *m, float *params, float *grad_block) {
  if (params) {
    if (!m->shared_params)
      free(m->params);
    m->params = params;
    m->shared_params = 1;
  }
  if (grad_block) {
    if (!m->shared_grads)
      free(m->grad_block);
    m->grad_block = grad_block;
    m->grads = grad_block + 16;
    m->extra = m->grads - DP_GRAD_EXTRA;
    m->shared_grads = 1;
  }
  block_sizes o;
  place_all(m, &o);
}
