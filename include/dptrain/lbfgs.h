/* L-BFGS for full-batch training: two-loop recursion over the last m curvature pairs and a line
 * search satisfying the strong Wolfe conditions (Nocedal & Wright, Algorithms 3.5 and 3.6, with
 * cubic interpolation).
 *
 * The objective is evaluated through a callback that returns the full-batch loss and gradient
 * already allreduced across ranks, and every decision below depends only on those reduced values,
 * so every rank takes the same branches, the same number of evaluations (each one a collective) and
 * the same step. */
#ifndef DPTRAIN_LBFGS_H
#define DPTRAIN_LBFGS_H

#include <stddef.h>
#include <stdint.h>

/* Loss *f and gradient g (n) at w. Collective when used across ranks. 0 or a DP_E code. */
typedef int (*dp_objective)(void *ctx, const float *w, float *g, double *f);

typedef struct {
  size_t n;
  int m;                 /* history length */
  double lr;             /* initial trial step (1 is the natural scale of a quasi-Newton step) */
  double tolerance_grad; /* stop when max |g| <= this */
  double tolerance_change; /* stop when the step or the loss change is below this */
  int max_ls;            /* objective evaluations per line search */

  float *s, *y;          /* (m, n) ring buffers: steps and gradient changes */
  double *rho;           /* (m) 1 / (yᵀs) */
  double *alpha;         /* (m) two-loop scratch */
  float *d;              /* (n) search direction */
  float *w0, *g0;        /* (n) the iteration's start point and gradient */
  float *g_lo;           /* (n) the gradient at the line search's best point */
  int count, head;       /* pairs stored; slot of the next pair */
  int64_t iter;          /* iterations done */
  int64_t evals;         /* objective evaluations done */
  double step;           /* the step length along d the last iteration accepted (0: it took none) */
} dp_lbfgs;

int dp_lbfgs_create(dp_lbfgs *o, size_t n, int m);
void dp_lbfgs_free(dp_lbfgs *o);

/* One iteration from w with loss *f and gradient g (evaluated there): on return w, *f and g are at
 * the new point, and *converged says whether a stopping tolerance is met (w unchanged or the step
 * negligible). 0, or a negative DP_E code from the objective. */
int dp_lbfgs_step(dp_lbfgs *o, float *w, float *g, double *f, dp_objective obj, void *ctx, int *converged);

#endif
