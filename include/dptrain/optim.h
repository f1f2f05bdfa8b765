/* Optimizers as pure functions over flat arrays (kann style): (n, lr, g, w, state...). They run on
 * the allreduced, batch-averaged gradient on every rank, identically, so the ranks' weights stay
 * bit-identical without ever being broadcast again.
 *
 * dp_optim wraps them with the state block, allocated once in the parameter layout. */
#ifndef DPTRAIN_OPTIM_H
#define DPTRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "dptrain/config.h"

/* Heavy ball: p = βp + g; w -= γp. With β = 0 this is plain (mini-batch) gradient descent. */
void dp_sgd_momentum(size_t n, float lr, float beta, const float *g, float *w, float *p);

typedef struct {
  dp_optim_kind kind;
  size_t n;       /* floats per state slot (the padded parameter length) */
  int n_slots;    /* state slots of n floats */
  float *state;   /* (n_slots, n) */
  int64_t t;      /* steps taken */
  float momentum;
} dp_optim;

int dp_optim_create(dp_optim *o, const dp_config *cfg, size_t n);
void dp_optim_free(dp_optim *o);
/* One update of w (n) with gradient g (n) and step size lr. */
void dp_optim_step(dp_optim *o, float *w, const float *g, float lr);

#endif
