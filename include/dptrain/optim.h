/* Optimizers as pure functions over flat arrays (kann style): (n, lr, ..., g, w, state...). They run
 * on the allreduced, batch-averaged gradient on every rank, identically, so the ranks' weights stay
 * bit-identical without ever being broadcast again. The loops have no branches and restrict
 * pointers so the compiler vectorises them. Each returns 1 when g held a NaN or an Inf (the update
 * is made all the same), 0 otherwise: the check rides in the update loop instead of costing a pass
 * over the gradient of its own.
 *
 * dp_optim wraps them, and L-BFGS, behind one interface: create, register the state, update. Its
 * state block is allocated once in the parameter layout. */
#ifndef DPTRAIN_OPTIM_H
#define DPTRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "dptrain/config.h"
#include "dptrain/lbfgs.h"
#include "dptrain/state.h"

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
  int history;                /* lbfgs */
  double tolerance_grad, tolerance_change;
} dp_optim_hparams;

/* The hyper-parameters of an [optimizer] section. */
void dp_optim_hparams_from_cfg(dp_optim_hparams *h, const dp_optim_cfg *c);

typedef struct {
  dp_optim_hparams h;
  size_t n;       /* floats per state slot (the padded parameter length) */
  int n_slots;    /* state slots of n floats */
  float *state;   /* (n_slots, n) */
  int shared;     /* state belongs to a shared window (dp_optim_adopt_state): not freed */
  int64_t t;      /* first-order steps taken (Adam's bias correction) */
  dp_lbfgs lbfgs; /* lbfgs: the history, and the loss and gradient at the current point */
  double f;       /* lbfgs: the loss at the current point */
  int converged;  /* lbfgs: a stopping tolerance was met */
  char name[16], slots[64]; /* as registered: the name and the comma-separated slot names */
} dp_optim;

/* What an update works on: the parameters w and, on entry, the gradient g and loss at w (n floats,
 * the model's blocks). A line-search optimizer evaluates more points through eval and leaves w, g
 * and *loss at the point it accepts. */
typedef struct {
  float *w, *g;
  double *loss;
  float lr;
  dp_objective eval; /* loss and gradient at w, into g: collective */
  void *ctx;
  int nonfinite;     /* out: g held a NaN or Inf (first-order: w and the state are then damaged) */
} dp_optim_problem;

/* Allocates what optimizer h->kind needs (zeroed) for n parameters; frees it all on failure. */
int dp_optim_create(dp_optim *o, const dp_optim_hparams *h, size_t n);
void dp_optim_free(dp_optim *o);
/* Registers the optimizer's state: its name and slot names (compared on load), its step count, each
 * slot as /optimizer/<slot>/<tensor> for every model tensor already in st (params is the block they
 * view), and L-BFGS's history with the gradient g at the current point. */
int dp_optim_register(dp_optim *o, dp_state *st, float *params, float *g);
/* Whether the optimizer searches along a line itself (L-BFGS): it needs the full batch, carries the
 * loss and gradient from one update to the next, and cannot skip or clip a step. */
int dp_optim_line_search(const dp_optim *o);
int dp_optim_kind_line_search(dp_optim_kind k);
/* Whether the next update needs the loss and gradient at w evaluated first (always, except for a
 * line search that already holds them). */
int dp_optim_needs_gradient(const dp_optim *o);
/* One update: 0, or a negative DP_E code from the objective. */
int dp_optim_update(dp_optim *o, dp_optim_problem *p);
/* A first-order update of w (n) with gradient g (n) and step size lr: 1 when g was not finite, else 0. */
int dp_optim_step(dp_optim *o, float *w, const float *g, float lr);
/* The same update on elements [lo, hi) of w, g and every state slot only, counted as one step: the
 * node's ranks each update a slice ([train] comm = node). The update is elementwise, so the slices
 * together give the bits of dp_optim_step. */
int dp_optim_step_range(dp_optim *o, float *w, const float *g, float lr, size_t lo, size_t hi);
/* The update of the n elements from lo, w and g pointing at element lo (g may be a scratch copy),
 * not counted as a step: a caller updating a slice piece by piece counts the step itself (o->t++)
 * after the last piece. */
int dp_optim_step_slice(dp_optim *o, float *w, const float *g, float lr, size_t lo, size_t n);
/* The state slots move to shared memory the caller owns (n_slots × n floats, zeroed by the caller). */
void dp_optim_adopt_state(dp_optim *o, float *state);
/* State slot i (n floats), e.g. for checkpoints; NULL past the last. */
float *dp_optim_slot(dp_optim *o, int i);
/* The slot's name in checkpoints ("momentum", "m", "v", ...); NULL past the last. */
const char *dp_optim_slot_name(const dp_optim *o, int i);
/* The optimizer's name as in the config ("sgd", "adam", ...). */
const char *dp_optim_name(dp_optim_kind k);

#endif
