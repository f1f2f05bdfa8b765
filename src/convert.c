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

/* A checksummed chunk is read and verified whole, so a shuffled row read from the file costs its chunk:
 * 64 KiB chunks keep that near the cost of the row itself while the checksums stay cheap to store. */
static int64_t chunk_rows(size_t row_bytes) {
  int64_t r = (int64_t)((64u << 10) / (row_bytes ? row_bytes : 1));
  return r > 0 ? r : 1;
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
  lx.chunk_rows = chunk_rows(dp_row_bytes(v->d, v->x_u8));
  ly.chunk_rows = chunk_rows(4 * (size_t)(v->labels ? 1 : v->k));
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
  h5u_memfile m; /* built in memory: HDF5 cannot recover from a write that fails on a full disk */
  DP_TRY(h5u_mem_create(&m, tmp, H5P_DEFAULT, bytes * 1.01 + (1 << 16)));
  int rc = write_split(m.f, "train", v->train);
  if (rc == 0 && v->test)
    rc = write_split(m.f, "test", v->test);
  int wrc = h5u_mem_close(&m, tmp, rc == 0);
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
  printf("%s: /train/x has mean %.4f and std %.4f (set [data] mean and std to them to standardise the inputs)\n",
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
