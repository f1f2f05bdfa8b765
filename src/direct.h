/* Reading a chunked dataset's chunks straight from the file (O_DIRECT), for the streaming reader.
 *
 * A file larger than memory is read once per epoch: through the page cache every read copies, and
 * in a memory cgroup (a batch job's allocation) the kernel reclaims cache on the reading core for
 * each one. Streamed x datasets whose chunks are whole rows, stored unfiltered or with Fletcher32
 * only (what `dptrain convert` writes), are read here instead: the chunk addresses come from HDF5's
 * index once, at open; each chunk is one aligned pread, its Fletcher32 checksum verified here as
 * HDF5 would. Anything else (compression, other chunk shapes, a file system without O_DIRECT) keeps
 * HDF5's own reads. */
#ifndef DPTRAIN_DIRECT_H
#define DPTRAIN_DIRECT_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dp_direct dp_direct;

/* 1 with *out set when the dataset can be read directly, 0 when not (HDF5's reads stay), or a DP_E
 * code. dset is (n_rows, d) with rows of row_bytes; the caller holds dp_h5_lock. */
int dp_direct_open(dp_direct **out, const char *path, hid_t dset, int64_t n_rows, size_t row_bytes);
/* Rows per chunk. */
int64_t dp_direct_chunk_rows(const dp_direct *d);
/* The first `rows` rows of chunk `chunk` into dst; DP_EIO naming the file and rows on a short read
 * or a checksum mismatch. Needs no HDF5 lock. */
int dp_direct_read(dp_direct *d, int64_t chunk, int64_t rows, void *dst, const char *what);
void dp_direct_close(dp_direct *d);

#endif
