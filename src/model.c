#include "dptrain/model.h"

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

static void assign_views(dp_model *m) {
  size_t off = 0, aoff = 0, B = (size_t)m->max_batch;
  for (int i = 0; i < m->n_layers; i++) {
    dp_dense *l = &m->layer[i];
    size_t nw = (size_t)l->out * l->in;
    l->w = m->params + off;
    l->dw = m->grads + off;
    off += pad16(nw);
    l->b = m->params + off;
    l->db = m->grads + off;
    off += pad16((size_t)l->out);
    l->y = m->acts + aoff;
    aoff += pad16(B * l->out);
    l->dy = m->acts + aoff;
    aoff += pad16(B * l->out);
  }
}

int dp_model_create(dp_model *m, const dp_config *cfg, int in_dim, int max_batch) {
  memset(m, 0, sizeof *m);
  if (cfg->n_layers < 1 || in_dim < 1 || max_batch < 1)
    return dp_fail(DP_EINVAL, "model: needs at least one layer, inputs and a batch");
  m->n_layers = cfg->n_layers;
  m->in_dim = in_dim;
  m->max_batch = max_batch;
  m->loss = cfg->model.loss;
  size_t nf = 0, na = 0;
  int in = in_dim;
  for (int i = 0; i < m->n_layers; i++) {
    dp_dense *l = &m->layer[i];
    l->in = in;
    l->out = cfg->layer[i].units;
    l->act = cfg->layer[i].activation;
    m->n_params += (size_t)l->out * l->in + (size_t)l->out;
    nf += pad16((size_t)l->out * l->in) + pad16((size_t)l->out);
    na += 2 * pad16((size_t)max_batch * l->out);
    in = l->out;
  }
  m->out_dim = in;
  m->n_floats = nf;
  m->params = alloc_floats(nf);
  m->grads = alloc_floats(nf + DP_GRAD_EXTRA);
  m->acts = alloc_floats(na);
  if (!m->params || !m->grads || !m->acts) {
    dp_model_free(m);
    return dp_fail(DP_ENOMEM, "model: cannot allocate %zu parameters and %zu activation floats", nf, na);
  }
  assign_views(m);
  return 0;
}

void dp_model_free(dp_model *m) {
  free(m->params);
  free(m->grads);
  free(m->acts);
  m->params = m->grads = m->acts = NULL;
}

void dp_model_init(dp_model *m, const dp_config *cfg, uint64_t seed) {
  dp_rng rng;
  for (int i = 0; i < m->n_layers; i++) {
    dp_dense *l = &m->layer[i];
    const dp_layer_cfg *lc = &cfg->layer[i];
    /* One stream per layer: adding a layer does not change the others' initial weights. */
    dp_rng_seed(&rng, seed, 0x1000 + (uint64_t)i);
    dp_init_weights(l->w, l->in, l->out, lc->init, lc->init_dist, l->act, &rng);
    memset(l->b, 0, sizeof(float) * (size_t)l->out);
  }
}

const float *dp_model_forward(dp_model *m, const float *x, int B) {
  for (int i = 0; i < m->n_layers; i++) {
    dp_dense_forward(&m->layer[i], x, B);
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

double dp_model_backward(dp_model *m, const float *x, const int32_t *labels, const float *targets, int B,
                         float scale, int accumulate, int *correct) {
  dp_dense *last = &m->layer[m->n_layers - 1];
  double loss = B ? output_loss(m, labels, targets, B, scale, last->dy, correct) : 0.0;
  if (!B && correct)
    *correct = 0;
  for (int i = m->n_layers - 1; i >= 0; i--) {
    const float *in = i ? m->layer[i - 1].y : x;
    float *dx = i ? m->layer[i - 1].dy : NULL; /* the input needs no gradient */
    dp_dense_backward(&m->layer[i], in, B, dx, accumulate);
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
  t[1] = (dp_tensor){"bias", (size_t)(l->b - m->params), 1, {l->out, 0}};
  return 2;
}
