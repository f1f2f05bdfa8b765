/* Data files: IDX and CSV conversion round trips, dp_data_write + open/load/gather in memory and
 * streaming modes, label range and finiteness checks, and the errors for bad inputs (each must be
 * a negative code whose one-line message names the file, and the dataset where there is one). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "dptrain/data.h"
#include "dptrain/error.h"

static char dir[64];

/* dir/name in one of 8 rotating buffers, so a call may take several paths. */
static const char *P(const char *name) {
  static char buf[8][512];
  static int i;
  i = (i + 1) % 8;
  snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
  return buf[i];
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* IDX file: magic 00 00 08 m3, big-endian dims, then nbytes of data (gzip'd when gz). */
static void write_idx(const char *path, int gz, int m2, int m3, const uint32_t *dims, int ndims, const uint8_t *data,
                      size_t nbytes) {
  uint8_t head[4 + 4 * 8] = {0, 0, (uint8_t)m2, (uint8_t)m3};
  for (int i = 0; i < ndims; i++)
    for (int b = 0; b < 4; b++)
      head[4 + 4 * i + b] = (uint8_t)(dims[i] >> (24 - 8 * b));
  gzFile g = gzopen(path, gz ? "wb" : "wbT");
  assert_non_null(g);
  assert_int_equal(gzwrite(g, head, 4 + 4 * (unsigned)ndims), 4 + 4 * ndims);
  if (nbytes)
    assert_int_equal(gzwrite(g, data, (unsigned)nbytes), (int)nbytes);
  gzclose(g);
}

/* rc must be `code` and the message must contain every given string (NULL-terminated list). */
static void expect_err(int rc, int code, ...) {
  const char *msg = dp_errmsg(rc);
  if (rc != code)
    fail_msg("rc %d (%s), expected %d", rc, msg, code);
  va_list ap;
  va_start(ap, code);
  for (const char *s; (s = va_arg(ap, const char *));)
    if (!strstr(msg, s))
      fail_msg("message \"%s\" does not contain \"%s\"", msg, s);
  va_end(ap);
}

static int setup(void **state) {
  (void)state;
  strcpy(dir, "/tmp/dptrain-data-XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  DIR *d = opendir(dir);
  for (struct dirent *e; d && (e = readdir(d));)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      unlink(P(e->d_name));
  if (d)
    closedir(d);
  return rmdir(dir);
}

enum { NI = 7, NT = 2, PIX = 12 };

static void make_idx_pair(const char *img, const char *lab, int gz, int n, int off) {
  uint8_t x[NI * PIX], y[NI];
  for (int i = 0; i < n; i++) {
    y[i] = (uint8_t)((i * 3 + off) % 10);
    for (int j = 0; j < PIX; j++)
      x[i * PIX + j] = (uint8_t)(((i + off) * 31 + j * 29) % 256);
  }
  write_idx(img, gz, 8, 3, (uint32_t[]){(uint32_t)n, 3, 4}, 3, x, (size_t)n * PIX);
  write_idx(lab, gz, 8, 1, (uint32_t[]){(uint32_t)n}, 1, y, (size_t)n);
}

static void check_idx_split(const char *path, const char *group, int n, int off) {
  dp_dataset ds;
  assert_int_equal(dp_dataset_open(&ds, path, group, 0), NULL);
  assert_int_equal(ds.n, n);
  assert_int_equal(ds.d, PIX);
  assert_int_equal(ds.x_u8, 1);
  assert_true(ds.scale == 1.0f / 255.0f);
  assert_int_equal(ds.has_labels, 1);
  assert_int_equal(ds.k, 1);
  int64_t rows[NI];
  float x[NI * PIX], xs[NI * PIX];
  int32_t y[NI], ys[NI];
  for (int i = 0; i < n; i++)
    rows[i] = i;
  assert_int_equal(dp_dataset_gather(&ds, rows, n, xs, ys, NULL), 0); /* streaming */
  assert_int_equal(dp_dataset_load(&ds, 0, n), 0);
  assert_int_equal(dp_dataset_gather(&ds, rows, n, x, y, NULL), 0);
  for (int i = 0; i < n; i++) {
    assert_int_equal(y[i], (i * 3 + off) % 10);
    assert_int_equal(ys[i], y[i]);
    for (int j = 0; j < PIX; j++) {
      float want = (float)(uint8_t)(((i + off) * 31 + j * 29) % 256) * (1.0f / 255.0f);
      assert_true(x[i * PIX + j] == want);
      assert_true(xs[i * PIX + j] == want);
    }
  }
  int32_t lo, hi, wlo = 99, whi = -1;
  for (int i = 0; i < n; i++) {
    wlo = y[i] < wlo ? y[i] : wlo;
    whi = y[i] > whi ? y[i] : whi;
  }
  assert_int_equal(dp_dataset_label_range(&ds, 0, n, &lo, &hi), 0);
  assert_true(lo == wlo && hi == whi);
  assert_int_equal(dp_dataset_check_finite(&ds, 0, n), 0); /* uint8: trivially finite */
  /* The raw bytes, straight from HDF5. */
  char name[32];
  snprintf(name, sizeof name, "/%s/x", group);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), dx = H5Dopen2(f, name, H5P_DEFAULT);
  uint8_t raw[NI * PIX];
  assert_true(H5Dread(dx, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) >= 0);
  hid_t dcpl = H5Dget_create_plist(dx); /* h5u_write's chunks, each with its Fletcher32 checksum */
  assert_int_equal(H5Pget_layout(dcpl), H5D_CHUNKED);
  assert_int_equal(H5Pget_nfilters(dcpl), 1);
  unsigned flags;
  size_t nvals = 0;
  assert_int_equal(H5Pget_filter2(dcpl, 0, &flags, &nvals, NULL, 0, NULL, NULL), H5Z_FILTER_FLETCHER32);
  H5Pclose(dcpl);
  assert_int_equal(dp_row_bytes(ds.d, ds.x_u8), PIX);
  for (int i = 0; i < n * PIX; i++)
    assert_int_equal(raw[i], ((i / PIX + off) * 31 + (i % PIX) * 29) % 256);
  H5Dclose(dx);
  H5Fclose(f);
  dp_dataset_close(&ds);
}

static void test_idx_round_trip(void **state) {
  (void)state;
  make_idx_pair(P("tr-img.gz"), P("tr-lab.gz"), 1, NI, 0);
  make_idx_pair(P("te-img.gz"), P("te-lab.gz"), 1, NT, 5);
  assert_int_equal(dp_convert_idx(P("tr-img.gz"), P("tr-lab.gz"), P("te-img.gz"), P("te-lab.gz"), P("idx.h5")), 0);
  assert_false(exists(P("idx.h5.tmp")));
  check_idx_split(P("idx.h5"), "train", NI, 0);
  check_idx_split(P("idx.h5"), "test", NT, 5);
  /* Plain (not gzip'd) files, no test split. */
  make_idx_pair(P("tr-img"), P("tr-lab"), 0, NI, 0);
  assert_int_equal(dp_convert_idx(P("tr-img"), P("tr-lab"), NULL, NULL, P("plain.h5")), 0);
  check_idx_split(P("plain.h5"), "train", NI, 0);
  dp_dataset ds;
  int found = -1;
  assert_int_equal(dp_dataset_open(&ds, P("plain.h5"), "test", &found), NULL);
  assert_int_equal(found, 0);
  dp_dataset_close(&ds);
}

static void test_idx_errors(void **state) {
  (void)state;
  uint8_t x[NI * PIX] = {0}, y[NI] = {0};
  char out[512]; /* P's buffers rotate */
  strcpy(out, P("bad.h5"));
  make_idx_pair(P("ok-img.gz"), P("ok-lab.gz"), 1, NI, 0);
  write_idx(P("magic.gz"), 1, 9, 3, (uint32_t[]){NI, 3, 4}, 3, x, sizeof x);
  expect_err(dp_convert_idx(P("magic.gz"), P("ok-lab.gz"), NULL, NULL, out), DP_EDATA, P("magic.gz"), "magic", NULL);
  write_idx(P("dims.gz"), 1, 8, 2, (uint32_t[]){NI, 12}, 2, x, sizeof x);
  expect_err(dp_convert_idx(P("dims.gz"), P("ok-lab.gz"), NULL, NULL, out), DP_EDATA, P("dims.gz"),
             "expected 3 dimensions, found 2", NULL);
  write_idx(P("short.gz"), 1, 8, 3, (uint32_t[]){NI, 3, 4}, 3, x, sizeof x - 5);
  expect_err(dp_convert_idx(P("short.gz"), P("ok-lab.gz"), NULL, NULL, out), DP_EDATA, P("short.gz"), "truncated",
             NULL);
  write_idx(P("short-lab"), 0, 8, 1, (uint32_t[]){NI}, 1, y, NI - 1);
  expect_err(dp_convert_idx(P("ok-img.gz"), P("short-lab"), NULL, NULL, out), DP_EDATA, P("short-lab"), "truncated",
             NULL);
  write_idx(P("six-lab.gz"), 1, 8, 1, (uint32_t[]){NI - 1}, 1, y, NI - 1);
  expect_err(dp_convert_idx(P("ok-img.gz"), P("six-lab.gz"), NULL, NULL, out), DP_EDATA, P("six-lab.gz"),
             P("ok-img.gz"), NULL);
  /* A bad test pair fails the whole conversion too. */
  expect_err(dp_convert_idx(P("ok-img.gz"), P("ok-lab.gz"), P("ok-img.gz"), P("six-lab.gz"), out), DP_EDATA,
             P("six-lab.gz"), NULL);
  expect_err(dp_convert_idx(P("nope.gz"), P("ok-lab.gz"), NULL, NULL, out), DP_EDATA, P("nope.gz"), NULL);
  assert_false(exists(out));
  assert_false(exists(P("bad.h5.tmp")));
}

static dp_csv_options csv_opts(const char *train, const char *test, int label_col, int header, int regression) {
  return (dp_csv_options){.train_csv = train, .test_csv = test, .label_col = label_col, .header = header,
                          .regression = regression, .scale = 1.0f, .out = P("csv.h5")};
}

static void test_csv(void **state) {
  (void)state;
  write_text(P("last.csv"), "a,b,c,label\n1,2.5,-3,2\n\n4, 5,6e-1,0\r\n7,8,9,1\n");
  write_text(P("first.csv"), "2,1,2.5,-3\n0,4,5,0.6\n1,7,8,9\n");
  write_text(P("test.csv"), "x,y,z,l\n0.5,0.25,1,3\n");
  const float want_x[3][3] = {{1, 2.5f, -3}, {4, 5, 6e-1f}, {7, 8, 9}};
  const float want_y[3] = {2, 0, 1};
  int64_t rows[3] = {0, 1, 2};
  float x[9], t[3];
  int32_t y[3];
  for (int mode = 0; mode < 3; mode++) { /* label last + test file, label first, regression */
    dp_csv_options o = mode == 0   ? csv_opts(P("last.csv"), P("test.csv"), -1, 1, 0)
                       : mode == 1 ? csv_opts(P("first.csv"), NULL, 0, 0, 0)
                                   : csv_opts(P("last.csv"), NULL, 3, 1, 1);
    assert_int_equal(dp_convert_csv(&o), 0);
    dp_dataset ds;
    assert_int_equal(dp_dataset_open(&ds, o.out, "train", 0), NULL);
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.d, 3);
    assert_int_equal(ds.x_u8, 0);
    assert_true(ds.scale == 1.0f);
    assert_int_equal(ds.has_labels, mode != 2);
    assert_int_equal(ds.k, 1);
    assert_int_equal(dp_dataset_gather(&ds, rows, 3, x, mode != 2 ? y : NULL, mode == 2 ? t : NULL), 0);
    for (int i = 0; i < 3; i++) {
      if (mode == 2)
        assert_true(t[i] == want_y[i]);
      else
        assert_int_equal(y[i], (int)want_y[i]);
      for (int j = 0; j < 3; j++)
        assert_true(x[i * 3 + j] == want_x[i][j]);
    }
    dp_dataset_close(&ds);
    int found = -1;
    assert_int_equal(dp_dataset_open(&ds, o.out, "test", &found), NULL);
    assert_int_equal(found, mode == 0);
    if (mode == 0) {
      assert_int_equal(ds.n, 1);
      assert_int_equal(dp_dataset_gather(&ds, rows, 1, x, y, NULL), 0);
      assert_true(x[0] == 0.5f && x[1] == 0.25f && x[2] == 1.0f);
      assert_int_equal(y[0], 3);
    }
    dp_dataset_close(&ds);
  }
  remove(P("csv.h5"));
  write_text(P("word.csv"), "1,2,3\n4,five,6\n");
  dp_csv_options o = csv_opts(P("word.csv"), NULL, -1, 0, 0);
  expect_err(dp_convert_csv(&o), DP_EDATA, P("word.csv:2"), "field 2", NULL);
  write_text(P("ragged.csv"), "h\n1,2,3\n4,5,6\n7,8\n");
  o = csv_opts(P("ragged.csv"), NULL, -1, 1, 0);
  expect_err(dp_convert_csv(&o), DP_EDATA, P("ragged.csv:4"), "columns", NULL);
  write_text(P("empty.csv"), "");
  o = csv_opts(P("empty.csv"), NULL, -1, 0, 0);
  expect_err(dp_convert_csv(&o), DP_EDATA, P("empty.csv"), "no data rows", NULL);
  write_text(P("frac.csv"), "1,2,0.5\n");
  o = csv_opts(P("frac.csv"), NULL, -1, 0, 0);
  expect_err(dp_convert_csv(&o), DP_EDATA, P("frac.csv:1"), "label", NULL);
  o = csv_opts(P("last.csv"), P("first.csv"), -1, 1, 0); /* test's header line counts as data: still ok */
  o.test_csv = P("ragged.csv");
  expect_err(dp_convert_csv(&o), DP_EDATA, P("ragged.csv"), NULL);
  assert_false(exists(P("csv.h5")));
  assert_false(exists(P("csv.h5.tmp")));
}

/* The shapes of CSV files users have: each gives the same 2 rows (features 1.5, 2 and 3, 4; labels
 * 0 and 1), and a missing value names its line and field. */
static void test_csv_shapes(void **state) {
  (void)state;
  const char *shapes[] = {
      "1.5,2,0\n3,4,1\n",                       /* plain */
      "1.5,2,0\r\n3,4,1\r\n",                   /* CRLF */
      "1.5,2,0\n3,4,1",                          /* no final newline */
      "\n1.5,2,0\n\n  \n3,4,1\n\n",               /* blank lines */
      "\"1.5\",\"2\",\"0\"\n\"3\", 4 ,\"1\"\n",      /* quoted fields, spaces */
      "x1,x2,label\n1.5,2,0\n3,4,1\n",           /* a header without --header */
      "\"x 1\";\"x;2\";y\r\n1,5;2;0\r\n3;4;1\r\n", /* semicolons, decimal commas, quoted header */
      "1.5\t2\t0\n3\t 4\t1\n",                   /* tabs */
      " 1.5 , 2 , 0 \n 3 ,4, 1\n",               /* spaces around values */
  };
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    write_text(P("shape.csv"), shapes[i]);
    dp_csv_options o = csv_opts(P("shape.csv"), NULL, -1, 0, 0);
    int rc = dp_convert_csv(&o);
    if (rc != 0)
      fail_msg("shape %zu: %s", i, dp_errmsg(rc));
    dp_dataset ds;
    assert_int_equal(dp_dataset_open(&ds, o.out, "train", NULL), 0);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.d, 2);
    int64_t rows[2] = {0, 1};
    float x[4];
    int32_t y[2];
    assert_int_equal(dp_dataset_gather(&ds, rows, 2, x, y, NULL), 0);
    if (!(x[0] == 1.5f && x[1] == 2 && x[2] == 3 && x[3] == 4 && y[0] == 0 && y[1] == 1))
      fail_msg("shape %zu: x %g %g %g %g, y %d %d", i, x[0], x[1], x[2], x[3], y[0], y[1]);
    dp_dataset_close(&ds);
  }
  write_text(P("gap.csv"), "1,2,0\n3,,1\n");
  dp_csv_options o = csv_opts(P("gap.csv"), NULL, -1, 0, 0);
  expect_err(dp_convert_csv(&o), DP_EDATA, P("gap.csv:2"), "field 2 (column 2) is empty: a missing value", NULL);
  write_text(P("gap.csv"), "1;2;0\n3;4;\n");
  expect_err(dp_convert_csv(&o), DP_EDATA, P("gap.csv:2"), "field 3 (column 3) is empty", NULL);
  write_text(P("gap.csv"), "\"1\"x,2,0\n");
  expect_err(dp_convert_csv(&o), DP_EDATA, P("gap.csv:1"), "field 1: text after a closing quote", NULL);
  remove(P("csv.h5"));
}

enum { N = 10, D = 3, K = 2 };

static void test_write_gather(void **state) {
  (void)state;
  float x[N * D], t[N * K];
  for (int i = 0; i < N * D; i++)
    x[i] = (float)i * 0.5f - 3.0f;
  for (int i = 0; i < N * K; i++)
    t[i] = (float)i * -0.25f;
  dp_split_view v = {.n = N, .d = D, .x = x, .scale = 2.0f, .targets = t, .k = K};
  assert_int_equal(dp_data_write(P("f.h5"), &v, NULL), 0);
  assert_false(exists(P("f.h5.tmp")));
  dp_dataset s, m, p;
  assert_int_equal(dp_dataset_open(&s, P("f.h5"), "train", 0), NULL);
  assert_int_equal(dp_dataset_open(&m, P("f.h5"), "train", 0), NULL);
  assert_int_equal(dp_dataset_open(&p, P("f.h5"), "train", 0), NULL);
  assert_int_equal(s.n, N);
  assert_int_equal(s.d, D);
  assert_int_equal(s.x_u8, 0);
  assert_int_equal(s.has_labels, 0);
  assert_int_equal(s.k, K);
  assert_true(s.scale == 2.0f);
  assert_int_equal(dp_dataset_load(&m, 0, N), 0);
  assert_int_equal(dp_dataset_load(&p, 3, 7), 0);
  /* Non-consecutive rows, consecutive runs, repeats, rows on both sides of p's [3, 7). */
  const int64_t rows[] = {9, 2, 3, 4, 5, 6, 7, 8, 0, 0, 1, 6, 2, 7};
  enum { R = sizeof rows / sizeof rows[0] };
  float xs[R * D], xm[R * D], xp[R * D], ts[R * K], tm[R * K], tp[R * K];
  assert_int_equal(dp_dataset_gather(&s, rows, R, xs, NULL, ts), 0);
  assert_int_equal(dp_dataset_gather(&m, rows, R, xm, NULL, tm), 0);
  assert_int_equal(dp_dataset_gather(&p, rows, R, xp, NULL, tp), 0);
  for (int i = 0; i < R; i++) {
    for (int j = 0; j < D; j++) {
      float want = x[rows[i] * D + j] * 2.0f;
      if (xs[i * D + j] != want || xm[i * D + j] != want || xp[i * D + j] != want)
        fail_msg("x row %d col %d: stream %g mem %g partial %g want %g", (int)rows[i], j, xs[i * D + j],
                 xm[i * D + j], xp[i * D + j], want);
    }
    for (int j = 0; j < K; j++) {
      float want = t[rows[i] * K + j];
      assert_true(ts[i * K + j] == want && tm[i * K + j] == want && tp[i * K + j] == want);
    }
  }
  assert_int_equal(dp_dataset_check_finite(&s, 0, N), 0);
  assert_int_equal(dp_dataset_check_finite(&p, 0, N), 0);
  dp_dataset_close(&s);
  dp_dataset_close(&m);
  dp_dataset_close(&p);
}

/* [data] mean and std: the same (x·scale − mean)/std whether rows stream from the file or from memory,
 * for float and uint8 files. */
static void check_standardized(const char *path, const void *x, int u8, float scale) {
  const double mean = 0.75, sd = 0.5;
  dp_dataset s, m;
  assert_int_equal(dp_dataset_open(&s, path, "train", 0), NULL);
  assert_int_equal(dp_dataset_open(&m, path, "train", 0), NULL);
  dp_dataset_standardize(&s, mean, sd);
  dp_dataset_standardize(&m, mean, sd);
  assert_int_equal(dp_dataset_load(&m, 0, N), 0);
  const int64_t rows[] = {4, 5, 0, 9};
  float xs[4 * D], xm[4 * D];
  int32_t ls[4], lm[4];
  assert_int_equal(dp_dataset_gather(&s, rows, 4, xs, ls, NULL), 0);
  assert_int_equal(dp_dataset_gather(&m, rows, 4, xm, lm, NULL), 0);
  for (int i = 0; i < 4 * D; i++) {
    int64_t k = rows[i / D] * D + i % D;
    double raw = u8 ? ((const uint8_t *)x)[k] : ((const float *)x)[k];
    double want = (raw * scale - mean) / sd;
    assert_float_equal(xs[i], want, 1e-5 * (1.0 + fabs(want)));
    assert_float_equal(xm[i], want, 1e-5 * (1.0 + fabs(want)));
  }
  dp_dataset_close(&s);
  dp_dataset_close(&m);
}

static void test_standardize(void **state) {
  (void)state;
  float xf[N * D];
  uint8_t xb[N * D];
  int32_t lab[N];
  for (int i = 0; i < N * D; i++) {
    xf[i] = (float)i * 0.5f - 3.0f;
    xb[i] = (uint8_t)(i * 7);
  }
  for (int i = 0; i < N; i++)
    lab[i] = i % 3;
  dp_split_view vf = {.n = N, .d = D, .x = xf, .scale = 2.0f, .labels = lab, .k = 1};
  dp_split_view vb = {.n = N, .d = D, .x_u8 = 1, .x = xb, .scale = 1.0f / 255.0f, .labels = lab, .k = 1};
  assert_int_equal(dp_data_write(P("sf.h5"), &vf, NULL), 0);
  assert_int_equal(dp_data_write(P("sb.h5"), &vb, NULL), 0);
  check_standardized(P("sf.h5"), xf, 0, 2.0f);
  check_standardized(P("sb.h5"), xb, 1, 1.0f / 255.0f);
}

static void test_label_range_and_finite(void **state) {
  (void)state;
  float x[N * D] = {0};
  int32_t lab[N] = {4, 7, 5, 9, 6, 5, 2, 8, 5, 3};
  x[6 * D + 2] = NAN;
  dp_split_view v = {.n = N, .d = D, .x = x, .scale = 1.0f, .labels = lab, .k = 1};
  assert_int_equal(dp_data_write(P("nan.h5"), &v, NULL), 0);
  dp_dataset ds;
  assert_int_equal(dp_dataset_open(&ds, P("nan.h5"), "train", 0), NULL);
  int32_t lo, hi;
  assert_int_equal(dp_dataset_label_range(&ds, 0, N, &lo, &hi), 0);
  assert_true(lo == 2 && hi == 9);
  assert_int_equal(dp_dataset_label_range(&ds, 1, 3, &lo, &hi), 0);
  assert_true(lo == 5 && hi == 7);
  /* A training set read from the file is checked as its rows are read, not up front. */
  assert_int_equal(dp_dataset_check_finite(&ds, 0, N), 0);
  int64_t rows[3] = {1, 6, 7};
  float got[4 * D];
  int32_t gl[4];
  expect_err(dp_dataset_gather(&ds, rows, 3, got, gl, NULL), DP_EDATA, P("nan.h5"), "/train/x", "row 6, column 2",
             "NaN", NULL);
  expect_err(dp_dataset_read_block(&ds, 4, 4, got, gl, NULL), DP_EDATA, "row 6, column 2", NULL);
  assert_int_equal(dp_dataset_load(&ds, 4, 8), 0); /* the same from memory */
  assert_int_equal(dp_dataset_label_range(&ds, 4, 8, &lo, &hi), 0);
  assert_true(lo == 2 && hi == 8);
  expect_err(dp_dataset_check_finite(&ds, 4, 8), DP_EDATA, "row 6, column 2", NULL);
  dp_dataset_close(&ds);
}

/* /train with x (rank, dims, type) and optionally y (rank, dims, type); xrank 0: no x. */
static void make_h5(const char *path, int xrank, hsize_t x0, hsize_t x1, hid_t xt, int yrank, hsize_t y0, hid_t yt) {
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), g = H5Gcreate2(f, "train", 0, 0, 0);
  hsize_t xd[2] = {x0, x1}, yd[2] = {y0, 1};
  if (xrank) {
    hid_t sp = H5Screate_simple(xrank, xd, NULL);
    H5Dclose(H5Dcreate2(g, "x", xt, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(sp);
  }
  if (yrank) {
    hid_t sp = H5Screate_simple(yrank, yd, NULL);
    H5Dclose(H5Dcreate2(g, "y", yt, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(sp);
  }
  H5Gclose(g);
  H5Fclose(f);
}

static void bad_open(const char *path, const char *group, const char *s1, const char *s2) {
  dp_dataset ds;
  expect_err(dp_dataset_open(&ds, path, group, NULL), DP_EDATA, path, s1, s2, NULL);
  dp_dataset_close(&ds);
}

static void test_bad_files(void **state) {
  (void)state;
  write_text(P("text.h5"), "not hdf5 at all\n");
  bad_open(P("text.h5"), "train", "not an HDF5 file", NULL);
  bad_open(P("missing.h5"), "train", "cannot open", NULL);
  hid_t f = H5Fcreate(P("nogroup.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  H5Fclose(f);
  bad_open(P("nogroup.h5"), "train", "/train", NULL);
  dp_dataset ds;
  int found = -1;
  assert_int_equal(dp_dataset_open(&ds, P("nogroup.h5"), "test", &found), NULL);
  assert_int_equal(found, 0);
  assert_true(ds.h5_file < 0); /* closed: nothing to read */
  dp_dataset_close(&ds);
  make_h5(P("nox.h5"), 0, 0, 0, 0, 1, 5, H5T_STD_I32LE);
  bad_open(P("nox.h5"), "train", "/train/x", NULL);
  found = -1; /* a group that is there but broken is an error even when optional */
  expect_err(dp_dataset_open(&ds, P("nox.h5"), "train", &found), DP_EDATA, P("nox.h5"), "/train/x", NULL);
  assert_int_equal(found, 0);
  assert_true(ds.h5_file < 0 && ds.h5_x < 0 && ds.h5_y < 0); /* a failed open cleans up after itself */
  dp_dataset_close(&ds);
  make_h5(P("noy.h5"), 2, 5, 3, H5T_STD_U8LE, 0, 0, 0);
  bad_open(P("noy.h5"), "train", "/train/y", NULL);
  make_h5(P("rank1.h5"), 1, 5, 0, H5T_IEEE_F32LE, 1, 5, H5T_STD_I32LE);
  bad_open(P("rank1.h5"), "train", "/train/x", "2 dimensions");
  make_h5(P("i16.h5"), 2, 5, 3, H5T_STD_I16LE, 1, 5, H5T_STD_I32LE);
  bad_open(P("i16.h5"), "train", "/train/x", "uint8 or float32");
  make_h5(P("f64.h5"), 2, 5, 3, H5T_IEEE_F64LE, 1, 5, H5T_STD_I32LE);
  bad_open(P("f64.h5"), "train", "/train/x", "uint8 or float32");
  make_h5(P("i8.h5"), 2, 5, 3, H5T_STD_I8LE, 1, 5, H5T_STD_I32LE);
  bad_open(P("i8.h5"), "train", "/train/x", "uint8 or float32");
  make_h5(P("yrows.h5"), 2, 5, 3, H5T_STD_U8LE, 1, 4, H5T_STD_I32LE);
  bad_open(P("yrows.h5"), "train", "/train/y", "expected 5 rows");
  make_h5(P("y64.h5"), 2, 5, 3, H5T_STD_U8LE, 1, 5, H5T_STD_I64LE);
  bad_open(P("y64.h5"), "train", "/train/y", "32 bits");
  make_h5(P("zero.h5"), 2, 0, 3, H5T_IEEE_F32LE, 1, 0, H5T_STD_I32LE);
  bad_open(P("zero.h5"), "train", "/train/x", "at least one row");
  make_h5(P("ok.h5"), 2, 5, 3, H5T_STD_U8LE, 1, 5, H5T_STD_I32LE); /* the helper makes valid files too */
  assert_int_equal(dp_dataset_open(&ds, P("ok.h5"), "train", 0), NULL);
  dp_dataset_close(&ds);
}

static void test_row_bytes(void **state) {
  (void)state;
  assert_int_equal(dp_row_bytes(784, 1), 784);
  assert_int_equal(dp_row_bytes(784, 0), 784 * sizeof(float));
  assert_int_equal(dp_row_bytes(0, 0), 0);
  assert_int_equal(dp_row_bytes(3, 0), 12);
  /* What one row of x takes in the file, for both element types. */
  float xf[N * D] = {0};
  uint8_t xb[N * D] = {0};
  int32_t lab[N] = {0};
  dp_split_view vf = {.n = N, .d = D, .x = xf, .scale = 1.0f, .labels = lab, .k = 1};
  dp_split_view vb = {.n = N, .d = D, .x_u8 = 1, .x = xb, .scale = 1.0f, .labels = lab, .k = 1};
  assert_int_equal(dp_data_write(P("rf.h5"), &vf, NULL), 0);
  assert_int_equal(dp_data_write(P("rb.h5"), &vb, NULL), 0);
  const char *files[2] = {P("rf.h5"), P("rb.h5")};
  for (int i = 0; i < 2; i++) {
    dp_dataset ds;
    assert_int_equal(dp_dataset_open(&ds, files[i], "train", NULL), NULL);
    hid_t t = H5Dget_type((hid_t)ds.h5_x);
    assert_int_equal(dp_row_bytes(ds.d, ds.x_u8), H5Tget_size(t) * D);
    H5Tclose(t);
    dp_dataset_close(&ds);
  }
}

/* Several chunks of about 1 MiB: shuffled rows read one by one from the file (data.c opens unfiltered
 * chunked data without a chunk cache) equal the same rows from memory, across chunk boundaries. */
static void test_chunked_gather(void **state) {
  (void)state;
  enum { BN = 3001, BD = 700, BK = 2, R = 64 };
  uint8_t *xb = malloc((size_t)BN * BD);
  float *xf = malloc(sizeof(float) * BN * BD), *t = malloc(sizeof(float) * BN * BK);
  int32_t *lab = malloc(sizeof(int32_t) * BN);
  assert_true(xb && xf && t && lab);
  for (int i = 0; i < BN * BD; i++) {
    xb[i] = (uint8_t)(i * 7 + i / BD);
    xf[i] = (float)(i % 1000) * 0.25f;
  }
  for (int i = 0; i < BN; i++) {
    lab[i] = i % 10;
    t[i * BK] = (float)i, t[i * BK + 1] = -(float)i;
  }
  dp_split_view vb = {.n = BN, .d = BD, .x_u8 = 1, .x = xb, .scale = 1.0f, .labels = lab, .k = 1};
  dp_split_view vf = {.n = BN, .d = BD, .x = xf, .scale = 1.0f, .targets = t, .k = BK};
  assert_int_equal(dp_data_write(P("big.h5"), &vb, &vf), 0);
  int64_t rows[R];
  for (int i = 0; i < R; i++)
    rows[i] = (int64_t)((i * 2654435761u) % BN);
  rows[R - 1] = BN - 1;
  float *xs = malloc(sizeof(float) * R * BD), *xm = malloc(sizeof(float) * R * BD);
  float ts[R * BK], tm[R * BK];
  int32_t ls[R], lm[R];
  assert_true(xs && xm);
  for (int g = 0; g < 2; g++) {
    dp_dataset s, m;
    assert_int_equal(dp_dataset_open(&s, P("big.h5"), g ? "test" : "train", NULL), NULL);
    assert_int_equal(dp_dataset_open(&m, P("big.h5"), g ? "test" : "train", NULL), NULL);
    assert_int_equal(dp_dataset_load(&m, 0, BN), 0);
    assert_int_equal(dp_dataset_gather(&s, rows, R, xs, g ? NULL : ls, g ? ts : NULL), 0);
    assert_int_equal(dp_dataset_gather(&m, rows, R, xm, g ? NULL : lm, g ? tm : NULL), 0);
    for (int i = 0; i < R; i++) {
      for (int j = 0; j < BD; j++) {
        size_t k = (size_t)rows[i] * BD + (size_t)j;
        float want = g ? xf[k] : (float)xb[k];
        if (xs[i * BD + j] != want || xm[i * BD + j] != want)
          fail_msg("/%s/x row %lld col %d: stream %g mem %g want %g", g ? "test" : "train", (long long)rows[i], j,
                   xs[i * BD + j], xm[i * BD + j], want);
      }
      if (g)
        assert_true(ts[i * BK] == (float)rows[i] && tm[i * BK + 1] == -(float)rows[i]);
      else
        assert_true(ls[i] == rows[i] % 10 && lm[i] == ls[i]);
    }
    dp_dataset_close(&s);
    dp_dataset_close(&m);
  }
  free(xb), free(xf), free(t), free(lab), free(xs), free(xm);
}

/* A data file is written durably: a failed conversion leaves the old file and no temp file, and the
 * message names the temp file and what was being written. */
static void test_write_replaces(void **state) {
  (void)state;
  float x[N * D] = {0};
  int32_t lab[N] = {0};
  dp_split_view v = {.n = N, .d = D, .x = x, .scale = 1.0f, .labels = lab, .k = 1};
  assert_int_equal(dp_data_write(P("re.h5"), &v, NULL), 0);
  v.n = N - 1;
  assert_int_equal(dp_data_write(P("re.h5"), &v, NULL), 0);
  assert_false(exists(P("re.h5.tmp")));
  dp_dataset ds;
  assert_int_equal(dp_dataset_open(&ds, P("re.h5"), "train", NULL), NULL);
  assert_int_equal(ds.n, N - 1);
  dp_dataset_close(&ds);
  expect_err(dp_data_write(P("no-such-dir/d.h5"), &v, NULL), DP_EIO, P("no-such-dir/d.h5.tmp"), "the data file",
             NULL);
  make_idx_pair(P("wr-img"), P("wr-lab"), 0, NI, 0);
  write_text(P("wr-img"), "now too short\n");
  expect_err(dp_convert_idx(P("wr-img"), P("wr-lab"), NULL, NULL, P("re.h5")), DP_EDATA, P("wr-img"), NULL);
  assert_int_equal(dp_dataset_open(&ds, P("re.h5"), "train", NULL), NULL);
  assert_int_equal(ds.n, N - 1);
  dp_dataset_close(&ds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idx_round_trip),         cmocka_unit_test(test_idx_errors),
      cmocka_unit_test(test_csv),  cmocka_unit_test(test_csv_shapes),                    cmocka_unit_test(test_write_gather),
      cmocka_unit_test(test_label_range_and_finite), cmocka_unit_test(test_bad_files),
      cmocka_unit_test(test_standardize),            cmocka_unit_test(test_row_bytes),
      cmocka_unit_test(test_chunked_gather),         cmocka_unit_test(test_write_replaces),
  };
  return cmocka_run_group_tests_name("data", tests, setup, teardown);
}
