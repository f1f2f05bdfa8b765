/* The inference library (include/dptrain/infer.h): a checkpoint's model, read through the training
 * state registry as `eval` reads it, run forward in evaluation mode. */
#include "dptrain/infer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/checkpoint.h"
#include "dptrain/data.h"
#include "dptrain/error.h"
#include "dptrain/model.h"
#include "dptrain/state.h"
#include "h5util.h"

enum { INFER_BATCH = 256, INFER_CONFIG_MAX = 1 << 20 };

struct dp_infer {
  dp_model model;
  dp_state state;
  int64_t n_in, n_out;
  int classifier;
  float *scale, *shift; /* (n_in): x_model = x_raw · scale + shift */
  float *x;             /* (INFER_BATCH, n_in): this handle's transformed rows */
};

/* The last failure of the library's calls on this thread, whatever else in the program calls dp_fail. */
static _Thread_local char last_error[1024];

static int fail(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return rc;
}

const char *dp_infer_last_error(void) { return last_error; }

/* The input width and whether the checkpoint stores the input transform. The width is the stored
 * transform's, else the configured image's C·H·W, else layer 0's weight's (checkpoints from before
 * /input hold dense layers only): a conv2d's weight or a first layer without one does not give it. */
static int probe(const char *path, const dp_config *cfg, int64_t *n_in, int *has_transform) {
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0)
    return dp_fail(DP_ECKPT, "%s: HDF5 cannot open it (truncated or damaged)", path);
  int rank = 0, a = 0, b = 0;
  int rc = h5u_exists(f, "input/scale", &a) < 0 || h5u_exists(f, "input/shift", &b) < 0
               ? dp_fail(DP_ECKPT, "%s: cannot read the /input group (damaged file)", path)
               : 0;
  *has_transform = a && b;
  const int64_t *shape = cfg->data.shape;
  if (rc == 0 && !*has_transform && cfg->data.n_shape) {
    *n_in = shape[0] * shape[1] * shape[2];
  } else if (rc == 0) {
    /* input/scale is (n_in), layer 0's weight (out, n_in) */
    const char *what = *has_transform ? "input/scale" : "model/layer0/weight";
    int want = *has_transform ? 1 : 2;
    int64_t dims[2] = {0, 0};
    rc = h5u_shape(f, what, &rank, dims);
    *n_in = dims[want - 1];
    if (rc < 0 || rank != want || *n_in < 1 || *n_in > INT32_MAX)
      rc = dp_fail(DP_ECKPT, "%s: no %d-dimensional /%s (not a model checkpoint)", path, want, what);
  }
  H5Fclose(f);
  return rc;
}

/* Checkpoints written before /input/scale and /input/shift: the transform training applied then, from
 * the data file's `scale` attribute and the stored [data] keys, as the trainer builds it. */
static int legacy_transform(dp_infer *m, const dp_config *cfg, const char *path) {
  dp_dataset ds;
  dp_dataset_init(&ds);
  int rc = dp_dataset_open(&ds, cfg->data.path, "train", NULL);
  if (rc == 0 && ds.d != m->n_in)
    rc = dp_fail(DP_ECKPT, "%s: its data file %s has %lld features, the model %lld", path, cfg->data.path,
                 (long long)ds.d, (long long)m->n_in);
  if (rc < 0) {
    char why[512];
    snprintf(why, sizeof why, "%s", dp_errmsg(rc));
    dp_dataset_close(&ds);
    return dp_fail(DP_ECKPT, "%s predates the stored input transform (/input/scale, /input/shift), and the data "
                   "file its config names, for the `scale` attribute, is not usable: %s", path, why);
  }
  rc = dp_dataset_apply_standardize(&ds, cfg);
  if (rc == 0) {
    memcpy(m->scale, ds.x_scale, sizeof(float) * (size_t)m->n_in);
    memcpy(m->shift, ds.x_shift, sizeof(float) * (size_t)m->n_in);
  }
  dp_dataset_close(&ds);
  return rc;
}

static int register_transform(dp_infer *m) {
  int64_t dims[2] = {m->n_in, 0};
  DP_TRY(dp_state_tensor(&m->state, DP_T_F32, m->scale, 1, dims, DP_ST_MODEL, "input/scale"));
  return dp_state_tensor(&m->state, DP_T_F32, m->shift, 1, dims, DP_ST_MODEL, "input/shift");
}

static int build(dp_infer *m, const char *path, dp_config *cfg, char *text) {
  int has_transform = 0;
  char name[DP_FILE_PATH_MAX + 16];
  snprintf(name, sizeof name, "%s:/config", path);
  DP_TRY(dp_ckpt_config_text(path, text, INFER_CONFIG_MAX));
  DP_TRY(dp_config_parse_string(cfg, text, name, NULL, 0));
  DP_TRY(probe(path, cfg, &m->n_in, &has_transform));
  DP_TRY(dp_model_create(&m->model, cfg->layer, cfg->n_layers, cfg->model.loss,
                         cfg->data.n_shape ? cfg->data.shape : NULL, (int)m->n_in, INFER_BATCH));
  m->n_out = m->model.out_dim;
  m->classifier = cfg->model.loss != DP_LOSS_MSE;
  m->scale = malloc(sizeof(float) * (size_t)m->n_in);
  m->shift = malloc(sizeof(float) * (size_t)m->n_in);
  m->x = malloc(sizeof(float) * (size_t)m->n_in * INFER_BATCH);
  if (!m->scale || !m->shift || !m->x)
    return dp_fail(DP_ENOMEM, "%s: cannot allocate the input buffers for %lld features", path, (long long)m->n_in);
  DP_TRY(dp_model_register(&m->model, &m->state));
  if (has_transform)
    DP_TRY(register_transform(m));
  DP_TRY(dp_ckpt_read(&m->state, path, DP_ST_MODEL));
  if (!has_transform)
    DP_TRY(legacy_transform(m, cfg, path));
  dp_model_set_eval(&m->model, 1);
  return 0;
}

int dp_infer_open(const char *checkpoint_path, dp_infer **model) {
  if (!model)
    return fail(DP_EINVAL, "dp_infer_open: model is NULL");
  *model = NULL;
  if (!checkpoint_path)
    return fail(DP_EINVAL, "dp_infer_open: checkpoint_path is NULL");
  dp_infer *m = calloc(1, sizeof *m);
  dp_config *cfg = malloc(sizeof *cfg);
  char *text = calloc(INFER_CONFIG_MAX, 1);
  int rc = m && cfg && text ? 0 : fail(DP_ENOMEM, "dp_infer_open: out of memory");
  if (rc == 0) {
    dp_state_init(&m->state);
    /* HDF5 is built without thread safety here: an open holds the process-wide HDF5 lock throughout,
     * so opens in several threads go one at a time. */
    dp_h5_lock();
    rc = build(m, checkpoint_path, cfg, text);
    if (rc < 0)
      fail(rc, "%s", dp_errmsg(rc));
    dp_h5_unlock();
  }
  free(text);
  free(cfg);
  if (rc < 0) {
    dp_infer_close(m);
    return rc;
  }
  last_error[0] = 0;
  *model = m;
  return 0;
}

void dp_infer_dims(const dp_infer *model, int64_t *n_in, int64_t *n_out) {
  if (n_in)
    *n_in = model ? model->n_in : 0;
  if (n_out)
    *n_out = model ? model->n_out : 0;
}

/* x_model of rows [0, n) into m->x; the first non-finite raw value is an error naming it. */
static int transform(dp_infer *m, const float *x, int n, int64_t row0) {
  const int64_t d = m->n_in;
  const float *restrict scale = m->scale, *restrict shift = m->shift;
  float *restrict out = m->x;
  for (int i = 0; i < n; i++) {
    const float *row = x + (size_t)i * (size_t)d;
    for (int64_t j = 0; j < d; j++) {
      if (!isfinite(row[j]))
        return fail(DP_EINVAL, "dp_infer_predict: row %lld, feature %lld is %s (inputs must be finite)",
                    (long long)(row0 + i), (long long)j, isnan(row[j]) ? "NaN" : "infinite");
      out[(size_t)i * (size_t)d + (size_t)j] = row[j] * scale[j] + shift[j];
    }
  }
  return 0;
}

/* Stable softmax of each row, in place. */
static void softmax_rows(float *y, int n, int64_t k) {
  for (int i = 0; i < n; i++) {
    float *r = y + (size_t)i * (size_t)k, mx = r[0];
    for (int64_t j = 1; j < k; j++)
      mx = r[j] > mx ? r[j] : mx;
    double sum = 0.0;
    for (int64_t j = 0; j < k; j++)
      sum += r[j] = expf(r[j] - mx);
    for (int64_t j = 0; j < k; j++)
      r[j] = (float)(r[j] / sum);
  }
}

int dp_infer_predict(dp_infer *m, const float *x, int64_t n, float *y) {
  if (!m)
    return fail(DP_EINVAL, "dp_infer_predict: model is NULL");
  if (n < 0)
    return fail(DP_EINVAL, "dp_infer_predict: n = %lld rows (expected 0 or more)", (long long)n);
  if (n > 0 && (!x || !y))
    return fail(DP_EINVAL, "dp_infer_predict: x or y is NULL for %lld rows", (long long)n);
  for (int64_t c = 0; c < n; c += INFER_BATCH) {
    int nb = (int)(n - c < INFER_BATCH ? n - c : INFER_BATCH);
    DP_TRY(transform(m, x + (size_t)c * (size_t)m->n_in, nb, c));
    const float *out = dp_model_forward(&m->model, m->x, nb);
    float *yc = y + (size_t)c * (size_t)m->n_out;
    memcpy(yc, out, sizeof(float) * (size_t)nb * (size_t)m->n_out);
    if (m->classifier)
      softmax_rows(yc, nb, m->n_out);
  }
  return 0;
}

void dp_infer_close(dp_infer *m) {
  if (!m)
    return;
  dp_model_free(&m->model);
  dp_state_free(&m->state);
  free(m->scale);
  free(m->shift);
  free(m->x);
  free(m);
}
