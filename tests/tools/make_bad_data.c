/* make_bad_data DIR
 * Writes one small HDF5 data file per way a data file can be wrong, for tests/cli/test_bad_input.sh.
 * Unless a case says otherwise a file holds /train/x (100, 20) uint8 and /train/y (100) int32
 * labels 0..4, which fits a model with 20 inputs and 5 outputs. Each file is DIR/<case>.h5:
 *   no_train     no /train group (only /other/x)
 *   no_x         /train/y only
 *   no_y         /train/x only
 *   x_rank1      /train/x is (100) uint8
 *   x_rank3      /train/x is (100, 4, 5) uint8
 *   x_int16      /train/x is int16
 *   x_f64        /train/x is float64
 *   x_zero_rows  /train/x is (0, 20), /train/y (0)
 *   x_zero_cols  /train/x is (100, 0)
 *   x_nan        /train/x is float32 with a NaN at row 37, column 3
 *   x_inf        /train/x is float32 with +Inf at row 5, column 0
 *   x_scale0     /train/x has the attribute scale = 0
 *   y_int64      /train/y is int64
 *   y_rank2_int  /train/y is (100, 1) int32
 *   y_float      /train/y is (100) float32 (regression targets, for a softmax model)
 *   y_short      /train/y has 90 rows, /train/x 100
 *   y_big        labels 0..7 (a 5-unit model needs 0..4)
 *   y_neg        labels -1..4
 *   test_dim     a good /train, but /test/x has 19 columns
 *   test_short   a good /train, but /test/y has 10 rows and /test/x 20
 *   yt_nan       /train/y is (100, 1) float32 regression targets with a NaN at row 12
 *   yt_huge      /train/y is (100, 1) float64 targets with 1e300 (beyond float32) at row 3
 *   yt_test_inf  good float32 /train/y targets; /test/y (20, 1) has -Inf at row 7
 * Prints one line and exits 1 on failure. */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define N 100
#define D 20
#define K 5

static const char *dir;
static int failed;

static void check(herr_t st, const char *file, const char *what) {
  if (st < 0 && !failed) {
    fprintf(stderr, "make_bad_data: %s: %s failed\n", file, what);
    failed = 1;
  }
}

/* Writes dataset name (rank, dims, file type ftype) from buf of memory type mtype. */
static void put(hid_t f, const char *name, hid_t ftype, hid_t mtype, int rank, const hsize_t *dims, const void *buf) {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t sp = H5Screate_simple(rank, dims, NULL);
  hid_t d = H5Dcreate2(f, name, ftype, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  check(d, name, "H5Dcreate2");
  if (d >= 0) {
    hsize_t n = 1;
    for (int i = 0; i < rank; i++)
      n *= dims[i];
    if (n > 0)
      check(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), name, "H5Dwrite");
    H5Dclose(d);
  }
  H5Sclose(sp);
  H5Pclose(lcpl);
}

static hid_t create(const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.h5", dir, name);
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  check(f, path, "H5Fcreate");
  return f;
}

static uint8_t xu8[N * D];
static float xf[N * D];
static double xd[N * D];
static int16_t xi16[N * D];
static int32_t labels[N];
static int64_t labels64[N];
static float targets[N];

/* The usual /<group>/x uint8 (n, d) and /<group>/y int32 (ny). */
static void put_xy(hid_t f, const char *group, hsize_t n, hsize_t d, hsize_t ny) {
  char x[64], y[64];
  snprintf(x, sizeof x, "/%s/x", group);
  snprintf(y, sizeof y, "/%s/y", group);
  hsize_t dx[2] = {n, d}, dy[1] = {ny};
  put(f, x, H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dx, xu8);
  put(f, y, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dy, labels);
}

static void put_y(hid_t f) {
  hsize_t dy[1] = {N};
  put(f, "/train/y", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dy, labels);
}

static void done(hid_t f) {
  if (f >= 0)
    check(H5Fclose(f), "file", "H5Fclose");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: make_bad_data DIR\n");
    return 2;
  }
  dir = argv[1];
  for (int i = 0; i < N * D; i++) {
    xu8[i] = (uint8_t)(i * 37 % 256);
    xf[i] = xu8[i] / 255.0f;
    xd[i] = xf[i];
    xi16[i] = (int16_t)xu8[i];
  }
  for (int i = 0; i < N; i++) {
    labels[i] = i % K;
    labels64[i] = i % K;
    targets[i] = (float)(i % K);
  }
  hsize_t dx[2] = {N, D}, dy[1] = {N};
  hid_t f;

  f = create("no_train");
  put(f, "/other/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dx, xu8);
  done(f);

  f = create("no_x");
  put_y(f);
  done(f);

  f = create("no_y");
  put(f, "/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dx, xu8);
  done(f);

  f = create("x_rank1");
  put(f, "/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, dy, xu8);
  put_y(f);
  done(f);

  f = create("x_rank3");
  hsize_t d3[3] = {N, 4, 5};
  put(f, "/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 3, d3, xu8);
  put_y(f);
  done(f);

  f = create("x_int16");
  put(f, "/train/x", H5T_STD_I16LE, H5T_NATIVE_INT16, 2, dx, xi16);
  put_y(f);
  done(f);

  f = create("x_f64");
  put(f, "/train/x", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dx, xd);
  put_y(f);
  done(f);

  f = create("x_zero_rows");
  put_xy(f, "train", 0, D, 0);
  done(f);

  f = create("x_zero_cols");
  put_xy(f, "train", N, 0, N);
  done(f);

  f = create("x_nan");
  xf[37 * D + 3] = NAN;
  put(f, "/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dx, xf);
  put_y(f);
  xf[37 * D + 3] = 0.5f;
  done(f);

  f = create("x_inf");
  xf[5 * D] = INFINITY;
  put(f, "/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dx, xf);
  put_y(f);
  xf[5 * D] = 0.5f;
  done(f);

  f = create("x_scale0");
  put_xy(f, "train", N, D, N);
  {
    hid_t d = H5Dopen2(f, "/train/x", H5P_DEFAULT), sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(d, "scale", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    float zero = 0.0f;
    check(a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_FLOAT, &zero), "x_scale0", "scale attribute");
    if (a >= 0)
      H5Aclose(a);
    H5Sclose(sp);
    H5Dclose(d);
  }
  done(f);

  f = create("y_int64");
  put(f, "/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dx, xu8);
  put(f, "/train/y", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, dy, labels64);
  done(f);

  f = create("y_rank2_int");
  put(f, "/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dx, xu8);
  hsize_t dy2[2] = {N, 1};
  put(f, "/train/y", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, dy2, labels);
  done(f);

  f = create("y_float");
  put(f, "/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dx, xu8);
  put(f, "/train/y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, dy, targets);
  done(f);

  f = create("y_short");
  put_xy(f, "train", N, D, 90);
  done(f);

  f = create("y_big");
  labels[N - 1] = 7;
  put_xy(f, "train", N, D, N);
  labels[N - 1] = (N - 1) % K;
  done(f);

  f = create("y_neg");
  labels[0] = -1;
  put_xy(f, "train", N, D, N);
  labels[0] = 0;
  done(f);

  f = create("test_dim");
  put_xy(f, "train", N, D, N);
  put_xy(f, "test", 20, D - 1, 20);
  done(f);

  f = create("test_short");
  put_xy(f, "train", N, D, N);
  put_xy(f, "test", 20, D, 10);
  done(f);

  hsize_t dt[2] = {N, 1}, dtt[2] = {20, 1};
  f = create("yt_nan");
  targets[12] = NAN;
  put(f, "/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dx, xu8);
  put(f, "/train/y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dt, targets);
  targets[12] = 12 % K;
  done(f);

  f = create("yt_huge");
  double td[N];
  for (int i = 0; i < N; i++)
    td[i] = i == 3 ? 1e300 : targets[i];
  put(f, "/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dx, xu8);
  put(f, "/train/y", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dt, td);
  done(f);

  f = create("yt_test_inf");
  put(f, "/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dx, xu8);
  put(f, "/train/y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dt, targets);
  targets[7] = -INFINITY;
  put(f, "/test/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, (hsize_t[2]){20, D}, xu8);
  put(f, "/test/y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dtt, targets);
  targets[7] = 7 % K;
  done(f);

  return failed;
}
