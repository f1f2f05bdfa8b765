/* Optimizers as pure functions over flat arrays (kann style): (n, lr, ..., g, w, state...). They run
 * on the allreduced, batch-averaged gradient on every rank, identically, so the ranks' weights stay
 * bit-identical without ever being broadcast again. The loops have no branches and restrict
 * pointers so the compiler vectorises them. Each returns 1 when g held a NaN or an Inf (the update
 * is made all the same), 0 otherwise: the check rides in the update loop instead of costing a pass
 * over the gradient of its own.
 *
 * dp_optim wraps them with the state block, allocated once in the parameter layout. */
#ifndef DPTRAIN_OPTIM_H
#define DPTRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "dptrain/config.h"

/* Heavy ball: p = βp + g; w -= γp. With β = 0 this is plain (mini-batch) gradient descent. */
int dp_sgd_momentum(size_t n, float lr, float beta, const float *g, float *w, float *p);
/* SGD as common frameworks define it: g' = g + λw (L2); p = βp + (1-dampening)g' (p = g' on the
 * first step); w -= γ(g' + βp) with Nesterov, w -= γp without. */
int dp_sgd_full(size_t n, float lr, float beta, float dampening, float weight_decay, int nesterov, int first,
                const float *g, float *w, float *p);
/* The "difference" form of momentum: w_{k+1} = w_k − γ∇L + β(w_k − w_{k−1}); prev holds w_{k−1}
 * (set it to w_0 before the first step). The same trajectory as heavy ball for a constant γ. */
int dp_sgd_difference(size_t n, float lr, float beta, const float *g, float *w, float *prev);
/* RMSprop: g' = g + λw (L2); v = αv + (1−α)g'²; without momentum w -= γ g'/(√v + ε); with momentum μ:
 * b = μb + g'/(√v + ε); w -= γb. b may be NULL when μ = 0. */
int dp_rmsprop(size_t n, float lr, float alpha, float eps, float mu, float l2, const float *g, float *w, float *v,
               float *b);
/* Adam: m = β1 m + (1−β1)g; v = β2 v + (1−β2)g²; m̂ = m/c1, v̂ = v/c2 with c1 = 1−β1^t and
 * c2 = 1−β2^t (or 1 without bias correction); w -= γ m̂/(√v̂ + ε) (eps outside) or γ m̂/√(v̂ + ε)
 * (inside). l2 adds λw to the gradient (Adam's weight decay); decoupled shrinks w by γλ first
 * (AdamW). */
int dp_adam(size_t n, float lr, float beta1, float beta2, float eps, int eps_inside, float c1, float c2, float l2,
            float decoupled, const float *g, float *w, float *m, float *v);

typedef struct {
  dp_optim_kind kind;
  float momentum, dampening, weight_decay;
  int nesterov, difference;   /* sgd */
  float alpha, eps;           /* rmsprop (eps also adam) */
  float beta1, beta2;         /* adam */
  int bias_correction, eps_inside;
} dp_optim_hparams;

/* The hyper-parameters the config gives. */
void dp_optim_hparams_from_config(dp_optim_hparams *h, const dp_config *cfg);

typedef struct {
  dp_optim_hparams h;
  size_t n;       /* floats per state slot (the padded parameter length) */
  int n_slots;    /* state slots of n floats */
  float *state;   /* (n_slots, n) */
  int64_t t;      /* steps taken */
} dp_optim;

/* Allocates the state the optimizer the config names needs (zeroed) for n parameters. */
int dp_optim_create(dp_optim *o, const dp_config *cfg, size_t n);
void dp_optim_free(dp_optim *o);
/* One update of w (n) with gradient g (n) and step size lr; 1 when g was not finite (w and the
 * state are then damaged: restore them or stop), else 0. */
int dp_optim_step(dp_optim *o, float *w, const float *g, float lr);
/* State slot i (n floats), e.g. for checkpoints; NULL past the last. */
float *dp_optim_slot(dp_optim *o, int i);
/* The slot's name in checkpoints ("momentum", "m", "v", ...); NULL past the last. */
const char *dp_optim_slot_name(const dp_optim *o, int i);
/* The optimizer's name as in the config ("sgd", "adam", ...). */
const char *dp_optim_name(dp_optim_kind k);

#endif
