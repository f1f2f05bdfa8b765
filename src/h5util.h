/* Small HDF5 helpers for checkpoints (private to src/). They return 0 or -1 and set no message: the
 * caller knows which file and dataset it was and says so. */
#ifndef DPTRAIN_H5UTIL_H
#define DPTRAIN_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* Creates the group `path` (parents included, like mkdir -p); returns it open, or < 0. */
hid_t h5u_group(hid_t loc, const char *path);

/* A float32 (or float64, or char) dataset with the Fletcher32 checksum filter (chunked). */
int h5u_write_f32(hid_t loc, const char *name, const float *data, int rank, const int64_t *dims);
int h5u_write_f64(hid_t loc, const char *name, const double *data, int64_t n);
int h5u_write_text(hid_t loc, const char *name, const char *text);

/* Dimensions of a dataset: 0 and *rank, dims[0..rank) when it exists with at most 2 dimensions. */
int h5u_shape(hid_t loc, const char *name, int *rank, int64_t dims[2]);
/* Reads a whole dataset whose shape the caller has checked; -1 also on a checksum mismatch. */
int h5u_read_f32(hid_t loc, const char *name, float *data);
int h5u_read_f64(hid_t loc, const char *name, double *data);
/* Reads a text dataset of at most len - 1 bytes; -1 when missing, damaged or longer. */
int h5u_read_text(hid_t loc, const char *name, char *buf, size_t len);

int h5u_attr_i64(hid_t loc, const char *name, int64_t v);
int h5u_attr_f64(hid_t loc, const char *name, double v);
int h5u_attr_str(hid_t loc, const char *name, const char *v);
int h5u_get_i64(hid_t loc, const char *name, int64_t *v);
int h5u_get_f64(hid_t loc, const char *name, double *v);
int h5u_get_str(hid_t loc, const char *name, char *buf, size_t len);

#endif
