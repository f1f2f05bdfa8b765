/* Writing data files, and converting IDX (MNIST family) and CSV into them. */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "dptrain/data.h"
#include "dptrain/error.h"
#include "dptrain/rng.h"
#include "fsutil.h"
#include "h5util.h"

/* ---- writing ---- */

/* Chunks with Fletcher32 checksums (as checkpoints have), so a damaged row or label is refused when
 * read rather than trained on; no compression. */
static const h5u_layout data_layout = {0, 1, 0};

/* The float attribute `scale` of <group>/x (absent when 1). */
static int write_scale(hid_t f, const char *x, float scale) {
  if (scale == 1.0f)
    return 0;
  hid_t d = H5Dopen2(f, x, H5P_DEFAULT);
  hid_t sp = d < 0 ? -1 : H5Screate(H5S_SCALAR);
  hid_t a = sp < 0 ? -1 : H5Acreate2(d, "scale", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
  herr_t st = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_FLOAT, &scale);
  const char *call = d < 0 ? "H5Dopen2" : sp < 0 ? "H5Screate" : a < 0 ? "H5Acreate2" : "H5Awrite";
  if (a >= 0 && H5Aclose(a) < 0 && st >= 0)
    st = -1, call = "H5Aclose";
  if (sp >= 0)
    H5Sclose(sp);
  if (d >= 0)
    H5Dclose(d);
  return st < 0 ? dp_fail(DP_EHDF5, "HDF5 %s failed on the attribute scale of %s", call, x) : 0;
}

/* Chunks of whole rows, about chunk_mb each: a block the streaming reader takes is one or a few chunks,
 * each read whole and checksummed once, and a load into memory reads them in order. (A shuffled single
 * row read from the file costs its whole chunk: that is what order = blocks avoids.) y is chunked by
 * the same rows, so a block's labels are one read too. */
#define DEFAULT_CHUNK_MB 2.0
static int64_t chunk_rows(size_t row_bytes, double chunk_mb) {
  double r = chunk_mb * (1 << 20) / (double)(row_bytes ? row_bytes : 1);
  return r >= 1 ? (int64_t)r : 1;
}

/* /<group>/x, its scale, and /<group>/y. */
static int write_split(hid_t f, const char *group, const dp_split_view *v) {
  char x[80], y[80];
  snprintf(x, sizeof x, "/%s/x", group); /* group is "train" or "test" */
  snprintf(y, sizeof y, "/%s/y", group);
  hid_t g;
  DP_TRY(h5u_group(f, group, &g));
  if (H5Gclose(g) < 0)
    return dp_fail(DP_EHDF5, "HDF5 H5Gclose failed on /%s", group);
  int64_t dims[2] = {v->n, v->d};
  h5u_layout lx = data_layout, ly = data_layout;
  lx.chunk_rows = ly.chunk_rows = chunk_rows(dp_row_bytes(v->d, v->x_u8), DEFAULT_CHUNK_MB);
  DP_TRY(v->x_u8 ? h5u_write(f, x, H5T_STD_U8LE, H5T_NATIVE_UINT8, v->x, 2, dims, &lx)
                 : h5u_write(f, x, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v->x, 2, dims, &lx));
  /* The whole split's hash: a reader that loads all of it can tell a damaged chunk index too. */
  DP_TRY(h5u_write_hash(f, x, v->x, (size_t)v->n * dp_row_bytes(v->d, v->x_u8)));
  DP_TRY(write_scale(f, x, v->scale));
  if (v->labels) {
    DP_TRY(h5u_write(f, y, H5T_STD_I32LE, H5T_NATIVE_INT32, v->labels, 1, dims, &ly));
    return h5u_write_hash(f, y, v->labels, (size_t)v->n * sizeof *v->labels);
  }
  dims[1] = v->k;
  DP_TRY(h5u_write(f, y, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, v->targets, 2, dims, &ly));
  return h5u_write_hash(f, y, v->targets, (size_t)(v->n * v->k) * sizeof *v->targets);
}

/* The training split's per-feature mean and population std of x · scale, /train/x_mean and
 * /train/x_std (float64), for [data] standardize = per_feature: one pass, Welford's update in float64
 * (sums of squares would cancel for features far from 0), 3 doubles of memory per feature. */
static int write_stats(hid_t f, const dp_split_view *v) {
  double *mean = calloc((size_t)v->d, sizeof *mean), *m2 = calloc((size_t)v->d, sizeof *m2);
  int rc = mean && m2 ? 0 : dp_fail(DP_ENOMEM, "no memory for the statistics of %lld features", (long long)v->d);
  double sc = v->scale != 0.0f ? v->scale : 1.0;
  for (int64_t i = 0; rc == 0 && i < v->n; i++) {
    double inv = 1.0 / (double)(i + 1);
    for (int64_t j = 0; j < v->d; j++) {
      size_t k = (size_t)i * (size_t)v->d + (size_t)j;
      double x = sc * (v->x_u8 ? ((const uint8_t *)v->x)[k] : ((const float *)v->x)[k]), delta = x - mean[j];
      mean[j] += delta * inv;
      m2[j] += delta * (x - mean[j]);
    }
  }
  for (int64_t j = 0; rc == 0 && j < v->d; j++)
    m2[j] = v->n > 0 ? sqrt(m2[j] / (double)v->n) : 0.0;
  int64_t dims[2] = {v->d, 1};
  const char *names[2] = {"/train/x_mean", "/train/x_std"};
  const double *vals[2] = {mean, m2};
  for (int i = 0; i < 2 && rc == 0; i++) {
    rc = h5u_write(f, names[i], H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, vals[i], 1, dims, &data_layout);
    if (rc == 0)
      rc = h5u_write_hash(f, names[i], vals[i], sizeof(double) * (size_t)v->d);
  }
  free(mean);
  free(m2);
  return rc;
}

typedef struct {
  const dp_split_view *train, *test;
} data_views;

/* dp_write_durable's fill: the whole HDF5 file at tmp. Messages leave out the file: dp_write_durable
 * puts it in front. */
static int fill_data(const char *tmp, void *arg) {
  const data_views *v = arg;
  double bytes = 0;
  for (const dp_split_view *s = v->train; s; s = s == v->train ? v->test : NULL)
    bytes += (double)s->n * ((double)dp_row_bytes(s->d, s->x_u8) + 4.0 * (double)(s->labels ? 1 : s->k));
  h5u_outfile o; /* in memory when small: HDF5 cannot recover from a write that fails on a full disk */
  DP_TRY(h5u_out_create(&o, tmp, bytes));
  int rc = write_split(o.f, "train", v->train);
  if (rc == 0)
    rc = write_stats(o.f, v->train);
  if (rc == 0 && v->test)
    rc = write_split(o.f, "test", v->test);
  int wrc = h5u_out_close(&o, tmp, rc == 0);
  return rc < 0 ? rc : wrc;
}

int dp_data_write(const char *path, const dp_split_view *train, const dp_split_view *test) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  data_views v = {train, test};
  return dp_write_durable(path, "the data file", fill_data, &v);
}

/* The training inputs' mean and standard deviation (after scale), for [data] mean and std: the
 * user decides whether to standardise, and the same two numbers then apply to every split. */
static void print_input_stats(const char *path, const dp_split_view *v) {
  double s = 0.0, s2 = 0.0;
  size_t n = (size_t)v->n * (size_t)v->d;
  for (size_t i = 0; i < n; i++) {
    double x = v->x_u8 ? ((const uint8_t *)v->x)[i] : ((const float *)v->x)[i];
    s += x;
    s2 += x * x;
  }
  double mean = n ? s / (double)n : 0.0, var = n ? s2 / (double)n - mean * mean : 0.0;
  double sc = v->scale != 0.0f ? v->scale : 1.0;
  printf("%s: /train/x has mean %.4f and std %.4f (set [data] mean and std to them to standardise the inputs; "
         "/train/x_mean and /train/x_std hold each feature's, for [data] standardize = per_feature)\n",
         path, mean * sc, sqrt(var > 0 ? var : 0) * fabs(sc));
}

/* ---- IDX ---- */

typedef struct {
  uint8_t *data;
  int64_t n;       /* items (first dimension) */
  int64_t item;    /* bytes per item (product of the other dimensions) */
  int ndims;
} idx_array;

static int gz_read_all(gzFile gz, const char *path, void *buf, size_t bytes, const char *what) {
  size_t done = 0;
  while (done < bytes) {
    unsigned chunk = bytes - done > (1u << 30) ? (1u << 30) : (unsigned)(bytes - done);
    int got = gzread(gz, (char *)buf + done, chunk);
    if (got <= 0) {
      int zerr;
      const char *msg = gzerror(gz, &zerr);
      return dp_fail(DP_EDATA, "%s: truncated IDX file: %s ended after %zu of %zu bytes%s%s", path, what, done, bytes,
                     zerr ? ": " : "", zerr ? msg : "");
    }
    done += (size_t)got;
  }
  return 0;
}

static int idx_read(const char *path, int want_dims, idx_array *a) {
  memset(a, 0, sizeof *a);
  DP_TRY(dp_check_regular(path, "an IDX file", DP_EDATA, NULL)); /* a FIFO would block gzopen */
  gzFile gz = gzopen(path, "rb"); /* reads plain files too */
  if (!gz)
    return dp_fail(DP_EDATA, "%s: cannot open: %s", path, strerror(errno));
  uint8_t head[4];
  int rc = gz_read_all(gz, path, head, 4, "the header");
  if (rc == 0 && (head[0] || head[1] || head[2] != 0x08))
    rc = dp_fail(DP_EDATA, "%s: not an unsigned-byte IDX file (magic %02x %02x %02x %02x, expected 00 00 08 nn)", path,
                 head[0], head[1], head[2], head[3]);
  if (rc == 0 && head[3] != want_dims)
    rc = dp_fail(DP_EDATA, "%s: expected %d dimensions, found %d", path, want_dims, head[3]);
  uint8_t dims[16];
  if (rc == 0)
    rc = gz_read_all(gz, path, dims, 4u * (unsigned)want_dims, "the dimensions");
  a->item = 1;
  for (int i = 0; rc == 0 && i < want_dims; i++) {
    int64_t v = (int64_t)dims[4 * i] << 24 | dims[4 * i + 1] << 16 | dims[4 * i + 2] << 8 | dims[4 * i + 3];
    if (v <= 0 || v > (1 << 28))
      rc = dp_fail(DP_EDATA, "%s: dimension %d is %lld (expected 1..2^28)", path, i, (long long)v);
    if (i == 0)
      a->n = v;
    else
      a->item *= v;
    if (rc == 0 && (double)a->item * (double)(i == 0 ? v : a->n) > 0x1p36) /* 64 GiB: no real IDX is this big */
      rc = dp_fail(DP_EDATA, "%s: dimensions describe more than 64 GiB of data", path);
  }
  size_t bytes = (size_t)a->n * (size_t)a->item;
  if (rc == 0 && !(a->data = malloc(bytes)))
    rc = dp_fail(DP_ENOMEM, "%s: no memory for %zu bytes", path, bytes);
  if (rc == 0)
    rc = gz_read_all(gz, path, a->data, bytes, "the data");
  gzclose(gz);
  if (rc < 0) {
    free(a->data);
    a->data = NULL;
  }
  a->ndims = want_dims;
  return rc;
}

/* Reads one images/labels pair into a split; the caller frees x and labels. */
static int idx_split(const char *images, const char *labels, dp_split_view *v, int32_t **lab_out) {
  idx_array im, lb;
  DP_TRY(idx_read(images, 3, &im));
  int rc = idx_read(labels, 1, &lb);
  if (rc == 0 && lb.n != im.n)
    rc = dp_fail(DP_EDATA, "%s: %lld labels, but %s has %lld images", labels, (long long)lb.n, images,
                 (long long)im.n);
  int32_t *lab = rc == 0 ? malloc((size_t)lb.n * sizeof *lab) : NULL;
  if (rc == 0 && !lab)
    rc = dp_fail(DP_ENOMEM, "%s: no memory", labels);
  for (int64_t i = 0; rc == 0 && i < lb.n; i++)
    lab[i] = lb.data[i];
  free(lb.data);
  if (rc < 0) {
    free(im.data);
    free(lab);
    return rc;
  }
  *v = (dp_split_view){.n = im.n, .d = im.item, .x_u8 = 1, .x = im.data, .scale = 1.0f / 255.0f, .labels = lab};
  *lab_out = lab;
  return 0;
}

int dp_convert_idx(const char *images, const char *labels, const char *test_images, const char *test_labels,
                   const char *out) {
  dp_split_view train = {0}, test = {0};
  int32_t *l1 = NULL, *l2 = NULL;
  int rc = idx_split(images, labels, &train, &l1);
  if (rc == 0 && test_images)
    rc = idx_split(test_images, test_labels, &test, &l2);
  if (rc == 0 && test_images && test.d != train.d)
    rc = dp_fail(DP_EDATA, "%s: images have %lld pixels, but %s has %lld", test_images, (long long)test.d, images,
                 (long long)train.d);
  if (rc == 0)
    rc = dp_data_write(out, &train, test_images ? &test : NULL);
  if (rc == 0)
    print_input_stats(out, &train);
  free((void *)train.x);
  free((void *)test.x);
  free(l1);
  free(l2);
  return rc;
}

/* ---- CSV ---- */

typedef struct {
  float *x;
  float *y;
  int64_t n, cap, d;
} csv_table;

static int csv_push(csv_table *t, const char *path, int64_t line, float *vals, int64_t nv, int label_col,
                    int regression) {
  int64_t lc = label_col < 0 ? nv + label_col : label_col;
  if (lc < 0 || lc >= nv)
    return dp_fail(DP_EDATA, "%s:%lld: label column %d does not exist (the row has %lld column%s)", path,
                   (long long)line, label_col, (long long)nv, dp_plural(nv));
  if (t->d == 0)
    t->d = nv - 1;
  if (nv - 1 != t->d || t->d == 0)
    return dp_fail(DP_EDATA, "%s:%lld: expected %lld column%s like the first row, found %lld", path, (long long)line,
                   (long long)t->d + 1, dp_plural(t->d + 1), (long long)nv);
  if (!regression && (vals[lc] != floorf(vals[lc]) || vals[lc] < 0 || vals[lc] > 1e6f))
    return dp_fail(DP_EDATA, "%s:%lld: label '%g' is not a class number 0, 1, 2, ...", path, (long long)line,
                   (double)vals[lc]);
  if (t->n == t->cap) {
    int64_t cap = t->cap ? 2 * t->cap : 1024;
    float *x = realloc(t->x, (size_t)cap * dp_row_bytes(t->d, 0));
    if (x)
      t->x = x;
    float *y = x ? realloc(t->y, (size_t)cap * sizeof *y) : NULL;
    if (y)
      t->y = y;
    if (!x || !y)
      return dp_fail(DP_ENOMEM, "%s:%lld: out of memory", path, (long long)line);
    t->cap = cap;
  }
  float *row = t->x + t->n * t->d;
  for (int64_t j = 0, o = 0; j < nv; j++)
    if (j != lc)
      row[o++] = vals[j];
  t->y[t->n++] = vals[lc];
  return 0;
}

/* The shapes CSV files come in: ',' ';' or tab between fields (';' files write decimal commas),
 * "quoted" fields, blanks around values, CRLF, blank lines, a header line, no final newline. */
static int csv_blank(char c, char sep) { return c != sep && (c == ' ' || c == '\t' || c == '\r' || c == '\n'); }

/* The separator of a file, from its first line: ';' or a tab when the line has one outside quotes. */
static char csv_sep(const char *line) {
  int quoted = 0, semi = 0, tab = 0;
  for (const char *c = line; *c; c++) {
    quoted ^= *c == '"';
    semi += !quoted && *c == ';';
    tab += !quoted && *c == '\t';
  }
  return semi ? ';' : tab ? '\t' : ',';
}

/* The next field of *s, trimmed and unquoted, NUL-terminated in place; *s moves past its separator
 * (NULL after the last field). NULL on text after a closing quote. */
static char *csv_field(char **s, char sep) {
  char *p = *s, *start, *end;
  while (csv_blank(*p, sep))
    p++;
  if (*p == '"') {
    start = ++p;
    while (*p && *p != '"')
      p++;
    end = p;
    if (*p == '"')
      p++;
    while (csv_blank(*p, sep))
      p++;
    if (*p && *p != sep)
      return NULL;
  } else {
    start = p;
    while (*p && *p != sep)
      p++;
    end = p;
  }
  while (end > start && csv_blank(end[-1], sep))
    end--;
  *s = *p == sep ? p + 1 : NULL;
  *end = 0;
  return start;
}

/* A field as a number: the whole field, finite; a ';' file's decimal comma is a point. */
static int csv_number(char *f, char sep, float *v) {
  for (char *c = f; sep == ';' && *c; c++)
    if (*c == ',')
      *c = '.';
  char *end;
  *v = strtof(f, &end);
  return end != f && *end == 0 && isfinite(*v);
}

/* Splits one line into numbers; returns the count or a negative error naming line and column. */
static int64_t csv_fields(char *s, char sep, float **vals, int64_t *cap, const char *path, int64_t line) {
  int64_t n = 0;
  while (s) {
    char *f = csv_field(&s, sep);
    if (!f)
      return dp_fail(DP_EDATA, "%s:%lld: field %lld: text after a closing quote", path, (long long)line,
                     (long long)n + 1);
    float v;
    if (!f[0])
      return dp_fail(DP_EDATA, "%s:%lld: field %lld (column %lld) is empty: a missing value (expected a number)", path,
                     (long long)line, (long long)n + 1, (long long)n + 1);
    if (!csv_number(f, sep, &v))
      return dp_fail(DP_EDATA, "%s:%lld: field %lld: '%.40s' is not a finite number", path, (long long)line,
                     (long long)n + 1, f);
    if (n == *cap) {
      float *nv = realloc(*vals, (size_t)(*cap = *cap ? 2 * *cap : 256) * sizeof *nv);
      if (!nv)
        return dp_fail(DP_ENOMEM, "%s: out of memory", path);
      *vals = nv;
    }
    (*vals)[n++] = v;
  }
  return n;
}

/* A first line without a single number is a header, --header or not. */
static int csv_is_header(const char *line, char sep) {
  char *copy = strdup(line), *s = copy, *f = copy;
  int numbers = 0;
  float v;
  while (f && s && (f = csv_field(&s, sep)))
    numbers += csv_number(f, sep, &v);
  free(copy);
  return f && numbers == 0; /* a malformed line is reported as data */
}

static int csv_read(const char *path, const dp_csv_options *o, csv_table *t) {
  DP_TRY(dp_check_regular(path, "a CSV file", DP_EDATA, NULL)); /* a FIFO would block fopen */
  FILE *f = fopen(path, "r");
  if (!f)
    return dp_fail(DP_EDATA, "%s: cannot open: %s", path, strerror(errno));
  char *line = NULL, sep = 0;
  size_t len = 0;
  float *vals = NULL;
  int64_t cap = 0, lineno = 0;
  int rc = 0;
  while (rc == 0 && getline(&line, &len, f) >= 0) {
    lineno++;
    int first = !sep;
    if ((lineno == 1 && o->header) || line[strspn(line, " \t\r\n")] == 0)
      continue;
    if (first)
      sep = csv_sep(line);
    if (first && csv_is_header(line, sep))
      continue;
    int64_t nv = csv_fields(line, sep, &vals, &cap, path, lineno);
    rc = nv < 0 ? (int)nv : csv_push(t, path, lineno, vals, nv, o->label_col, o->regression);
  }
  if (rc == 0 && ferror(f))
    rc = dp_fail(DP_EIO, "%s: read error", path);
  if (rc == 0 && t->n == 0)
    rc = dp_fail(DP_EDATA, "%s: no data rows", path);
  free(line);
  free(vals);
  fclose(f);
  return rc;
}

static int csv_view(csv_table *t, const char *path, const dp_csv_options *o, dp_split_view *v, int32_t **labels) {
  *v = (dp_split_view){.n = t->n, .d = t->d, .x = t->x, .scale = o->scale != 0.0f ? o->scale : 1.0f, .k = 1};
  if (o->regression) {
    v->targets = t->y;
    return 0;
  }
  *labels = malloc((size_t)t->n * sizeof **labels);
  if (!*labels)
    return dp_fail(DP_ENOMEM, "%s: no memory for %lld labels", path, (long long)t->n);
  for (int64_t i = 0; i < t->n; i++)
    (*labels)[i] = (int32_t)t->y[i];
  v->labels = *labels;
  return 0;
}

int dp_convert_csv(const dp_csv_options *o) {
  csv_table tr = {0}, te = {0};
  dp_split_view vtr, vte;
  int32_t *l1 = NULL, *l2 = NULL;
  int rc = csv_read(o->train_csv, o, &tr);
  if (rc == 0 && o->test_csv)
    rc = csv_read(o->test_csv, o, &te);
  if (rc == 0 && o->test_csv && te.d != tr.d)
    rc = dp_fail(DP_EDATA, "%s: %lld feature columns, but %s has %lld", o->test_csv, (long long)te.d, o->train_csv,
                 (long long)tr.d);
  if (rc == 0)
    rc = csv_view(&tr, o->train_csv, o, &vtr, &l1);
  if (rc == 0 && o->test_csv)
    rc = csv_view(&te, o->test_csv, o, &vte, &l2);
  if (rc == 0)
    rc = dp_data_write(o->out, &vtr, o->test_csv ? &vte : NULL);
  if (rc == 0)
    print_input_stats(o->out, &vtr);
  free(tr.x);
  free(tr.y);
  free(te.x);
  free(te.y);
  free(l1);
  free(l2);
  return rc;
}

/* ---- streamed writes: rechunk and synthetic ---- */

/* Pieces of whole output chunks of about this size: what rechunk and synthetic hold at a time. */
#define PIECE_BYTES (16u << 20)

/* A dataset of rows written in pieces, in order, hashed on the way. */
typedef struct {
  hid_t d;
  const char *name;
  hid_t mtype;
  int rank;
  int64_t rows, cols, done;
  size_t row_bytes;
  h5u_hasher hash;
} rows_out;

static int rows_create(rows_out *w, hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank,
                       const int64_t dims[2], int64_t chunk) {
  *w = (rows_out){.name = name, .mtype = mtype, .rank = rank, .rows = dims[0], .cols = rank > 1 ? dims[1] : 1};
  w->row_bytes = (size_t)w->cols * H5Tget_size(mtype);
  h5u_hash_init(&w->hash, (size_t)w->rows * w->row_bytes);
  h5u_layout lay = data_layout;
  lay.chunk_rows = chunk;
  return h5u_create(loc, name, ftype, rank, dims, &lay, &w->d);
}

static int rows_put(rows_out *w, const void *buf, int64_t n) {
  hsize_t start[2] = {(hsize_t)w->done, 0}, count[2] = {(hsize_t)n, (hsize_t)w->cols};
  hid_t fs = H5Dget_space(w->d), ms = H5Screate_simple(w->rank, count, NULL);
  herr_t st = fs < 0 || ms < 0 ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
  if (st >= 0)
    st = H5Dwrite(w->d, w->mtype, ms, fs, H5P_DEFAULT, buf);
  if (ms >= 0)
    H5Sclose(ms);
  if (fs >= 0)
    H5Sclose(fs);
  if (st < 0)
    return dp_fail(DP_EHDF5, "HDF5 H5Dwrite failed on %s, rows %lld..%lld", w->name, (long long)w->done,
                   (long long)(w->done + n - 1));
  h5u_hash_add(&w->hash, buf, (size_t)n * w->row_bytes);
  w->done += n;
  return 0;
}

/* Closes w; when ok, first stores the hash of everything written (*hash gets it, when not NULL). */
static int rows_finish(rows_out *w, int ok, uint64_t *hash) {
  uint64_t h = h5u_hash_end(&w->hash);
  int rc = ok ? h5u_attr_i64(w->d, H5U_HASH_ATTR, (int64_t)h) : 0;
  if (H5Dclose(w->d) < 0 && rc == 0 && ok)
    rc = dp_fail(DP_EHDF5, "HDF5 H5Dclose failed on %s", w->name);
  if (hash)
    *hash = h;
  return rc;
}

/* dp_write_durable reports errno when set: only a DP_EIO's errno is the cause, not one HDF5 left. */
static int keep_message(int rc) {
  if (rc < 0 && rc != DP_EIO)
    errno = 0;
  return rc;
}

/* Rows per piece: whole chunks, about PIECE_BYTES. */
static int64_t piece_rows(int64_t chunk, size_t row_bytes) {
  double per_chunk = (double)chunk * (double)row_bytes;
  int64_t chunks = per_chunk >= PIECE_BYTES ? 1 : (int64_t)(PIECE_BYTES / per_chunk);
  return chunk * chunks;
}

/* ---- rechunk ---- */

typedef struct {
  const char *in, *out;
  double chunk_mb;
  hid_t src;
  double bytes; /* the output's size, about */
} rechunk_ctx;

/* Copies every attribute of src onto dst but the hash (recomputed), whatever its type. */
static herr_t copy_attr(hid_t src, const char *name, const H5A_info_t *info, void *arg) {
  (void)info;
  hid_t dst = *(hid_t *)arg;
  if (!strcmp(name, H5U_HASH_ATTR))
    return 0;
  hid_t a = H5Aopen(src, name, H5P_DEFAULT);
  hid_t ft = a < 0 ? -1 : H5Aget_type(a), sp = a < 0 ? -1 : H5Aget_space(a);
  hid_t mt = ft < 0 ? -1 : H5Tget_native_type(ft, H5T_DIR_DEFAULT);
  hssize_t n = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
  size_t bytes = mt < 0 || n < 0 ? 0 : (size_t)n * H5Tget_size(mt);
  void *buf = bytes ? calloc(1, bytes) : NULL;
  herr_t st = buf ? H5Aread(a, mt, buf) : -1;
  hid_t b = st < 0 ? -1 : H5Acreate2(dst, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT);
  if (b < 0 || H5Awrite(b, mt, buf) < 0)
    st = -1;
  if (b >= 0)
    H5Aclose(b);
  if (buf && st >= 0 && (H5Tdetect_class(mt, H5T_VLEN) > 0 || H5Tis_variable_str(mt) > 0))
    H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, buf);
  free(buf);
  if (mt >= 0)
    H5Tclose(mt);
  if (ft >= 0)
    H5Tclose(ft);
  if (sp >= 0)
    H5Sclose(sp);
  if (a >= 0)
    H5Aclose(a);
  return st < 0 ? dp_fail(DP_EHDF5, "cannot copy the attribute %s", name), -1 : 0;
}

static int copy_attrs(hid_t src, hid_t dst, const char *file, const char *obj) {
  hsize_t idx = 0;
  dp_fail(DP_EHDF5, "cannot list its attributes"); /* what is said unless copy_attr says more */
  if (H5Aiterate2(src, H5_INDEX_NAME, H5_ITER_INC, &idx, copy_attr, &dst) < 0) {
    char msg[600];
    snprintf(msg, sizeof msg, "%s", dp_errmsg(DP_EHDF5));
    return dp_fail(DP_EHDF5, "%s: %s: %s", file, obj, msg);
  }
  return 0;
}

/* The stored types dptrain reads, as `dptrain convert` writes them: x uint8 (narrow) or float32, y
 * int32 labels (narrow) or float32 targets. */
static void canonical_type(int is_x, int narrow, hid_t *ftype, hid_t *mtype) {
  if (narrow) {
    *ftype = is_x ? H5T_STD_U8LE : H5T_STD_I32LE;
    *mtype = is_x ? H5T_NATIVE_UINT8 : H5T_NATIVE_INT32;
  } else {
    *ftype = H5T_IEEE_F32LE;
    *mtype = H5T_NATIVE_FLOAT;
  }
}

/* The source dataset with a chunk cache that keeps a source chunk across the two pieces it spans. */
static hid_t open_source(hid_t file, const char *name) {
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  hid_t dcpl = d < 0 ? -1 : H5Dget_create_plist(d), t = d < 0 ? -1 : H5Dget_type(d);
  hsize_t c[2] = {1, 1};
  int r = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED ? H5Pget_chunk(dcpl, 2, c) : 0;
  size_t chunk = r > 0 && t >= 0 ? H5Tget_size(t) * (size_t)c[0] * (r > 1 ? (size_t)c[1] : 1) : 0;
  if (t >= 0)
    H5Tclose(t);
  if (dcpl >= 0)
    H5Pclose(dcpl);
  if (chunk == 0)
    return d;
  hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
  if (dapl < 0 || H5Pset_chunk_cache(dapl, 10007, 2 * chunk + (1 << 20), 1.0) < 0) {
    if (dapl >= 0)
      H5Pclose(dapl);
    return d;
  }
  H5Dclose(d);
  d = H5Dopen2(file, name, dapl);
  H5Pclose(dapl);
  return d;
}

/* Re-lays <group>/x or y of the source into dst in chunks of `chunk` rows, piece by piece; the rows
 * read are checked against the source's hash when it has one. */
static int relay_rows(const rechunk_ctx *c, const char *group, int is_x, int narrow, hid_t dst, int64_t chunk) {
  char name[80];
  snprintf(name, sizeof name, "/%s/%s", group, is_x ? "x" : "y");
  int rank;
  int64_t dims[2] = {0, 1};
  DP_TRY(h5u_shape(c->src, name + 1, &rank, dims)); /* h5u_exists takes relative paths */
  hid_t ftype, mtype;
  canonical_type(is_x, narrow, &ftype, &mtype);
  hid_t s = open_source(c->src, name);
  if (s < 0)
    return dp_fail(DP_EDATA, "%s: cannot open %s", c->in, name);
  rows_out w;
  int rc = rows_create(&w, dst, name, ftype, mtype, rank, dims, chunk);
  if (rc < 0) {
    H5Dclose(s);
    return rc;
  }
  int64_t step = piece_rows(chunk, w.row_bytes);
  void *buf = malloc((size_t)step * w.row_bytes);
  if (!buf)
    rc = dp_fail(DP_ENOMEM, "%s: no memory for %lld rows of %s", c->out, (long long)step, name);
  if (rc == 0)
    rc = copy_attrs(s, w.d, c->in, name);
  for (int64_t lo = 0; rc == 0 && lo < dims[0]; lo += step) {
    int64_t n = dims[0] - lo < step ? dims[0] - lo : step;
    hsize_t start[2] = {(hsize_t)lo, 0}, count[2] = {(hsize_t)n, (hsize_t)w.cols};
    hid_t fs = H5Dget_space(s), ms = H5Screate_simple(rank, count, NULL);
    herr_t st = fs < 0 || ms < 0 ? -1 : H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (st >= 0)
      st = H5Dread(s, mtype, ms, fs, H5P_DEFAULT, buf);
    if (ms >= 0)
      H5Sclose(ms);
    if (fs >= 0)
      H5Sclose(fs);
    rc = st < 0 ? dp_fail(DP_EDATA, "%s: %s: reading rows %lld..%lld failed (checksum mismatch or damaged data)",
                          c->in, name, (long long)lo, (long long)(lo + n - 1))
                : rows_put(&w, buf, n);
  }
  free(buf);
  uint64_t got;
  int frc = rows_finish(&w, rc == 0, &got);
  int has = 0;
  int64_t want = 0;
  if (rc == 0 && frc == 0 && h5u_attr_exists(s, H5U_HASH_ATTR, &has) == 0 && has &&
      (h5u_get_i64(s, H5U_HASH_ATTR, &want) < 0 || (uint64_t)want != got))
    rc = dp_fail(DP_EDATA, "%s: %s: the rows read do not match the stored hash (damaged file: a chunk or the "
                 "chunk index)", c->in, name);
  H5Dclose(s);
  return rc < 0 ? rc : frc;
}

/* Copies group `path` of the source onto dst: its attributes, and every member but those in skip
 * (NULL-terminated) as it is (extra datasets such as statistics, groups of other names). */
static int copy_group(const rechunk_ctx *c, const char *path, hid_t dst, const char *const *skip) {
  hid_t g = H5Gopen2(c->src, path, H5P_DEFAULT);
  if (g < 0)
    return dp_fail(DP_EDATA, "%s: cannot open the group %s", c->in, path);
  int rc = copy_attrs(g, dst, c->in, path);
  H5G_info_t gi;
  if (rc == 0 && H5Gget_info(g, &gi) < 0)
    rc = dp_fail(DP_EDATA, "%s: cannot list the group %s", c->in, path);
  for (hsize_t i = 0; rc == 0 && i < gi.nlinks; i++) {
    char name[256];
    if (H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT) < 0) {
      rc = dp_fail(DP_EDATA, "%s: cannot list the group %s", c->in, path);
      break;
    }
    int skipped = 0;
    for (const char *const *s = skip; *s; s++)
      skipped |= !strcmp(*s, name);
    if (!skipped && H5Ocopy(g, name, dst, name, H5P_DEFAULT, H5P_DEFAULT) < 0)
      rc = dp_fail(DP_EHDF5, "%s: cannot copy %s%s%s (HDF5 H5Ocopy failed)", c->in, path, strcmp(path, "/") ? "/" : "",
                   name);
  }
  H5Gclose(g);
  return rc;
}

/* One split: its group's attributes and other members copied, x and y re-laid. */
static int rechunk_split(const rechunk_ctx *c, hid_t out, const char *group) {
  dp_dataset ds;
  int found = 0;
  DP_TRY(dp_dataset_open(&ds, c->in, group, strcmp(group, "train") ? &found : NULL));
  if (strcmp(group, "train") && !found)
    return 0;
  int64_t chunk = chunk_rows(dp_row_bytes(ds.d, ds.x_u8), c->chunk_mb);
  int x_u8 = ds.x_u8, labels = ds.has_labels;
  dp_dataset_close(&ds); /* HDF5 would read through its chunk caches, which are sized for training */
  hid_t g = -1;
  int rc = h5u_group(out, group, &g);
  char path[80];
  snprintf(path, sizeof path, "/%s", group);
  static const char *const split_members[] = {"x", "y", NULL};
  if (rc == 0)
    rc = copy_group(c, path, g, split_members);
  if (rc == 0)
    rc = relay_rows(c, group, 1, x_u8, out, chunk);
  if (rc == 0)
    rc = relay_rows(c, group, 0, labels, out, chunk);
  if (g >= 0)
    H5Gclose(g);
  return rc;
}

static int fill_rechunk(const char *tmp, void *arg) {
  rechunk_ctx *c = arg;
  h5u_outfile o;
  DP_TRY(h5u_out_create(&o, tmp, c->bytes));
  static const char *const splits[] = {"train", "test", "val", NULL};
  int rc = copy_group(c, "/", o.f, splits);
  for (const char *const *g = splits; rc == 0 && *g; g++)
    rc = rechunk_split(c, o.f, *g);
  int wrc = h5u_out_close(&o, tmp, rc == 0);
  return keep_message(rc < 0 ? rc : wrc);
}

/* Adds what split `group` of `in` takes as rechunk writes it (nothing when it is absent) to *bytes,
 * after the checks training makes; *rows and *row_bytes get the training split's. */
static int split_size(const char *in, const char *group, double *bytes, int64_t *rows, size_t *row_bytes) {
  dp_dataset ds;
  int train = !strcmp(group, "train"), found = train;
  DP_TRY(dp_dataset_open(&ds, in, group, train ? NULL : &found));
  if (found)
    *bytes += dp_dataset_mem_bytes(&ds, ds.n);
  if (train) {
    *rows = ds.n;
    *row_bytes = dp_row_bytes(ds.d, ds.x_u8);
  }
  dp_dataset_close(&ds);
  return 0;
}

int dp_convert_rechunk(const char *in, const char *out, double chunk_mb) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  rechunk_ctx c = {in, out, chunk_mb > 0 ? chunk_mb : DEFAULT_CHUNK_MB, -1, 0};
  int64_t rows = 0;
  size_t row = 0;
  static const char *const splits[] = {"train", "test", "val"};
  for (int i = 0; i < 3; i++)
    DP_TRY(split_size(in, splits[i], &c.bytes, &rows, &row));
  struct stat st;
  if (stat(in, &st) == 0 && (double)st.st_size > c.bytes)
    c.bytes = (double)st.st_size; /* the extra objects copied as they are */
  c.src = H5Fopen(in, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (c.src < 0)
    return dp_fail(DP_EDATA, "%s: HDF5 cannot open the file (damaged or truncated?)", in);
  int rc = dp_write_durable(out, "the data file", fill_rechunk, &c);
  H5Fclose(c.src);
  int64_t chunk = chunk_rows(row, c.chunk_mb);
  if (chunk > rows)
    chunk = rows;
  if (rc == 0)
    printf("%s: /train/x in chunks of %lld rows (%.2f MB)\n", out, (long long)chunk, (double)chunk * (double)row / 1e6);
  return rc;
}

/* ---- synthetic ---- */

/* Each class is a mixture of SYNTH_SUBS Gaussian clusters: the classes are not linearly separable, so
 * a hidden layer pays. The cluster centres are N(0, SYNTH_SEP^2 / D) per feature, the noise unit: two
 * centres lie about SYNTH_SEP * sqrt(2) apart whatever D, which sets how often a row lies nearer
 * another class's cluster than its own (the accuracy no model can pass). */
#define SYNTH_SUBS 4
#define SYNTH_SEP 3.6

typedef struct {
  const dp_synth_options *o;
  float *centres; /* (classes * SYNTH_SUBS, features) */
  double *mean, *m2; /* the training split's per-feature statistics (Welford) */
} synth_ctx;

/* Noise close to N(0, 1) at one generator call per value: the sum of four 16-bit uniforms, centred
 * and scaled to unit variance (within +-3.46). Box-Muller would cost several times the writing. */
static float synth_noise(uint64_t r) {
  uint32_t s = (uint32_t)(r & 0xffff) + (uint32_t)(r >> 16 & 0xffff) + (uint32_t)(r >> 32 & 0xffff) +
               (uint32_t)(r >> 48);
  return ((float)s * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}

/* One row and its label from a stream of its own (the row's number): the data does not depend on the
 * piece or chunk sizes. */
static void synth_row(const synth_ctx *c, uint64_t stream, float *x, int32_t *label) {
  dp_rng r;
  dp_rng_seed(&r, c->o->seed, stream);
  int64_t d = c->o->features;
  int32_t k = (int32_t)dp_rng_below(&r, (uint64_t)c->o->classes);
  const float *mu = c->centres + ((size_t)k * SYNTH_SUBS + dp_rng_below(&r, SYNTH_SUBS)) * (size_t)d;
  for (int64_t j = 0; j < d; j++)
    x[j] = mu[j] + synth_noise(dp_rng_next(&r));
  *label = k;
}

static void synth_stats(synth_ctx *c, const float *x, int64_t n, int64_t seen) {
  int64_t d = c->o->features;
  for (int64_t i = 0; i < n; i++) {
    double inv = 1.0 / (double)(seen + i + 1);
    for (int64_t j = 0; j < d; j++) {
      double v = x[i * d + j], delta = v - c->mean[j];
      c->mean[j] += delta * inv;
      c->m2[j] += delta * (v - c->mean[j]);
    }
  }
}

/* One split of n rows, streams from `stream0` on, written piece by piece. */
static int synth_split(synth_ctx *c, hid_t f, const char *group, int64_t n, uint64_t stream0) {
  if (n == 0)
    return 0;
  char x[80], y[80];
  snprintf(x, sizeof x, "/%s/x", group);
  snprintf(y, sizeof y, "/%s/y", group);
  hid_t g;
  DP_TRY(h5u_group(f, group, &g));
  H5Gclose(g);
  int64_t d = c->o->features, dims[2] = {n, d};
  int64_t chunk = chunk_rows(dp_row_bytes(d, 0), c->o->chunk_mb > 0 ? c->o->chunk_mb : DEFAULT_CHUNK_MB);
  rows_out wx, wy;
  DP_TRY(rows_create(&wx, f, x, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dims, chunk));
  int rc = rows_create(&wy, f, y, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dims, chunk);
  if (rc < 0) {
    rows_finish(&wx, 0, NULL);
    return rc;
  }
  int64_t step = piece_rows(chunk, wx.row_bytes);
  float *xb = malloc((size_t)step * wx.row_bytes);
  int32_t *yb = malloc((size_t)step * sizeof *yb);
  if (!xb || !yb)
    rc = dp_fail(DP_ENOMEM, "no memory for %lld rows of %lld features", (long long)step, (long long)d);
  for (int64_t lo = 0; rc == 0 && lo < n; lo += step) {
    int64_t m = n - lo < step ? n - lo : step;
    for (int64_t i = 0; i < m; i++)
      synth_row(c, stream0 + (uint64_t)(lo + i), xb + i * d, yb + i);
    if (c->mean && !strcmp(group, "train"))
      synth_stats(c, xb, m, lo);
    rc = rows_put(&wx, xb, m);
    if (rc == 0)
      rc = rows_put(&wy, yb, m);
  }
  free(xb);
  free(yb);
  int r1 = rows_finish(&wx, rc == 0, NULL), r2 = rows_finish(&wy, rc == 0, NULL);
  return rc < 0 ? rc : r1 < 0 ? r1 : r2;
}

/* /train/x_mean and /train/x_std, as dp_data_write stores them. */
static int synth_write_stats(synth_ctx *c, hid_t f) {
  int64_t d = c->o->features, dims[2] = {d, 1};
  for (int64_t j = 0; j < d; j++)
    c->m2[j] = sqrt(c->m2[j] / (double)c->o->rows);
  const char *names[2] = {"/train/x_mean", "/train/x_std"};
  const double *vals[2] = {c->mean, c->m2};
  for (int i = 0; i < 2; i++) {
    DP_TRY(h5u_write(f, names[i], H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, vals[i], 1, dims, &data_layout));
    DP_TRY(h5u_write_hash(f, names[i], vals[i], sizeof(double) * (size_t)d));
  }
  return 0;
}

static int fill_synthetic(const char *tmp, void *arg) {
  synth_ctx *c = arg;
  const dp_synth_options *o = c->o;
  double bytes = (double)(o->rows + o->test_rows) * ((double)dp_row_bytes(o->features, 0) + 4.0);
  h5u_outfile out;
  DP_TRY(h5u_out_create(&out, tmp, bytes));
  int rc = synth_split(c, out.f, "train", o->rows, 0);
  if (rc == 0)
    rc = synth_write_stats(c, out.f);
  if (rc == 0)
    rc = synth_split(c, out.f, "test", o->test_rows, (uint64_t)1 << 40);
  int wrc = h5u_out_close(&out, tmp, rc == 0);
  return keep_message(rc < 0 ? rc : wrc);
}

int dp_convert_synthetic(const dp_synth_options *o) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  synth_ctx c = {o, NULL, NULL, NULL};
  size_t nc = (size_t)o->classes * SYNTH_SUBS * (size_t)o->features;
  c.centres = malloc(nc * sizeof *c.centres);
  c.mean = calloc((size_t)o->features, sizeof *c.mean);
  c.m2 = calloc((size_t)o->features, sizeof *c.m2);
  int rc = c.centres && c.mean && c.m2 ? 0 : dp_fail(DP_ENOMEM, "%s: no memory for the cluster centres", o->out);
  dp_rng r;
  dp_rng_seed(&r, o->seed, (uint64_t)1 << 41); /* a stream no row uses */
  double sd = SYNTH_SEP / sqrt((double)o->features);
  for (size_t i = 0; rc == 0 && i < nc; i++)
    c.centres[i] = (float)(sd * dp_rng_normal(&r));
  if (rc == 0)
    rc = dp_write_durable(o->out, "the data file", fill_synthetic, &c);
  free(c.centres);
  free(c.mean);
  free(c.m2);
  return rc;
}
