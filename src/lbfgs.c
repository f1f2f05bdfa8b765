#include "dptrain/lbfgs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"

/* Sufficient decrease and curvature constants of the strong Wolfe conditions (the usual values
 * for quasi-Newton methods). */
static const double C1 = 1e-4, C2 = 0.9;

int dp_lbfgs_create(dp_lbfgs *o, size_t n, int m) {
  memset(o, 0, sizeof *o);
  o->n = n;
  o->m = m;
  o->lr = 1.0;
  o->tolerance_grad = 1e-7;
  o->tolerance_change = 1e-9;
  o->max_ls = 25;
  o->s = calloc((size_t)m * n, sizeof(float));
  o->y = calloc((size_t)m * n, sizeof(float));
  o->rho = calloc((size_t)m, sizeof(double));
  o->alpha = calloc((size_t)m, sizeof(double));
  o->d = calloc(n, sizeof(float));
  o->w0 = calloc(n, sizeof(float));
  o->g0 = calloc(n, sizeof(float));
  o->g_lo = calloc(n, sizeof(float));
  if (!o->s || !o->y || !o->rho || !o->alpha || !o->d || !o->w0 || !o->g0 || !o->g_lo) {
    dp_lbfgs_free(o);
    return dp_fail(DP_ENOMEM, "lbfgs: cannot allocate a history of %d pairs of %zu floats", m, n);
  }
  return 0;
}

void dp_lbfgs_free(dp_lbfgs *o) {
  free(o->s);
  free(o->y);
  free(o->rho);
  free(o->alpha);
  free(o->d);
  free(o->w0);
  free(o->g0);
  free(o->g_lo);
  o->s = o->y = o->d = o->w0 = o->g0 = o->g_lo = NULL;
  o->rho = o->alpha = NULL;
}

static double dot(const float *a, const float *b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++)
    s += (double)a[i] * b[i];
  return s;
}

static double max_abs(const float *a, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; i++)
    m = fmax(m, fabs((double)a[i]));
  return m;
}

/* d = -H g by the two-loop recursion, H the L-BFGS inverse-Hessian estimate. */
static void direction(dp_lbfgs *o, const float *g) {
  size_t n = o->n;
  for (size_t j = 0; j < n; j++)
    o->d[j] = -g[j];
  for (int k = 0; k < o->count; k++) { /* newest to oldest */
    int i = (o->head - 1 - k + o->m) % o->m;
    const float *s = o->s + (size_t)i * n, *y = o->y + (size_t)i * n;
    o->alpha[i] = o->rho[i] * dot(s, o->d, n);
    float a = (float)o->alpha[i];
    for (size_t j = 0; j < n; j++)
      o->d[j] -= a * y[j];
  }
  if (o->count > 0) { /* scale by sᵀy / yᵀy of the newest pair: the usual initial Hessian */
    int i = (o->head - 1 + o->m) % o->m;
    const float *y = o->y + (size_t)i * n;
    float gamma = (float)(1.0 / (o->rho[i] * dot(y, y, n)));
    for (size_t j = 0; j < n; j++)
      o->d[j] *= gamma;
  }
  for (int k = o->count - 1; k >= 0; k--) { /* oldest to newest */
    int i = (o->head - 1 - k + o->m) % o->m;
    const float *s = o->s + (size_t)i * n, *y = o->y + (size_t)i * n;
    float b = (float)(o->alpha[i] - o->rho[i] * dot(y, o->d, n));
    for (size_t j = 0; j < n; j++)
      o->d[j] += b * s[j];
  }
}

/* Minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), kept inside [lo, hi]. */
static double cubic_min(double x1, double f1, double g1, double x2, double f2, double g2, double lo, double hi) {
  double d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
  double disc = d1 * d1 - g1 * g2;
  if (disc < 0.0)
    return 0.5 * (lo + hi);
  double d2 = sqrt(disc) * (x2 >= x1 ? 1.0 : -1.0);
  double t = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2));
  if (!isfinite(t))
    return 0.5 * (lo + hi);
  return fmin(fmax(t, lo), hi);
}

typedef struct {
  double t, f, dphi;
} ls_point;

typedef struct {
  dp_lbfgs *o;
  float *w, *g;
  dp_objective obj;
  void *ctx;
  double f0, dphi0;
  double last_t; /* the point w and g currently hold */
} ls_state;

static int evaluate(ls_state *ls, double t, ls_point *p) {
  dp_lbfgs *o = ls->o;
  float ft = (float)t;
  for (size_t j = 0; j < o->n; j++)
    ls->w[j] = o->w0[j] + ft * o->d[j];
  int rc = ls->obj(ls->ctx, ls->w, ls->g, &p->f);
  o->evals++;
  p->t = t;
  p->dphi = dot(ls->g, o->d, o->n);
  ls->last_t = t;
  return rc;
}

static int armijo_fails(const ls_state *ls, const ls_point *p) {
  return !(p->f <= ls->f0 + C1 * p->t * ls->dphi0); /* NaN fails too */
}

/* Algorithm 3.6: shrinks [lo, hi] until a point meets the strong Wolfe conditions. */
static int zoom(ls_state *ls, ls_point lo, ls_point hi, int budget, ls_point *out) {
  dp_lbfgs *o = ls->o;
  double dmax = max_abs(o->d, o->n);
  for (; budget > 0; budget--) {
    double a = fmin(lo.t, hi.t), b = fmax(lo.t, hi.t), width = b - a;
    double t = cubic_min(lo.t, lo.f, lo.dphi, hi.t, hi.f, hi.dphi, a, b);
    if (t - a < 0.1 * width || b - t < 0.1 * width) /* too near an end: bisect */
      t = 0.5 * (a + b);
    ls_point p;
    DP_TRY(evaluate(ls, t, &p));
    if (armijo_fails(ls, &p) || p.f >= lo.f) {
      hi = p;
    } else {
      if (fabs(p.dphi) <= -C2 * ls->dphi0) {
        *out = p;
        return 0;
      }
      if (p.dphi * (hi.t - lo.t) >= 0.0)
        hi = lo;
      lo = p;
      memcpy(o->g_lo, ls->g, sizeof(float) * o->n);
    }
    if (width * dmax < o->tolerance_change)
      break;
  }
  *out = lo;
  return 0;
}

/* Algorithm 3.5. On return w and g hold the accepted point (re-evaluated only if needed). */
static int line_search(ls_state *ls, double t, ls_point *out) {
  dp_lbfgs *o = ls->o;
  ls_point prev = {0.0, ls->f0, ls->dphi0}, p;
  memcpy(o->g_lo, o->g0, sizeof(float) * o->n);
  int rc = 0;
  for (int i = 0; i < o->max_ls; i++) {
    DP_TRY(evaluate(ls, t, &p));
    int budget = o->max_ls - i - 1;
    if (armijo_fails(ls, &p) || (i > 0 && p.f >= prev.f)) {
      rc = zoom(ls, prev, p, budget, out);
      break;
    }
    if (fabs(p.dphi) <= -C2 * ls->dphi0) {
      *out = p;
      return 0;
    }
    if (p.dphi >= 0.0) {
      memcpy(o->g_lo, ls->g, sizeof(float) * o->n);
      rc = zoom(ls, p, prev, budget, out);
      break;
    }
    memcpy(o->g_lo, ls->g, sizeof(float) * o->n);
    double next = cubic_min(prev.t, prev.f, prev.dphi, p.t, p.f, p.dphi, t + 0.01 * (t - prev.t), 10.0 * t);
    prev = p;
    t = next;
    *out = p;
  }
  DP_TRY(rc);
  if (out->t != ls->last_t) { /* w and g hold another trial: go back to the accepted one */
    float ft = (float)out->t;
    for (size_t j = 0; j < o->n; j++)
      ls->w[j] = o->w0[j] + ft * o->d[j];
    memcpy(ls->g, o->g_lo, sizeof(float) * o->n);
  }
  return 0;
}

static void push_pair(dp_lbfgs *o, const float *w, const float *g) {
  size_t n = o->n;
  float *s = o->s + (size_t)o->head * n, *y = o->y + (size_t)o->head * n;
  for (size_t j = 0; j < n; j++) {
    s[j] = w[j] - o->w0[j];
    y[j] = g[j] - o->g0[j];
  }
  double ys = dot(y, s, n);
  if (ys <= 1e-10) /* no positive curvature along the step: keep H positive definite by skipping it */
    return;
  o->rho[o->head] = 1.0 / ys;
  o->head = (o->head + 1) % o->m;
  if (o->count < o->m)
    o->count++;
}

int dp_lbfgs_step(dp_lbfgs *o, float *w, float *g, double *f, dp_objective obj, void *ctx, int *converged) {
  size_t n = o->n;
  *converged = max_abs(g, n) <= o->tolerance_grad;
  o->step = 0.0;
  if (*converged)
    return 0;
  direction(o, g);
  double dphi0 = dot(g, o->d, n);
  if (!(dphi0 < 0.0)) { /* not a descent direction (lost curvature): restart from steepest descent */
    o->count = 0;
    direction(o, g);
    dphi0 = dot(g, o->d, n);
  }
  memcpy(o->w0, w, sizeof(float) * n);
  memcpy(o->g0, g, sizeof(float) * n);
  /* The first step has no curvature to scale it: keep its length at most lr in the 1-norm. */
  double t = o->lr;
  if (o->iter == 0) {
    double g1 = 0.0;
    for (size_t j = 0; j < n; j++)
      g1 += fabs((double)g[j]);
    t = fmin(1.0, 1.0 / g1) * o->lr;
  }
  ls_state ls = {.o = o, .w = w, .g = g, .obj = obj, .ctx = ctx, .f0 = *f, .dphi0 = dphi0, .last_t = 0.0};
  ls_point acc = {0.0, *f, dphi0};
  DP_TRY(line_search(&ls, t, &acc));
  double f_old = *f;
  *f = acc.f;
  o->step = acc.t;
  o->iter++;
  push_pair(o, w, g);
  *converged = fabs(acc.t) * max_abs(o->d, n) <= o->tolerance_change || fabs(*f - f_old) < o->tolerance_change ||
               max_abs(g, n) <= o->tolerance_grad;
  return 0;
}
