#include "dptrain/optim.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "dptrain/error.h"
#include "vec.h"

/* Each update loop also notes whether g held a NaN or an Inf (g − g is 0 exactly for finite g): an
 * integer OR that vectorises with the loop, so checking the gradient costs no pass of its own. */
#define NONFINITE(x) (!((x) - (x) == 0.0f))

DP_VECTOR_LOOP
int dp_sgd_momentum(size_t n, float lr, float beta, const float *restrict g, float *restrict w, float *restrict p) {
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    bad |= NONFINITE(g[i]);
    p[i] = beta * p[i] + g[i];
    w[i] -= lr * p[i];
  }
  return bad;
}

DP_VECTOR_LOOP
int dp_sgd_full(size_t n, float lr, float beta, float dampening, float weight_decay, int nesterov, int first,
                const float *restrict g, float *restrict w, float *restrict p) {
  /* PyTorch's convention: the first step's buffer is the gradient itself, undampened. */
  float keep = first ? 0.0f : beta, take = first ? 1.0f : 1.0f - dampening, look = nesterov ? beta : 0.0f;
  float direct = nesterov ? 1.0f : 0.0f, via_p = nesterov ? 0.0f : 1.0f;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    bad |= NONFINITE(g[i]);
    float gi = g[i] + weight_decay * w[i];
    p[i] = keep * p[i] + take * gi;
    w[i] -= lr * (direct * gi + look * p[i] + via_p * p[i]);
  }
  return bad;
}

DP_VECTOR_LOOP
int dp_sgd_difference(size_t n, float lr, float beta, const float *restrict g, float *restrict w,
                      float *restrict prev) {
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    bad |= NONFINITE(g[i]);
    float d = w[i] - prev[i];
    prev[i] = w[i];
    w[i] += beta * d - lr * g[i];
  }
  return bad;
}

DP_VECTOR_LOOP
int dp_rmsprop(size_t n, float lr, float alpha, float eps, float mu, float l2, const float *restrict g,
               float *restrict w, float *restrict v, float *restrict b) {
  int bad = 0;
  if (!b || mu == 0.0f) {
    for (size_t i = 0; i < n; i++) {
      bad |= NONFINITE(g[i]);
      float gi = g[i] + l2 * w[i];
      v[i] = alpha * v[i] + (1.0f - alpha) * gi * gi;
      w[i] -= lr * gi / (sqrtf(v[i]) + eps);
    }
    return bad;
  }
  for (size_t i = 0; i < n; i++) {
    bad |= NONFINITE(g[i]);
    float gi = g[i] + l2 * w[i];
    v[i] = alpha * v[i] + (1.0f - alpha) * gi * gi;
    b[i] = mu * b[i] + gi / (sqrtf(v[i]) + eps);
    w[i] -= lr * b[i];
  }
  return bad;
}

DP_VECTOR_LOOP
int dp_adam(size_t n, float lr, float beta1, float beta2, float eps, int eps_inside, float c1, float c2, float l2,
             float decoupled, const float *restrict g, float *restrict w, float *restrict m, float *restrict v) {
  float shrink = 1.0f - lr * decoupled, step = lr / c1, inv_c2 = 1.0f / c2;
  int bad = 0;
  /* Two loops instead of a branch per element, so both vectorise. */
  if (eps_inside) {
    for (size_t i = 0; i < n; i++) {
      bad |= NONFINITE(g[i]);
      float gi = g[i] + l2 * w[i];
      m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
      v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
      w[i] = shrink * w[i] - step * m[i] / sqrtf(v[i] * inv_c2 + eps);
    }
    return bad;
  }
  for (size_t i = 0; i < n; i++) {
    bad |= NONFINITE(g[i]);
    float gi = g[i] + l2 * w[i];
    m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
    v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    w[i] = shrink * w[i] - step * m[i] / (sqrtf(v[i] * inv_c2) + eps);
  }
  return bad;
}

void dp_optim_hparams_from_cfg(dp_optim_hparams *h, const dp_optim_cfg *c) {
  memset(h, 0, sizeof *h);
  h->kind = c->name;
  h->momentum = (float)c->momentum;
  h->dampening = (float)c->dampening;
  h->weight_decay = (float)c->weight_decay;
  h->nesterov = c->nesterov;
  h->difference = c->momentum_form == DP_MOMENTUM_DIFFERENCE;
  h->alpha = (float)c->alpha;
  h->eps = (float)c->eps;
  h->beta1 = (float)c->beta1;
  h->beta2 = (float)c->beta2;
  h->bias_correction = c->bias_correction;
  h->eps_inside = c->eps_placement == DP_EPS_INSIDE;
  h->history = c->history;
  h->tolerance_grad = c->tolerance_grad;
  h->tolerance_change = c->tolerance_change;
}

static int slots_needed(const dp_optim_hparams *h) {
  switch (h->kind) {
  case DP_OPT_SGD:
    return h->momentum > 0.0f || h->difference ? 1 : 0; /* p, or the previous weights */
  case DP_OPT_RMSPROP:
    return h->momentum > 0.0f ? 2 : 1; /* v, b */
  case DP_OPT_ADAM:
  case DP_OPT_ADAMW:
    return 2; /* m, v */
  case DP_OPT_LBFGS:
    return 0; /* its history lives in dp_lbfgs */
  }
  return 0;
}

int dp_optim_create(dp_optim *o, const dp_optim_hparams *h, size_t n) {
  memset(o, 0, sizeof *o);
  o->h = *h;
  o->n = n;
  o->n_slots = slots_needed(&o->h);
  if (o->n_slots) {
    o->state = calloc((size_t)o->n_slots * n, sizeof(float));
    if (!o->state)
      return dp_fail(DP_ENOMEM, "optimizer: cannot allocate %d state slots of %zu floats", o->n_slots, n);
  }
  if (h->kind == DP_OPT_LBFGS) {
    int rc = dp_lbfgs_create(&o->lbfgs, n, h->history);
    if (rc < 0) {
      dp_optim_free(o);
      return rc;
    }
    o->lbfgs.tolerance_grad = h->tolerance_grad;
    o->lbfgs.tolerance_change = h->tolerance_change;
  }
  return 0;
}

void dp_optim_free(dp_optim *o) {
  if (!o->shared)
    free(o->state);
  o->state = NULL;
  o->shared = 0;
  dp_lbfgs_free(&o->lbfgs);
}

const char *dp_optim_name(dp_optim_kind k) {
#define DP_OPTIM_NAME(e, name) name,
  static const char *const names[] = {DP_OPTIM_KIND_MAP(DP_OPTIM_NAME)};
#undef DP_OPTIM_NAME
  return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

const char *dp_optim_slot_name(const dp_optim *o, int i) {
  static const char *const sgd[] = {"momentum"}, *const diff[] = {"prev_weights"},
                           *const rms[] = {"square_avg", "buffer"}, *const adam[] = {"m", "v"};
  if (i < 0 || i >= o->n_slots)
    return NULL;
  switch (o->h.kind) {
  case DP_OPT_SGD:
    return o->h.difference ? diff[i] : sgd[i];
  case DP_OPT_RMSPROP:
    return rms[i];
  case DP_OPT_ADAM:
  case DP_OPT_ADAMW:
    return adam[i];
  case DP_OPT_LBFGS:
    break;
  }
  return NULL;
}

float *dp_optim_slot(dp_optim *o, int i) { return i >= 0 && i < o->n_slots ? o->state + (size_t)i * o->n : NULL; }

DP_VECTOR_LOOP
static int sgd_plain(size_t n, float lr, float weight_decay, const float *restrict g, float *restrict w) {
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    bad |= NONFINITE(g[i]);
    w[i] -= lr * (g[i] + weight_decay * w[i]);
  }
  return bad;
}

/* The update of elements [lo, lo + n): w and g point at element lo, slot(o, i, lo) at its state. */
static float *slot(dp_optim *o, int i, size_t lo) { return dp_optim_slot(o, i) + lo; }

static int sgd_step(dp_optim *o, float *w, const float *g, float lr, size_t lo, size_t n) {
  const dp_optim_hparams *h = &o->h;
  float *p = o->n_slots ? slot(o, 0, lo) : NULL;
  if (h->difference) {
    if (o->t == 0) /* w_{-1} = w_0: the first step is a plain gradient step, as with heavy ball */
      memcpy(p, w, sizeof(float) * n);
    return dp_sgd_difference(n, lr, h->momentum, g, w, p);
  }
  if (h->momentum == 0.0f)
    return sgd_plain(n, lr, h->weight_decay, g, w);
  if (!h->nesterov && h->dampening == 0.0f && h->weight_decay == 0.0f)
    return dp_sgd_momentum(n, lr, h->momentum, g, w, p);
  return dp_sgd_full(n, lr, h->momentum, h->dampening, h->weight_decay, h->nesterov, o->t == 0, g, w, p);
}

static int adam_step(dp_optim *o, float *w, const float *g, float lr, size_t lo, size_t n) {
  const dp_optim_hparams *h = &o->h;
  double t = (double)(o->t + 1);
  float c1 = h->bias_correction ? (float)(1.0 - pow(h->beta1, t)) : 1.0f;
  float c2 = h->bias_correction ? (float)(1.0 - pow(h->beta2, t)) : 1.0f;
  int adamw = h->kind == DP_OPT_ADAMW;
  return dp_adam(n, lr, h->beta1, h->beta2, h->eps, h->eps_inside, c1, c2, adamw ? 0.0f : h->weight_decay,
                 adamw ? h->weight_decay : 0.0f, g, w, slot(o, 0, lo), slot(o, 1, lo));
}

int dp_optim_step_slice(dp_optim *o, float *w, const float *g, float lr, size_t lo, size_t n) {
  const dp_optim_hparams *h = &o->h;
  int bad = 0;
  switch (h->kind) {
  case DP_OPT_SGD:
    bad = sgd_step(o, w, g, lr, lo, n);
    break;
  case DP_OPT_RMSPROP:
    bad = dp_rmsprop(n, lr, h->alpha, h->eps, h->momentum, h->weight_decay, g, w, slot(o, 0, lo),
                     o->n_slots > 1 ? slot(o, 1, lo) : NULL);
    break;
  case DP_OPT_ADAM:
  case DP_OPT_ADAMW:
    bad = adam_step(o, w, g, lr, lo, n);
    break;
  case DP_OPT_LBFGS: /* not first-order: dp_optim_update searches */
    break;
  }
  return bad;
}

int dp_optim_step_range(dp_optim *o, float *w, const float *g, float lr, size_t lo, size_t hi) {
  int bad = dp_optim_step_slice(o, w + lo, g + lo, lr, lo, hi - lo);
  if (!dp_optim_line_search(o))
    o->t++;
  return bad;
}

int dp_optim_step(dp_optim *o, float *w, const float *g, float lr) { return dp_optim_step_range(o, w, g, lr, 0, o->n); }

void dp_optim_adopt_state(dp_optim *o, float *state) {
  if (!o->n_slots)
    return;
  if (!o->shared)
    free(o->state);
  o->state = state;
  o->shared = 1;
}

int dp_optim_kind_line_search(dp_optim_kind k) { return k == DP_OPT_LBFGS; }

int dp_optim_line_search(const dp_optim *o) { return dp_optim_kind_line_search(o->h.kind); }

int dp_optim_needs_gradient(const dp_optim *o) { return !dp_optim_line_search(o) || o->lbfgs.evals == 0; }

static int lbfgs_update(dp_optim *o, dp_optim_problem *p) {
  dp_lbfgs *l = &o->lbfgs;
  if (l->evals == 0) { /* the caller evaluated the starting point */
    o->f = *p->loss;
    l->evals++;
  }
  l->lr = p->lr;
  DP_TRY(dp_lbfgs_step(l, p->w, p->g, &o->f, p->eval, p->ctx, &o->converged));
  *p->loss = o->f;
  return 0;
}

int dp_optim_update(dp_optim *o, dp_optim_problem *p) {
  if (dp_optim_line_search(o))
    return lbfgs_update(o, p);
  p->nonfinite = dp_optim_step(o, p->w, p->g, p->lr);
  return 0;
}

/* ---- the training state ---- */

static int register_lbfgs(dp_optim *o, dp_state *st, float *g) {
  dp_lbfgs *l = &o->lbfgs;
  int64_t hist[2] = {l->m, (int64_t)l->n}, n[2] = {(int64_t)l->n, 1}, m[2] = {l->m, 1};
  DP_TRY(dp_state_tensor(st, DP_T_F32, l->s, 2, hist, 0, "optimizer/lbfgs/s"));
  DP_TRY(dp_state_tensor(st, DP_T_F32, l->y, 2, hist, 0, "optimizer/lbfgs/y"));
  DP_TRY(dp_state_tensor(st, DP_T_F64, l->rho, 1, m, 0, "optimizer/lbfgs/rho"));
  DP_TRY(dp_state_tensor(st, DP_T_F32, g, 1, n, 0, "optimizer/lbfgs/grad"));
  DP_TRY(dp_state_int(st, &l->count, 0, l->m, 0, "optimizer/lbfgs/count"));
  DP_TRY(dp_state_int(st, &l->head, 0, l->m - 1, 0, "optimizer/lbfgs/head"));
  DP_TRY(dp_state_i64(st, &l->iter, 0, INT64_MAX, 0, "optimizer/lbfgs/iter"));
  DP_TRY(dp_state_i64(st, &l->evals, 0, INT64_MAX, 0, "optimizer/lbfgs/evals"));
  DP_TRY(dp_state_f64(st, &o->f, -INFINITY, INFINITY, 0, "optimizer/lbfgs/loss"));
  return dp_state_int(st, &o->converged, 0, 1, 0, "optimizer/lbfgs/converged");
}

/* A slot views the parameter layout: one /optimizer/<slot>/... tensor per /model/... parameter. */
static int register_slot(dp_optim *o, dp_state *st, int slot, const float *params) {
  int n = st->n;
  for (int i = 0; i < n; i++) {
    const dp_state_entry *e = &st->e[i];
    if (e->type != DP_T_F32 || e->rank == 0 || strncmp(e->name, "model/", 6) ||
        (const float *)e->ptr < params || (const float *)e->ptr >= params + o->n)
      continue; /* running statistics are not trained */
    float *view = dp_optim_slot(o, slot) + ((const float *)e->ptr - params);
    DP_TRY(dp_state_tensor(st, DP_T_F32, view, e->rank, e->dims, 0, "optimizer/%s/%s", dp_optim_slot_name(o, slot),
                           e->name + 6));
  }
  return 0;
}

/* The file says what state it holds; a resume of another optimizer is refused before anything
 * else, naming both. */
static int check_kind(void *ctx, const dp_state *st, const char *path) {
  const dp_optim *o = ctx;
  const char *name = dp_state_loaded(st, "optimizer"), *slots = dp_state_loaded(st, "optimizer_state");
  if (!name || !slots)
    return dp_fail(DP_ECKPT, "%s: missing the optimizer attributes", path);
  if (strcmp(name, o->name) || strcmp(slots, o->slots))
    return dp_fail(DP_ECKPT, "%s: the checkpoint holds %s state (%s), the config's optimizer is %s (%s)", path, name,
                   slots[0] ? slots : "none", o->name, o->slots[0] ? o->slots : "none");
  return 0;
}

int dp_optim_register(dp_optim *o, dp_state *st, float *params, float *g) {
  snprintf(o->name, sizeof o->name, "%s", dp_optim_name(o->h.kind));
  o->slots[0] = 0;
  for (int i = 0; i < o->n_slots; i++)
    snprintf(o->slots + strlen(o->slots), sizeof o->slots - strlen(o->slots), "%s%s", i ? "," : "",
             dp_optim_slot_name(o, i));
  /* Optional: the kind check reports a missing one with its own message. */
  DP_TRY(dp_state_str(st, o->name, sizeof o->name, DP_ST_CONST | DP_ST_OPTIONAL, "optimizer"));
  DP_TRY(dp_state_str(st, o->slots, sizeof o->slots, DP_ST_CONST | DP_ST_OPTIONAL, "optimizer_state"));
  DP_TRY(dp_state_add_check(st, check_kind, o, 0));
  DP_TRY(dp_state_i64(st, &o->t, 0, INT64_MAX, 0, "optimizer_steps"));
  for (int i = 0; i < o->n_slots; i++)
    DP_TRY(register_slot(o, st, i, params));
  return dp_optim_line_search(o) ? register_lbfgs(o, st, g) : 0;
}
