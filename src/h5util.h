/* Small HDF5 helpers (private to src/): checkpoints and `dptrain convert` write every dataset through
 * h5u_write. Each returns 0 or DP_EHDF5 with a message naming the HDF5 call and the object; a caller
 * that knows the file prefixes it (h5u_fail_in). */
#ifndef DPTRAIN_H5UTIL_H
#define DPTRAIN_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* The one lock around HDF5, which Debian builds without thread safety: the streaming reader
 * (src/stream.c) holds it around each of its reads, and every HDF5 user that may run while a reader
 * does (dataset reads in data.c, checkpoint save and load) takes it too. Recursive; never held while
 * waiting for anything else, so it cannot deadlock. */
void dp_h5_lock(void);
void dp_h5_unlock(void);

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

/* A new file of about `bytes`, from create to close: built in memory (h5u_mem_create) when small, so
 * that a full disk is a plain error; a larger one (a data set bigger than memory) is written by HDF5
 * straight to path, once statvfs says it fits (DP_EIO with errno ENOSPC otherwise): a disk that
 * fills up anyway can still make HDF5 1.10 fail badly at exit. */
typedef struct {
  h5u_memfile m;
  hid_t f; /* the file, open between create and close */
  int direct;
} h5u_outfile;
int h5u_out_create(h5u_outfile *o, const char *path, double bytes);
int h5u_out_close(h5u_outfile *o, const char *path, int save);

/* An empty dataset of rank 1 or 2 in lay's layout, for writing in parts: 0 with *ds open, or DP_EHDF5. */
int h5u_create(hid_t loc, const char *name, hid_t ftype, int rank, const int64_t *dims, const h5u_layout *lay,
               hid_t *ds);

/* A 64-bit hash of n bytes: what the attribute H5U_HASH_ATTR holds for a whole dataset's elements (as
 * int64), so that a read can tell a damaged chunk index or a zeroed chunk, which Fletcher32 cannot. */
#define H5U_HASH_ATTR "hash64"
uint64_t h5u_hash64(const void *p, size_t n);
/* The same hash over pieces of a whole of n bytes known in advance (a dataset written or read in parts):
 * add the pieces in order, then h5u_hash_end gives h5u_hash64 of their concatenation. */
typedef struct {
  uint64_t h;
  unsigned char tail[8]; /* bytes of a word not yet complete */
  size_t ntail;
} h5u_hasher;
void h5u_hash_init(h5u_hasher *s, size_t n);
void h5u_hash_add(h5u_hasher *s, const void *p, size_t len);
uint64_t h5u_hash_end(h5u_hasher *s);
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
