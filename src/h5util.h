/* Small HDF5 helpers (private to src/): checkpoints and `dptrain convert` write every dataset through
 * h5u_write. Each returns 0 or DP_EHDF5 with a message naming the HDF5 call and the object; a caller
 * that knows the file prefixes it (h5u_fail_in). */
#ifndef DPTRAIN_H5UTIL_H
#define DPTRAIN_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* Opens the group `path`, creating it and its parents when missing (like mkdir -p): 0 with *g open. */
int h5u_group(hid_t loc, const char *path, hid_t *g);

/* How a dataset is stored: chunk rows (0 = chunks of about 1 MiB), Fletcher32 checksums, deflate level
 * (0 = none). */
typedef struct {
  int64_t chunk_rows;
  int checksum;
  int deflate;
} h5u_layout;

/* The checkpoints' layout: ~1 MiB chunks, checksummed. */
extern const h5u_layout h5u_checksummed;

/* A dataset of rank 1 or 2 from memory of type mtype, stored as ftype. */
int h5u_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *data, int rank, const int64_t *dims,
              const h5u_layout *lay);
int h5u_write_f32(hid_t loc, const char *name, const float *data, int rank, const int64_t *dims);
int h5u_write_f64(hid_t loc, const char *name, const double *data, int64_t n);
int h5u_write_text(hid_t loc, const char *name, const char *text);

/* A new HDF5 file built in memory (the core driver, no backing store) and written to disk in one piece
 * by h5u_mem_close. HDF5 1.10 cannot recover from a write or close that fails on the disk (a full
 * one): the file it could not close crashes its clean-up at exit. Here HDF5 never touches the disk,
 * so a full disk is a plain write() error. The image is the buffer HDF5 hands back at close, once
 * its superblock is final (H5Fget_file_image's copy of an open file fails its own checksum). */
typedef struct {
  hid_t f;     /* the file, open between create and close */
  char *buf;   /* the image, owned here once HDF5 lets go of it */
  size_t size;
  int kept;    /* HDF5 has closed the file and left buf to us */
} h5u_memfile;
/* fapl (may be H5P_DEFAULT) gives the other file access properties; size_hint is the expected file
 * size (the image grows in steps of it). */
int h5u_mem_create(h5u_memfile *m, const char *path, hid_t fapl, double size_hint);
/* Closes m->f and, when save, writes the image to path (created or truncated): 0, DP_EIO (errno tells
 * why) or DP_EHDF5. m is released in every case. */
int h5u_mem_close(h5u_memfile *m, const char *path, int save);

/* A 64-bit hash of n bytes: what the attribute H5U_HASH_ATTR holds for a whole dataset's elements (as
 * int64), so that a read can tell a damaged chunk index or a zeroed chunk, which Fletcher32 cannot. */
#define H5U_HASH_ATTR "hash64"
uint64_t h5u_hash64(const void *p, size_t n);
/* Stores the hash of data (bytes) as dataset name's H5U_HASH_ATTR. */
int h5u_write_hash(hid_t loc, const char *name, const void *data, size_t bytes);

/* The failure just recorded, prefixed with the file it happened in; returns DP_EHDF5. */
int h5u_fail_in(const char *file);

/* Whether a link (dataset or group) exists: 0 with *exists set, or DP_EHDF5. */
int h5u_exists(hid_t loc, const char *name, int *exists);
/* Dimensions of a dataset: 0 and *rank, dims[0..rank) when it exists with 1 or 2 dimensions. */
int h5u_shape(hid_t loc, const char *name, int *rank, int64_t dims[2]);
/* Reads a whole dataset whose shape the caller has checked; DP_EHDF5 also on a checksum mismatch. */
int h5u_read_f32(hid_t loc, const char *name, float *data);
int h5u_read_f64(hid_t loc, const char *name, double *data);
/* Reads a text dataset of at most len - 1 bytes; DP_EHDF5 when missing, damaged or longer. */
int h5u_read_text(hid_t loc, const char *name, char *buf, size_t len);

int h5u_attr_i64(hid_t loc, const char *name, int64_t v);
int h5u_attr_f64(hid_t loc, const char *name, double v);
int h5u_attr_str(hid_t loc, const char *name, const char *v);
int h5u_get_i64(hid_t loc, const char *name, int64_t *v);
int h5u_get_f64(hid_t loc, const char *name, double *v);
int h5u_get_str(hid_t loc, const char *name, char *buf, size_t len);
/* Whether an attribute exists: 0 with *exists set, or DP_EHDF5. */
int h5u_attr_exists(hid_t loc, const char *name, int *exists);

#endif
