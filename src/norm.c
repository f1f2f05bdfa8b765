#include "dptrain/norm.h"

#include <math.h>
#include <string.h>

#include "dptrain/error.h"
#include "vec.h"

#define DP_NORM_NAME(e, name) name,
static const char *const NAMES[] = {DP_NORM_KIND_MAP(DP_NORM_NAME)};
#undef DP_NORM_NAME
enum { N_NAMES = sizeof NAMES / sizeof NAMES[0] };

const char *dp_norm_name(dp_norm_kind k) { return (unsigned)k < N_NAMES ? NAMES[k] : "unknown"; }

int dp_norm_from_name(const char *s, dp_norm_kind *k) {
  for (int i = 0; i < N_NAMES; i++)
    if (s && strcmp(s, NAMES[i]) == 0) {
      *k = (dp_norm_kind)i;
      return 0;
    }
  return dp_fail(DP_EINVAL, "unknown normalisation '%s' (expected none, batch or layer)", s ? s : "(null)");
}

size_t dp_norm_scratch_floats(dp_norm_kind kind, int units, int max_batch) {
  size_t zhat = (size_t)max_batch * (size_t)units;
  if (kind == DP_NORM_BATCH)
    return zhat + (size_t)units;
  if (kind == DP_NORM_LAYER)
    return zhat + (size_t)max_batch;
  return 0;
}

size_t dp_norm_work_doubles(dp_norm_kind kind, int units) {
  return kind == DP_NORM_NONE ? 0 : 2 * (size_t)units + 1;
}

size_t dp_norm_param_floats(dp_norm_kind kind, int units) { return kind == DP_NORM_NONE ? 0 : 2 * (size_t)units; }

size_t dp_norm_state_floats(dp_norm_kind kind, int units) {
  return kind == DP_NORM_BATCH ? 2 * (size_t)units : 0;
}

void dp_norm_init_params(dp_norm *n) {
  if (n->kind == DP_NORM_NONE)
    return;
  for (int j = 0; j < n->units; j++) {
    n->gain[j] = 1.0f;
    n->shift[j] = 0.0f;
  }
  if (n->kind == DP_NORM_BATCH)
    for (int j = 0; j < n->units; j++) {
      n->running_mean[j] = 0.0f;
      n->running_var[j] = 1.0f;
    }
}

/* ---- batch norm ---------------------------------------------------------------------------- */

/* s1[j] = Σ_i (z_ij − K_j), s2[j] = Σ_i (z_ij − K_j)², over the shard's rows. */
DP_VECTOR_LOOP
static void shifted_sums(const float *z, int B, int u, const float *K, double *s1, double *s2) {
  memset(s1, 0, sizeof(double) * (size_t)u);
  memset(s2, 0, sizeof(double) * (size_t)u);
  for (int i = 0; i < B; i++) {
    const float *row = z + (size_t)i * u; /* (units) */
    for (int j = 0; j < u; j++) {
      double d = (double)row[j] - K[j];
      s1[j] += d;
      s2[j] += d * d;
    }
  }
}

/* From the (global) shifted sums and count N: work[j] <- μ_j, work[u + j] <- σ²_j (biased), the
 * running statistics updated, inv_std[j] <- 1/√(σ²_j + ε). */
static void batch_stats(dp_norm *n, double N) {
  int u = n->units;
  double *mean = n->work, *var = n->work + u;
  /* PyTorch keeps the unbiased variance; with one row there is nothing to unbias. */
  double unbias = N > 1.0 ? N / (N - 1.0) : 1.0, mom = n->momentum;
  for (int j = 0; j < u; j++) {
    double m = mean[j] / N, v = var[j] / N - m * m;
    mean[j] = n->running_mean[j] + m; /* undo the shift before the running mean changes */
    var[j] = v > 0.0 ? v : 0.0;       /* rounding can take an exact zero variance below zero */
    n->inv_std[j] = (float)(1.0 / sqrt(var[j] + n->eps));
  }
  for (int j = 0; j < u; j++) {
    n->running_mean[j] = (float)((1.0 - mom) * n->running_mean[j] + mom * mean[j]);
    n->running_var[j] = (float)((1.0 - mom) * n->running_var[j] + mom * var[j] * unbias);
  }
}

/* z (B, units) in place -> α ẑ + β, ẑ kept, with μ in work[0..u). */
DP_VECTOR_LOOP
static void batch_apply(dp_norm *n, float *z, int B) {
  int u = n->units;
  const double *mean = n->work;
  for (int i = 0; i < B; i++) {
    float *row = z + (size_t)i * u, *zh = n->zhat + (size_t)i * u; /* (units) */
    for (int j = 0; j < u; j++) {
      float h = (float)(((double)row[j] - mean[j]) * n->inv_std[j]);
      zh[j] = h;
      row[j] = n->gain[j] * h + n->shift[j];
    }
  }
}

static int chunk_count(int B, int chunk) { return (B + chunk - 1) / chunk; }

static int chunk_rows(int B, int chunk, int c) { return B - c * chunk < chunk ? B - c * chunk : chunk; }

/* Deterministic mode: each chunk's shifted sums and row count, summed exactly across every rank's
 * chunks, so that μ and σ² do not depend on which rank holds which rows. */
static int batch_forward_chunks(dp_norm *n, float *z, int B) {
  int u = n->units, w = 2 * u + 1, nc = chunk_count(B, n->chunk);
  for (int c = 0; c < nc; c++) {
    double *s = n->chunk_sums + (size_t)c * w;
    int rows = chunk_rows(B, n->chunk, c);
    shifted_sums(z + (size_t)c * n->chunk * u, rows, u, n->running_mean, s, s + u);
    s[2 * u] = rows;
  }
  DP_TRY(n->chunk_reduce(n->reduce_ctx, n->chunk_sums, nc, w, n->work));
  n->count = n->work[2 * u];
  if (n->count <= 0.0)
    return 0;
  batch_stats(n, n->count);
  batch_apply(n, z, B);
  return 0;
}

static int batch_forward_train(dp_norm *n, float *z, int B) {
  if (n->chunk)
    return batch_forward_chunks(n, z, B);
  int u = n->units;
  int global = n->sync && n->reduce;
  if (B == 0 && !global)
    return 0;
  shifted_sums(z, B, u, n->running_mean, n->work, n->work + u);
  n->work[2 * u] = B;
  if (global)
    DP_TRY(n->reduce(n->reduce_ctx, n->work, 2 * u + 1));
  double N = n->work[2 * u];
  n->count = N;
  if (N <= 0.0)
    return 0;
  batch_stats(n, N);
  batch_apply(n, z, B);
  return 0;
}

/* Σ_i g_ij and Σ_i g_ij ẑ_ij over rows [r0, r0 + B) into sg, sgz. */
DP_VECTOR_LOOP
static void row_sums(const dp_norm *n, const float *g, int r0, int B, double *sg, double *sgz) {
  int u = n->units;
  memset(sg, 0, sizeof(double) * (size_t)u);
  memset(sgz, 0, sizeof(double) * (size_t)u);
  for (int i = r0; i < r0 + B; i++) {
    const float *gr = g + (size_t)i * u, *zh = n->zhat + (size_t)i * u; /* (units) */
    for (int j = 0; j < u; j++) {
      sg[j] += gr[j];
      sgz[j] += (double)gr[j] * zh[j];
    }
  }
}

/* Deterministic mode: every chunk's sums, for its own dshift, dgain (dp_norm_chunk_grads). */
static int chunk_param_sums(dp_norm *n, const float *g, int B) {
  int u = n->units, nc = chunk_count(B, n->chunk);
  for (int c = 0; c < nc; c++) {
    double *s = n->chunk_sums + (size_t)c * 2 * u;
    row_sums(n, g, c * n->chunk, chunk_rows(B, n->chunk, c), s, s + u);
  }
  return nc;
}

void dp_norm_chunk_grads(dp_norm *n, int c) {
  int u = n->units;
  const double *s = n->chunk_sums + (size_t)c * 2 * u;
  for (int j = 0; j < u; j++) {
    n->dshift[j] = (float)s[j];
    n->dgain[j] = (float)s[u + j];
  }
}

/* The shard's Σ_i g_ij and Σ_i g_ij ẑ_ij into sg, sgz, then into dshift, dgain. */
static void param_grads(dp_norm *n, const float *g, int B, int accumulate, double *sg, double *sgz) {
  int u = n->units;
  row_sums(n, g, 0, B, sg, sgz);
  float keep = accumulate ? 1.0f : 0.0f;
  for (int j = 0; j < u; j++) {
    n->dshift[j] = keep * n->dshift[j] + (float)sg[j];
    n->dgain[j] = keep * n->dgain[j] + (float)sgz[j];
  }
}

/* g <- dz from the global means s1 = mean dẑ, s2 = mean dẑ·ẑ. */
DP_VECTOR_LOOP
static void batch_backward_rows(const dp_norm *n, float *g, int B, const double *s1, const double *s2) {
  int u = n->units;
  for (int i = 0; i < B; i++) {
    float *gr = g + (size_t)i * u;
    const float *zh = n->zhat + (size_t)i * u; /* (units) */
    for (int j = 0; j < u; j++)
      gr[j] = (float)(n->inv_std[j] * ((double)n->gain[j] * gr[j] - s1[j] - zh[j] * s2[j]));
  }
}

/* Deterministic mode: the chunks' exact global Σg, Σg·ẑ, times the gain afterwards (the chunks keep
 * the unscaled sums for their own dshift, dgain). */
static int batch_backward_chunks(dp_norm *n, float *g, int B) {
  int u = n->units, nc = chunk_param_sums(n, g, B);
  double *s1 = n->work, *s2 = n->work + u;
  DP_TRY(n->chunk_reduce(n->reduce_ctx, n->chunk_sums, nc, 2 * u, n->work));
  if (B == 0 || n->count <= 0.0)
    return 0;
  for (int j = 0; j < u; j++) {
    s1[j] = n->gain[j] * s1[j] / n->count;
    s2[j] = n->gain[j] * s2[j] / n->count;
  }
  batch_backward_rows(n, g, B, s1, s2);
  return 0;
}

static int batch_backward(dp_norm *n, float *g, int B, int accumulate) {
  if (n->chunk)
    return batch_backward_chunks(n, g, B);
  int u = n->units;
  int global = n->sync && n->reduce;
  double *s1 = n->work, *s2 = n->work + u;
  param_grads(n, g, B, accumulate, s1, s2);
  if (B == 0 && !global)
    return 0;
  /* dẑ = α g, so Σ dẑ = α Σ g and Σ dẑ ẑ = α Σ g ẑ: the reduce needs only the sums just taken. */
  for (int j = 0; j < u; j++) {
    s1[j] *= n->gain[j];
    s2[j] *= n->gain[j];
  }
  if (global)
    DP_TRY(n->reduce(n->reduce_ctx, n->work, 2 * u));
  if (B == 0 || n->count <= 0.0)
    return 0;
  for (int j = 0; j < u; j++) {
    s1[j] /= n->count;
    s2[j] /= n->count;
  }
  batch_backward_rows(n, g, B, s1, s2);
  return 0;
}

static void batch_forward_eval(const dp_norm *n, float *z, int B) {
  int u = n->units;
  for (int i = 0; i < B; i++) {
    float *row = z + (size_t)i * u; /* (units) */
    for (int j = 0; j < u; j++) {
      float h = (row[j] - n->running_mean[j]) / sqrtf(n->running_var[j] + n->eps);
      row[j] = n->gain[j] * h + n->shift[j];
    }
  }
}

/* ---- layer norm ---------------------------------------------------------------------------- */

/* One row (units) in place -> α ẑ + β; ẑ into zh when not NULL. Returns 1/σ. */
static float layer_row(const dp_norm *n, float *row, float *zh) {
  int u = n->units;
  double s = 0.0, ss = 0.0;
  for (int j = 0; j < u; j++)
    s += row[j];
  double mean = s / u;
  /* Two passes: the row's own mean is not known in advance, unlike the running mean of batch norm. */
  for (int j = 0; j < u; j++) {
    double d = (double)row[j] - mean;
    ss += d * d;
  }
  double inv = 1.0 / sqrt(ss / u + n->eps);
  for (int j = 0; j < u; j++) {
    float h = (float)(((double)row[j] - mean) * inv);
    if (zh)
      zh[j] = h;
    row[j] = n->gain[j] * h + n->shift[j];
  }
  return (float)inv;
}

static void layer_forward_train(dp_norm *n, float *z, int B) {
  for (int i = 0; i < B; i++)
    n->inv_std[i] = layer_row(n, z + (size_t)i * n->units, n->zhat + (size_t)i * n->units);
}

static void layer_forward_eval(const dp_norm *n, float *z, int B) {
  for (int i = 0; i < B; i++)
    layer_row(n, z + (size_t)i * n->units, NULL);
}

static void layer_backward(dp_norm *n, float *g, int B, int accumulate) {
  int u = n->units;
  if (n->chunk)
    chunk_param_sums(n, g, B);
  else
    param_grads(n, g, B, accumulate, n->work, n->work + u);
  for (int i = 0; i < B; i++) {
    float *gr = g + (size_t)i * u;
    const float *zh = n->zhat + (size_t)i * u; /* (units) */
    double m1 = 0.0, m2 = 0.0; /* row means of dẑ and dẑ ẑ */
    for (int j = 0; j < u; j++) {
      double d = (double)n->gain[j] * gr[j];
      m1 += d;
      m2 += d * zh[j];
    }
    m1 /= u;
    m2 /= u;
    double inv = n->inv_std[i];
    for (int j = 0; j < u; j++)
      gr[j] = (float)(inv * ((double)n->gain[j] * gr[j] - m1 - zh[j] * m2));
  }
}

/* ---- dispatch ------------------------------------------------------------------------------ */

int dp_norm_forward_train(dp_norm *n, float *z, int B) {
  if (n->kind == DP_NORM_NONE)
    return 0;
  if (B < 0 || B > n->max_batch)
    return dp_fail(DP_EINVAL, "%s norm: batch of %d rows, room for %d", dp_norm_name(n->kind), B, n->max_batch);
  n->rows = B;
  n->count = B;
  if (n->kind == DP_NORM_LAYER) {
    layer_forward_train(n, z, B);
    return 0;
  }
  return batch_forward_train(n, z, B);
}

void dp_norm_forward_eval(const dp_norm *n, float *z, int B) {
  if (n->kind == DP_NORM_BATCH)
    batch_forward_eval(n, z, B);
  else if (n->kind == DP_NORM_LAYER)
    layer_forward_eval(n, z, B);
}

int dp_norm_backward(dp_norm *n, float *g, int B, int accumulate) {
  if (n->kind == DP_NORM_NONE)
    return 0;
  if (B != n->rows)
    return dp_fail(DP_EINVAL, "%s norm: backward over %d rows after a forward over %d", dp_norm_name(n->kind), B,
                   n->rows);
  if (n->kind == DP_NORM_LAYER) {
    layer_backward(n, g, B, accumulate);
    return 0;
  }
  return batch_backward(n, g, B, accumulate);
}
