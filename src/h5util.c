/* HDF5 helpers for checkpoints: checksummed datasets and scalar attributes. */
#include "h5util.h"

#include <string.h>

hid_t h5u_group(hid_t loc, const char *path) {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t g = H5Lexists(loc, path, H5P_DEFAULT) > 0 ? H5Gopen2(loc, path, H5P_DEFAULT)
                                                  : H5Gcreate2(loc, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  H5Pclose(lcpl);
  return g;
}

/* Chunks of at most ~1 MiB (and never empty: HDF5 rejects zero-sized chunks), checksummed. */
static hid_t checksummed(int rank, const hsize_t *dims, size_t elem) {
  hsize_t chunk[2] = {dims[0] ? dims[0] : 1, rank > 1 ? (dims[1] ? dims[1] : 1) : 1};
  size_t row = elem * (rank > 1 ? chunk[1] : 1);
  if (chunk[0] * row > (1u << 20))
    chunk[0] = (1u << 20) / row ? (1u << 20) / row : 1;
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  if (H5Pset_chunk(dcpl, rank, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0) {
    H5Pclose(dcpl);
    return -1;
  }
  return dcpl;
}

static int write_any(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *data, int rank,
                     const hsize_t *dims, size_t elem) {
  hid_t sp = H5Screate_simple(rank, dims, NULL), dcpl = checksummed(rank, dims, elem);
  hid_t d = sp < 0 || dcpl < 0 ? -1 : H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  herr_t st = d < 0 ? -1 : H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  if (d >= 0)
    H5Dclose(d);
  if (dcpl >= 0)
    H5Pclose(dcpl);
  if (sp >= 0)
    H5Sclose(sp);
  return st < 0 ? -1 : 0;
}

int h5u_write_f32(hid_t loc, const char *name, const float *data, int rank, const int64_t *dims) {
  hsize_t d[2] = {(hsize_t)dims[0], rank > 1 ? (hsize_t)dims[1] : 1};
  return write_any(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data, rank, d, sizeof(float));
}

int h5u_write_f64(hid_t loc, const char *name, const double *data, int64_t n) {
  hsize_t d[1] = {(hsize_t)n};
  return write_any(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, data, 1, d, sizeof(double));
}

int h5u_write_text(hid_t loc, const char *name, const char *text) {
  hsize_t d[1] = {strlen(text)};
  return write_any(loc, name, H5T_STD_U8LE, H5T_NATIVE_UCHAR, text, 1, d, 1);
}

int h5u_shape(hid_t loc, const char *name, int *rank, int64_t dims[2]) {
  if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
    return -1;
  hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
  hid_t sp = d < 0 ? -1 : H5Dget_space(d);
  int r = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
  hsize_t h[2] = {0, 0};
  if (r >= 1 && r <= 2)
    H5Sget_simple_extent_dims(sp, h, NULL);
  if (sp >= 0)
    H5Sclose(sp);
  if (d >= 0)
    H5Dclose(d);
  if (r < 1 || r > 2)
    return -1;
  *rank = r;
  dims[0] = (int64_t)h[0];
  dims[1] = (int64_t)h[1];
  return 0;
}

static int read_any(hid_t loc, const char *name, hid_t mtype, void *data) {
  hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
  herr_t st = d < 0 ? -1 : H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  if (d >= 0)
    H5Dclose(d);
  return st < 0 ? -1 : 0;
}

int h5u_read_f32(hid_t loc, const char *name, float *data) { return read_any(loc, name, H5T_NATIVE_FLOAT, data); }

int h5u_read_f64(hid_t loc, const char *name, double *data) { return read_any(loc, name, H5T_NATIVE_DOUBLE, data); }

int h5u_read_text(hid_t loc, const char *name, char *buf, size_t len) {
  int rank;
  int64_t dims[2];
  if (h5u_shape(loc, name, &rank, dims) < 0 || rank != 1 || dims[0] < 0 || (size_t)dims[0] >= len)
    return -1;
  if (dims[0] > 0 && read_any(loc, name, H5T_NATIVE_UCHAR, buf) < 0)
    return -1;
  buf[dims[0]] = 0;
  return 0;
}

static int attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v) {
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
  herr_t st = a < 0 ? -1 : H5Awrite(a, mtype, v);
  if (a >= 0)
    H5Aclose(a);
  H5Sclose(sp);
  return st < 0 ? -1 : 0;
}

int h5u_attr_i64(hid_t loc, const char *name, int64_t v) {
  return attr_write(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

int h5u_attr_f64(hid_t loc, const char *name, double v) {
  return attr_write(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

int h5u_attr_str(hid_t loc, const char *name, const char *v) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, strlen(v) + 1);
  int rc = attr_write(loc, name, t, t, v);
  H5Tclose(t);
  return rc;
}

static int attr_read(hid_t loc, const char *name, hid_t mtype, void *v) {
  if (H5Aexists(loc, name) <= 0)
    return -1;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  herr_t st = a < 0 ? -1 : H5Aread(a, mtype, v);
  if (a >= 0)
    H5Aclose(a);
  return st < 0 ? -1 : 0;
}

int h5u_get_i64(hid_t loc, const char *name, int64_t *v) { return attr_read(loc, name, H5T_NATIVE_INT64, v); }

int h5u_get_f64(hid_t loc, const char *name, double *v) { return attr_read(loc, name, H5T_NATIVE_DOUBLE, v); }

int h5u_get_str(hid_t loc, const char *name, char *buf, size_t len) {
  if (H5Aexists(loc, name) <= 0)
    return -1;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  hid_t ft = a < 0 ? -1 : H5Aget_type(a);
  int ok = ft >= 0 && H5Tget_class(ft) == H5T_STRING && !H5Tis_variable_str(ft) && H5Tget_size(ft) <= len;
  herr_t st = -1;
  if (ok) {
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5Tget_size(ft));
    st = H5Aread(a, mt, buf);
    H5Tclose(mt);
    buf[len - 1] = 0;
  }
  if (ft >= 0)
    H5Tclose(ft);
  if (a >= 0)
    H5Aclose(a);
  return st < 0 ? -1 : 0;
}
