#include "dptrain/optim.h"

#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"

void dp_sgd_momentum(size_t n, float lr, float beta, const float *restrict g, float *restrict w,
                     float *restrict p) {
  for (size_t i = 0; i < n; i++) {
    p[i] = beta * p[i] + g[i];
    w[i] -= lr * p[i];
  }
}

static void sgd_plain(size_t n, float lr, const float *restrict g, float *restrict w) {
  for (size_t i = 0; i < n; i++)
    w[i] -= lr * g[i];
}

int dp_optim_create(dp_optim *o, const dp_config *cfg, size_t n) {
  memset(o, 0, sizeof *o);
  o->kind = cfg->optimizer.name;
  o->n = n;
  o->momentum = (float)cfg->optimizer.momentum;
  o->n_slots = o->momentum > 0.0f ? 1 : 0;
  if (o->n_slots) {
    o->state = calloc((size_t)o->n_slots * n, sizeof(float));
    if (!o->state)
      return dp_fail(DP_ENOMEM, "optimizer: cannot allocate %d state slots of %zu floats", o->n_slots, n);
  }
  return 0;
}

void dp_optim_free(dp_optim *o) {
  free(o->state);
  o->state = NULL;
}

void dp_optim_step(dp_optim *o, float *w, const float *g, float lr) {
  if (o->n_slots)
    dp_sgd_momentum(o->n, lr, o->momentum, g, w, o->state);
  else
    sgd_plain(o->n, lr, g, w);
  o->t++;
}
