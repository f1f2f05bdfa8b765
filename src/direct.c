#define _GNU_SOURCE /* O_DIRECT */
#include "direct.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dptrain/error.h"

/* O_DIRECT needs the buffer, offset and length aligned to the device's logical block; 4096 is a
 * multiple of every common one. */
#define ALIGN 4096

struct dp_direct {
  int fd;
  int64_t chunk_rows, n_chunks;
  size_t data_bytes;   /* chunk_rows · row_bytes */
  int fletcher;        /* each chunk ends in 4 bytes of Fletcher32 */
  uint64_t *addr;      /* (n_chunks) where each chunk starts in the file */
  unsigned char *buf;  /* ALIGN-aligned, room for a chunk and an alignment block either side */
  size_t buf_bytes;
  char path[4096];
};

/* HDF5's Fletcher32 (H5Z filter 3): sums of big-endian 16-bit words, folded every 360 words so the
 * 32-bit sums cannot overflow, an odd last byte as the high half of a word. */
static uint32_t fletcher32(const unsigned char *p, size_t len) {
  uint32_t s1 = 0, s2 = 0;
  size_t words = len / 2;
  while (words) {
    size_t n = words > 360 ? 360 : words;
    words -= n;
    for (size_t i = 0; i < n; i++, p += 2) {
      s1 += (uint32_t)p[0] << 8 | p[1];
      s2 += s1;
    }
    s1 = (s1 & 0xffff) + (s1 >> 16);
    s2 = (s2 & 0xffff) + (s2 >> 16);
  }
  if (len % 2) {
    s1 += (uint32_t)p[0] << 8;
    s2 += s1;
    s1 = (s1 & 0xffff) + (s1 >> 16);
    s2 = (s2 & 0xffff) + (s2 >> 16);
  }
  s1 = (s1 & 0xffff) + (s1 >> 16);
  s2 = (s2 & 0xffff) + (s2 >> 16);
  return s2 << 16 | s1;
}

/* Chunks of whole rows, with no filter or Fletcher32 alone: *fletcher says which. 0 when not. */
static int readable_layout(hid_t dset, size_t row_bytes, int64_t *chunk_rows, int *fletcher) {
  hid_t dcpl = H5Dget_create_plist(dset), space = H5Dget_space(dset);
  hsize_t c[2] = {0, 0}, dims[2] = {0, 0};
  int ok = dcpl >= 0 && space >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 2, c) == 2 &&
           H5Sget_simple_extent_dims(space, dims, NULL) == 2 && c[1] == dims[1] && c[0] > 0;
  int nf = ok ? H5Pget_nfilters(dcpl) : -1;
  *fletcher = 0;
  if (nf == 1) {
    unsigned flags, cd[8];
    size_t ncd = 8;
    *fletcher = H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, 0, NULL, NULL) == H5Z_FILTER_FLETCHER32;
  }
  ok = ok && (nf == 0 || *fletcher) && row_bytes > 0;
  *chunk_rows = (int64_t)c[0];
  if (dcpl >= 0)
    H5Pclose(dcpl);
  if (space >= 0)
    H5Sclose(space);
  return ok;
}

/* Every chunk's address from the index, each stored whole and unfiltered-as-expected: 0 when not. */
static int find_chunks(dp_direct *d, hid_t dset) {
  size_t want = d->data_bytes + (d->fletcher ? 4 : 0);
  for (int64_t i = 0; i < d->n_chunks; i++) {
    hsize_t off[2] = {(hsize_t)(i * d->chunk_rows), 0, };
    unsigned mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    if (H5Dget_chunk_info_by_coord(dset, off, &mask, &addr, &size) < 0 || addr == HADDR_UNDEF || mask != 0 ||
        size != want)
      return 0;
    d->addr[i] = (uint64_t)addr;
  }
  return 1;
}

int dp_direct_open(dp_direct **out, const char *path, hid_t dset, int64_t n_rows, size_t row_bytes) {
  *out = NULL;
  int64_t cr;
  int fl;
  if (n_rows <= 0 || !readable_layout(dset, row_bytes, &cr, &fl))
    return 0;
  int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0)
    return 0; /* tmpfs and some network file systems refuse O_DIRECT: HDF5's reads do */
  dp_direct *d = calloc(1, sizeof *d);
  if (!d) {
    close(fd);
    return dp_fail(DP_ENOMEM, "%s: no memory for the direct reader", path);
  }
  d->fd = fd;
  d->chunk_rows = cr;
  d->fletcher = fl;
  d->data_bytes = (size_t)cr * row_bytes;
  d->n_chunks = (n_rows + cr - 1) / cr;
  d->buf_bytes = (d->data_bytes + 4 + 2 * ALIGN + ALIGN - 1) / ALIGN * ALIGN;
  snprintf(d->path, sizeof d->path, "%s", path);
  d->addr = malloc(sizeof *d->addr * (size_t)d->n_chunks);
  d->buf = aligned_alloc(ALIGN, d->buf_bytes);
  if (!d->addr || !d->buf) {
    dp_direct_close(d);
    return dp_fail(DP_ENOMEM, "%s: no memory for the direct reader", path);
  }
  if (!find_chunks(d, dset)) {
    dp_direct_close(d);
    return 0;
  }
  *out = d;
  return 1;
}

int64_t dp_direct_chunk_rows(const dp_direct *d) { return d->chunk_rows; }

int dp_direct_read(dp_direct *d, int64_t chunk, int64_t rows, void *dst, const char *what) {
  size_t stored = d->data_bytes + (d->fletcher ? 4 : 0);
  uint64_t start = d->addr[chunk], first = start / ALIGN * ALIGN;
  size_t need = (size_t)(start - first) + stored, len = (need + ALIGN - 1) / ALIGN * ALIGN, got = 0;
  while (got < need) {
    ssize_t r = pread(d->fd, d->buf + got, len - got, (off_t)(first + got));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  long long lo = (long long)(chunk * d->chunk_rows), hi = lo + rows - 1;
  if (got < need)
    return dp_fail(DP_EIO, "%s: %s: reading rows %lld..%lld failed (%s)", d->path, what, lo, hi,
                   got == 0 && errno ? strerror(errno) : "the file ends inside the chunk");
  const unsigned char *p = d->buf + (start - first);
  if (d->fletcher) {
    const unsigned char *c = p + d->data_bytes;
    uint32_t stored_sum = (uint32_t)c[0] | (uint32_t)c[1] << 8 | (uint32_t)c[2] << 16 | (uint32_t)c[3] << 24;
    uint32_t sum = fletcher32(p, d->data_bytes);
    uint32_t swapped = sum >> 24 | (sum >> 8 & 0xff00) | (sum << 8 & 0xff0000) | sum << 24; /* HDF5 1.6.0-1.6.2 */
    if (sum != stored_sum && swapped != stored_sum)
      return dp_fail(DP_EIO, "%s: %s: reading rows %lld..%lld failed (checksum mismatch or damaged data)", d->path,
                     what, lo, hi);
  }
  memcpy(dst, p, (size_t)rows * (d->data_bytes / (size_t)d->chunk_rows));
  return 0;
}

void dp_direct_close(dp_direct *d) {
  if (!d)
    return;
  if (d->fd >= 0)
    close(d->fd);
  free(d->addr);
  free(d->buf);
  free(d);
}
