/* `dptrain predict`: rows are taken in rounds of PREDICT_ROWS per rank; each rank predicts its
 * contiguous share of a round (dp_split_range) through the inference library, and rank 0 gathers the
 * round and appends it to the output. So the output is written in order (a CSV, standard output) by
 * one writer, every rank computes at once, and no rank holds more than a round. */
#include "dptrain/predict.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dptrain/checkpoint.h"
#include "dptrain/data.h"
#include "dptrain/error.h"
#include "dptrain/infer.h"
#include "fsutil.h"
#include "h5util.h"

enum { PREDICT_ROWS = 4096, PREDICT_CONFIG_MAX = 1 << 20 };

/* Where the rows come from: an HDF5 split (read raw: the library applies the model's transform) or a
 * CSV read front to back, one line per row. */
typedef struct {
  const char *path;
  int csv;
  dp_dataset ds;
  FILE *f;
  char *line;
  size_t cap;
  int64_t line_no, next_row; /* CSV: lines read, and the data row the next line holds */
  char sep;
  int64_t n, d;
  int64_t *rows;
} source;

typedef struct {
  int h5;
  FILE *f;
  hid_t file, y, label;
} writer;

typedef struct {
  const dp_predict_opts *o;
  dp_comm *comm;
  dp_infer *model;
  int64_t n_in, n_out;
  int classifier;
  source *src;
  writer w;
  float *x, *y, *all;       /* a rank's share of a round in and out; rank 0: the whole round out */
  int32_t *labels;          /* rank 0: the round's argmax */
  int *counts, *displs;
  int entered;              /* rank 0 went through the rounds */
  int agreed;               /* every rank knows of the failure already: its reporter is chosen */
  int failed;               /* rank 0: the rounds' failure and its message, which dp_write_durable */
  char msg[1024];           /* rewrites as a failure to write */
} predictor;

static int has_suffix(const char *s, const char *suf) {
  size_t n = strlen(s), k = strlen(suf);
  return n >= k && !strcasecmp(s + n - k, suf);
}

/* ---- reading ---- */

static int csv_getline(source *s) {
  ssize_t len;
  while ((len = getline(&s->line, &s->cap, s->f)) >= 0) {
    s->line_no++;
    char *p = s->line + strspn(s->line, " \t\r\n\"");
    if (!*p)
      continue; /* blank */
    char *end;
    strtod(p, &end);
    if (end == p && s->line_no == 1)
      continue; /* a header: no number where the first field starts */
    return 1;
  }
  if (ferror(s->f))
    return dp_fail(DP_EIO, "%s: read error at line %lld", s->path, (long long)s->line_no + 1);
  return 0;
}

static char csv_sep(const char *line) {
  if (strchr(line, ','))
    return ',';
  return strchr(line, ';') ? ';' : '\t';
}

/* The features of the current line into x (d floats); a label column after them is ignored. */
static int csv_parse(source *s, float *x) {
  char *p = s->line;
  int64_t k = 0;
  for (;; k++) {
    p += strspn(p, " \t\"");
    char *end;
    double v = strtod(p, &end);
    if (end == p)
      return dp_fail(DP_EDATA, "%s:%lld: field %lld is not a number", s->path, (long long)s->line_no,
                     (long long)k + 1);
    if (k < s->d)
      x[k] = (float)v;
    p = end + strspn(end, " \t\r\n\"");
    if (*p != s->sep)
      break;
    p++;
  }
  if (*p)
    return dp_fail(DP_EDATA, "%s:%lld: unexpected '%c' after field %lld", s->path, (long long)s->line_no, *p,
                   (long long)k + 1);
  if (k + 1 != s->d && k + 1 != s->d + 1)
    return dp_fail(DP_ESHAPE, "%s:%lld: %lld fields, the model takes %lld features (and optionally a label column "
                   "last)", s->path, (long long)s->line_no, (long long)k + 1, (long long)s->d);
  return 0;
}

static int csv_open(source *s) {
  s->f = fopen(s->path, "r");
  if (!s->f)
    return dp_fail(DP_EDATA, "%s: cannot open: %s", s->path, strerror(errno));
  int rc;
  while ((rc = csv_getline(s)) > 0) {
    if (!s->n)
      s->sep = csv_sep(s->line);
    s->n++;
  }
  if (rc < 0)
    return rc;
  rewind(s->f);
  s->line_no = 0;
  return 0;
}

/* Raw rows [lo, hi) into x; rows are asked for in increasing order. */
static int csv_rows(source *s, int64_t lo, int64_t hi, float *x) {
  for (; s->next_row < hi; s->next_row++) {
    int rc = csv_getline(s);
    if (rc <= 0)
      return rc < 0 ? rc : dp_fail(DP_EDATA, "%s: changed while read (fewer rows than counted)", s->path);
    if (s->next_row >= lo)
      DP_TRY(csv_parse(s, x + (s->next_row - lo) * s->d));
  }
  return 0;
}

static int h5_open(source *s, const char *split) {
  int found;
  DP_TRY(dp_dataset_open(&s->ds, s->path, split, &found));
  if (!found)
    return dp_fail(DP_EDATA, "%s: no /%s group to predict%s", s->path, split,
                   strcmp(split, "train") ? " (--split train takes /train)" : "");
  for (int64_t j = 0; j < s->ds.d; j++) /* the stored values: the model's own transform follows */
    s->ds.x_scale[j] = 1.0f, s->ds.x_shift[j] = 0.0f;
  s->n = s->ds.n;
  s->rows = malloc(sizeof(int64_t) * PREDICT_ROWS);
  return s->rows ? 0 : dp_fail(DP_ENOMEM, "predict: out of memory");
}

static int source_open(source *s, const char *split, int64_t n_in) {
  DP_TRY(dp_check_regular(s->path, "the data file", DP_EDATA, NULL));
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  s->csv = has_suffix(s->path, ".csv");
  if (!s->csv && H5Fis_hdf5(s->path) <= 0)
    return dp_fail(DP_EDATA, "%s: neither an HDF5 data file nor a .csv", s->path);
  s->d = n_in;
  DP_TRY(s->csv ? csv_open(s) : h5_open(s, split));
  if (!s->csv && s->ds.d != n_in)
    return dp_fail(DP_ESHAPE, "%s: /%s/x has %lld features per row, the model takes %lld", s->path, split,
                   (long long)s->ds.d, (long long)n_in);
  return 0;
}

static int source_rows(source *s, int64_t lo, int64_t hi, float *x) {
  if (s->csv)
    return csv_rows(s, lo, hi, x);
  for (int64_t r = lo; r < hi; r++)
    s->rows[r - lo] = r;
  return dp_dataset_gather(&s->ds, s->rows, (int)(hi - lo), x, NULL, NULL);
}

static void source_close(source *s) {
  dp_dataset_close(&s->ds);
  if (s->f)
    fclose(s->f);
  free(s->line);
  free(s->rows);
}

/* ---- writing (rank 0) ---- */

static int argmax(const float *y, int64_t k) {
  int best = 0;
  for (int64_t j = 1; j < k; j++)
    best = y[j] > y[best] ? (int)j : best;
  return best;
}

static int h5_dataset(predictor *p, const char *name, hid_t type, int rank, int64_t cols, hid_t *d) {
  hsize_t dims[2] = {(hsize_t)p->src->n, (hsize_t)cols}, max[2] = {H5S_UNLIMITED, (hsize_t)cols};
  hsize_t chunk[2] = {PREDICT_ROWS, (hsize_t)cols};
  hid_t space = H5Screate_simple(rank, dims, max), dcpl = H5Pcreate(H5P_DATASET_CREATE);
  if (space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0 && H5Pset_fletcher32(dcpl) >= 0)
    *d = H5Dcreate2(p->w.file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Sclose(space);
  H5Pclose(dcpl);
  return *d < 0 ? dp_fail(DP_EHDF5, "cannot create /%s", name) : 0;
}

static int writer_open(predictor *p, const char *path) {
  writer *w = &p->w;
  w->file = w->y = w->label = -1;
  if (w->h5) {
    w->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0)
      return dp_fail(DP_EIO, "%s: cannot create", path);
    DP_TRY(h5u_attr_str(w->file, "checkpoint", p->o->ckpt));
    DP_TRY(h5u_attr_str(w->file, "data", p->o->data));
    DP_TRY(h5_dataset(p, "y", H5T_IEEE_F32LE, 2, p->n_out, &w->y));
    return p->classifier ? h5_dataset(p, "label", H5T_STD_I32LE, 1, 1, &w->label) : 0;
  }
  if (path && !(w->f = fopen(path, "w")))
    return dp_fail(DP_EIO, "%s: cannot create: %s", path, strerror(errno));
  for (int64_t k = 0; k < p->n_out; k++)
    fprintf(w->f, "y%lld%s", (long long)k, k + 1 < p->n_out ? "," : p->classifier ? ",label\n" : "\n");
  return 0;
}

static int h5_append(hid_t d, int rank, int64_t row0, int64_t n, int64_t cols, hid_t mtype, const void *buf) {
  hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)n, (hsize_t)cols};
  hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, count, NULL);
  herr_t st = fs >= 0 && ms >= 0 ? H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) : -1;
  if (st >= 0)
    st = H5Dwrite(d, mtype, ms, fs, H5P_DEFAULT, buf);
  H5Sclose(fs);
  H5Sclose(ms);
  return st < 0 ? dp_fail(DP_EIO, "writing rows %lld to %lld failed", (long long)row0, (long long)(row0 + n)) : 0;
}

static int writer_rows(predictor *p, int64_t row0, int64_t n, const float *y) {
  writer *w = &p->w;
  if (w->h5) {
    DP_TRY(h5_append(w->y, 2, row0, n, p->n_out, H5T_NATIVE_FLOAT, y));
    if (!p->classifier)
      return 0;
    for (int64_t i = 0; i < n; i++)
      p->labels[i] = argmax(y + i * p->n_out, p->n_out);
    return h5_append(w->label, 1, row0, n, 1, H5T_NATIVE_INT32, p->labels);
  }
  for (int64_t i = 0; i < n; i++) {
    const float *r = y + i * p->n_out;
    for (int64_t k = 0; k < p->n_out; k++)
      fprintf(w->f, "%.9g%s", r[k], k + 1 < p->n_out ? "," : "");
    if (p->classifier)
      fprintf(w->f, ",%d", argmax(r, p->n_out));
    fputc('\n', w->f);
  }
  return ferror(w->f) ? dp_fail(DP_EIO, "write error: %s", strerror(errno)) : 0;
}

static int writer_close(writer *w, int to_stdout) {
  int rc = 0;
  if (w->h5) {
    if (w->y >= 0)
      H5Dclose(w->y);
    if (w->label >= 0)
      H5Dclose(w->label);
    if (w->file >= 0 && H5Fclose(w->file) < 0)
      rc = dp_fail(DP_EIO, "closing the HDF5 output failed");
  } else if (w->f && (to_stdout ? fflush(w->f) : fclose(w->f)) != 0) {
    rc = dp_fail(DP_EIO, "write error: %s", strerror(errno));
  }
  return rc;
}

/* ---- the rounds ---- */

/* The model's error for rows starting at global row row0, named by the data file's row. */
static int predict_failed(predictor *p, int rc, int64_t row0) {
  const char *m = dp_infer_last_error(), *at = strstr(m, "row ");
  long long r = at ? atoll(at + 4) : -1;
  if (rc == DP_EINVAL && r >= 0 && strstr(m, "feature"))
    return dp_fail(DP_EDATA, "%s: row %lld%s", p->src->path, row0 + r,
                   strchr(at + 4, ','));
  return dp_fail(rc, "%s", m);
}

static int round_share(predictor *p, int64_t g, int64_t gn) {
  int64_t lo, hi;
  dp_split_range(gn, p->comm->rank, p->comm->size, &lo, &hi);
  DP_TRY(source_rows(p->src, g + lo, g + hi, p->x));
  int rc = dp_infer_predict(p->model, p->x, hi - lo, p->y);
  return rc < 0 ? predict_failed(p, rc, g + lo) : 0;
}

/* Every rank goes through every round with its status, so a failure anywhere ends them all at the
 * same round; rank 0's write failure rides on the next round's agreement. */
static int rounds(predictor *p, int status) {
  dp_comm *c = p->comm;
  int64_t per_round = (int64_t)PREDICT_ROWS * c->size, n = p->src->n;
  int wrc = 0;
  for (int64_t g = 0; g < n; g += per_round) {
    int64_t gn = n - g < per_round ? n - g : per_round, lo, hi;
    int rc = status ? status : wrc ? wrc : round_share(p, g, gn);
    rc = dp_comm_agree(c, rc, NULL);
    if (rc < 0) {
      p->agreed = 1;
      return rc;
    }
    for (int r = 0; r < c->size; r++) {
      dp_split_range(gn, r, c->size, &lo, &hi);
      p->counts[r] = (int)((hi - lo) * p->n_out), p->displs[r] = (int)(lo * p->n_out);
    }
    dp_split_range(gn, c->rank, c->size, &lo, &hi);
    DP_TRY(dp_comm_gatherv_f32(c, p->y, (int)((hi - lo) * p->n_out), p->all, p->counts, p->displs, 0));
    if (c->rank == 0)
      wrc = writer_rows(p, g, gn, p->all);
  }
  return status ? status : wrc;
}

static int fill_output(const char *tmp, void *ctx) {
  predictor *p = ctx;
  p->entered = 1;
  int rc = rounds(p, writer_open(p, tmp));
  int cl = writer_close(&p->w, 0);
  rc = rc ? rc : cl;
  if (rc < 0) {
    p->failed = rc;
    snprintf(p->msg, sizeof p->msg, "%s", dp_errmsg(rc));
  }
  return rc;
}

/* Rank 0's part: the rounds inside the durable writer (or straight to standard output). */
static int write_output(predictor *p, FILE *std_out) {
  if (!p->o->out) {
    p->w.f = std_out;
    int rc = rounds(p, writer_open(p, NULL));
    int cl = writer_close(&p->w, 1);
    return rc ? rc : cl;
  }
  int rc = dp_write_durable(p->o->out, "the predictions", fill_output, p);
  if (!p->entered)
    return rounds(p, rc);
  if (rc < 0 && p->failed)
    return dp_fail(p->failed, "%s", p->msg);
  return rc;
}

static int output_kind(const dp_predict_opts *o, writer *w) {
  if (!o->out)
    return 0;
  w->h5 = has_suffix(o->out, ".h5") || has_suffix(o->out, ".hdf5");
  if (!w->h5 && !has_suffix(o->out, ".csv"))
    return dp_fail(DP_EUSAGE, "-o %s: the output must end in .h5 (or .hdf5) or .csv", o->out);
  return 0;
}

/* The library's outputs are probabilities or values alike; /label is for a classifier's. */
static int is_classifier(const char *ckpt, int *classifier) {
  char *text = calloc(PREDICT_CONFIG_MAX, 1);
  dp_config *cfg = malloc(sizeof *cfg);
  int rc = text && cfg ? dp_ckpt_config_text(ckpt, text, PREDICT_CONFIG_MAX) : dp_fail(DP_ENOMEM, "out of memory");
  if (rc == 0)
    rc = dp_config_parse_string(cfg, text, ckpt, NULL, 0);
  if (rc == 0)
    *classifier = cfg->model.loss != DP_LOSS_MSE;
  free(text);
  free(cfg);
  return rc;
}

static int open_all(predictor *p) {
  DP_TRY(output_kind(p->o, &p->w));
  int rc = dp_infer_open(p->o->ckpt, &p->model);
  if (rc < 0)
    return dp_fail(rc, "%s", dp_infer_last_error());
  dp_infer_dims(p->model, &p->n_in, &p->n_out);
  DP_TRY(is_classifier(p->o->ckpt, &p->classifier));
  DP_TRY(source_open(p->src, p->o->split, p->n_in));
  size_t round = (size_t)PREDICT_ROWS, ranks = (size_t)p->comm->size;
  p->x = malloc(sizeof(float) * round * (size_t)p->n_in);
  p->y = malloc(sizeof(float) * round * (size_t)p->n_out);
  p->all = malloc(sizeof(float) * round * ranks * (size_t)p->n_out);
  p->labels = malloc(sizeof(int32_t) * round * ranks);
  p->counts = malloc(sizeof(int) * 2 * ranks);
  if (!p->x || !p->y || !p->all || !p->labels || !p->counts)
    return dp_fail(DP_ENOMEM, "predict: cannot allocate a round of %d rows", PREDICT_ROWS);
  p->displs = p->counts + p->comm->size;
  return 0;
}

int dp_predict_run(const dp_predict_opts *o, dp_comm *comm, FILE *std_out) {
  source src = {.path = o->data};
  dp_dataset_init(&src.ds);
  predictor p = {.o = o, .comm = comm, .src = &src};
  int rc = dp_comm_agree(comm, open_all(&p), NULL);
  if (rc == 0) {
    rc = comm->rank == 0 ? write_output(&p, std_out) : rounds(&p, 0);
    if (!p.agreed) /* rank 0's last write or the rename: the others do not know yet */
      rc = dp_comm_agree(comm, rc, NULL);
  }
  source_close(&src);
  dp_infer_close(p.model);
  free(p.x);
  free(p.y);
  free(p.all);
  free(p.labels);
  free(p.counts);
  return rc;
}
