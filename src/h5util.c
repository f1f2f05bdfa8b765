/* HDF5 helpers: datasets in one writer, scalar attributes, and messages that name the failed call. */
#include "h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "dptrain/error.h"
#include "faults.h"

const h5u_layout h5u_checksummed = {0, 1, 0};

static pthread_mutex_t h5_mutex;
static pthread_once_t h5_once = PTHREAD_ONCE_INIT;

static void h5_mutex_init(void) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&h5_mutex, &a);
  pthread_mutexattr_destroy(&a);
}

void dp_h5_lock(void) {
  pthread_once(&h5_once, h5_mutex_init);
  pthread_mutex_lock(&h5_mutex);
}

void dp_h5_unlock(void) { pthread_mutex_unlock(&h5_mutex); }

static int h5_fail(const char *call, const char *name) {
  return dp_fail(DP_EHDF5, "HDF5 %s failed on %s", call, name);
}

int h5u_fail_in(const char *file) {
  char msg[600];
  snprintf(msg, sizeof msg, "%s", dp_errmsg(DP_EHDF5));
  return dp_fail(DP_EHDF5, "%s: %s", file, msg);
}

uint64_t h5u_hash64(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, b + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
  }
  for (; i < n; i++)
    h = (h ^ b[i]) * 0x100000001b3ULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 33);
}

/* h5u_hash64's word step, then its byte step for the last n mod 8 bytes. */
static uint64_t hash_word(uint64_t h, const unsigned char *b) {
  uint64_t w;
  memcpy(&w, b, 8);
  h = (h ^ w) * 0xff51afd7ed558ccdULL;
  return h ^ (h >> 29);
}

void h5u_hash_init(h5u_hasher *s, size_t n) {
  s->h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
  s->ntail = 0;
}

void h5u_hash_add(h5u_hasher *s, const void *p, size_t len) {
  const unsigned char *b = p;
  while (len && s->ntail) {
    s->tail[s->ntail++] = *b++;
    len--;
    if (s->ntail == 8) {
      s->h = hash_word(s->h, s->tail);
      s->ntail = 0;
    }
  }
  for (; len >= 8; b += 8, len -= 8)
    s->h = hash_word(s->h, b);
  memcpy(s->tail + s->ntail, b, len);
  s->ntail += len;
}

uint64_t h5u_hash_end(h5u_hasher *s) {
  uint64_t h = s->h;
  for (size_t i = 0; i < s->ntail; i++)
    h = (h ^ s->tail[i]) * 0x100000001b3ULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 33);
}

int h5u_write_hash(hid_t loc, const char *name, const void *data, size_t bytes) {
  hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
  if (d < 0)
    return h5_fail("H5Dopen2", name);
  int rc = h5u_attr_i64(d, H5U_HASH_ATTR, (int64_t)h5u_hash64(data, bytes));
  H5Dclose(d);
  return rc;
}

/* The core driver's allocations go through these, so that the buffer it frees at close is kept. */
static void *img_malloc(size_t size, H5FD_file_image_op_t op, void *udata) {
  (void)op;
  h5u_memfile *m = udata;
  char *p = malloc(size ? size : 1);
  if (p) {
    m->buf = p;
    m->size = size;
  }
  return p;
}

static void *img_memcpy(void *dest, const void *src, size_t size, H5FD_file_image_op_t op, void *udata) {
  (void)op;
  (void)udata;
  return memcpy(dest, src, size);
}

static void *img_realloc(void *ptr, size_t size, H5FD_file_image_op_t op, void *udata) {
  (void)op;
  h5u_memfile *m = udata;
  char *p = realloc(ptr, size ? size : 1);
  if (p) {
    m->buf = p;
    m->size = size;
  }
  return p;
}

static herr_t img_free(void *ptr, H5FD_file_image_op_t op, void *udata) {
  h5u_memfile *m = udata;
  if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && ptr && ptr == (void *)m->buf)
    m->kept = 1;
  else
    free(ptr);
  return 0;
}

static void *img_udata_copy(void *udata) { return udata; }
static herr_t img_udata_free(void *udata) {
  (void)udata;
  return 0;
}

int h5u_mem_create(h5u_memfile *m, const char *path, hid_t fapl, double size_hint) {
  memset(m, 0, sizeof *m);
  hid_t p = fapl == H5P_DEFAULT ? H5Pcreate(H5P_FILE_ACCESS) : H5Pcopy(fapl);
  double step = size_hint < (1 << 20) ? (1 << 20) : size_hint > (double)(1u << 30) ? (double)(1u << 30) : size_hint;
  H5FD_file_image_callbacks_t cb = {img_malloc, img_memcpy, img_realloc, img_free, img_udata_copy, img_udata_free, m};
  int bad = p < 0 || H5Pset_fapl_core(p, (size_t)step, 0) < 0 || H5Pset_file_image_callbacks(p, &cb) < 0;
  m->f = bad ? -1 : H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, p);
  if (p >= 0)
    H5Pclose(p);
  return m->f < 0 ? h5_fail("H5Fcreate", path) : 0;
}

static int write_all(const char *path, const char *buf, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    return DP_EIO;
  for (size_t off = 0; off < n;) {
    ssize_t w = write(fd, buf + off, n - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      int e = w < 0 ? errno : ENOSPC;
      close(fd);
      errno = e;
      return DP_EIO;
    }
    off += (size_t)w;
  }
  return close(fd) == 0 ? 0 : DP_EIO;
}

/* The file's end address from its superblock (the image is allocated in steps beyond it; H5Fget_eoa
 * refuses the core driver): 8-byte addresses, versions 0 and 1 at bytes 40 and 44, 2 and 3 at 28. */
static size_t image_end(const unsigned char *b, size_t n) {
  if (n < 56 || memcmp(b, "\211HDF\r\n\032\n", 8))
    return n;
  int v = b[8];
  size_t at = v == 0 ? 40 : v == 1 ? 44 : 28, width = v <= 1 ? b[13] : b[9];
  if (width != 8)
    return n;
  uint64_t end = 0;
  for (int i = 7; i >= 0; i--)
    end = end << 8 | b[at + (size_t)i];
  return end > 0 && end <= n ? (size_t)end : n;
}

int h5u_mem_close(h5u_memfile *m, const char *path, int save) {
  int rc = H5Fclose(m->f) < 0 || !m->kept ? h5_fail("H5Fclose", path) : 0;
  if (rc == 0 && save)
    rc = write_all(path, m->buf, image_end((const unsigned char *)m->buf, m->size));
  int e = errno;
  if (m->kept)
    free(m->buf);
  memset(m, 0, sizeof *m);
  m->f = -1;
  errno = e;
  return rc;
}

/* Twice the file must fit in memory beside what the caller holds: past this, HDF5 writes it itself. */
#define H5U_OUT_MEM_MAX (256.0 * (1 << 20))

int h5u_out_create(h5u_outfile *o, const char *path, double bytes) {
  memset(o, 0, sizeof *o);
  o->direct = bytes > dp_fault_out_mem_max(H5U_OUT_MEM_MAX);
  if (!o->direct) {
    DP_TRY(h5u_mem_create(&o->m, path, H5P_DEFAULT, bytes * 1.01 + (1 << 16)));
    o->f = o->m.f;
    return 0;
  }
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash)
    snprintf(dir, sizeof dir, ".");
  else
    slash[slash == dir] = 0; /* "/f" keeps its "/" */
  struct statvfs v;
  if (statvfs(dir, &v) == 0 && (double)v.f_bavail * (double)v.f_frsize < bytes * 1.01 + (1 << 20)) {
    errno = ENOSPC;
    return DP_EIO;
  }
  o->f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  return o->f < 0 ? h5_fail("H5Fcreate", path) : 0;
}

int h5u_out_close(h5u_outfile *o, const char *path, int save) {
  if (!o->direct)
    return h5u_mem_close(&o->m, path, save);
  int rc = H5Fclose(o->f) < 0 ? h5_fail("H5Fclose", path) : 0;
  o->f = -1;
  return rc;
}

int h5u_group(hid_t loc, const char *path, hid_t *g) {
  int exists = 0;
  DP_TRY(h5u_exists(loc, path, &exists));
  if (exists) {
    *g = H5Gopen2(loc, path, H5P_DEFAULT);
    return *g < 0 ? h5_fail("H5Gopen2", path) : 0;
  }
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  if (lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0)
    *g = -1;
  else
    *g = H5Gcreate2(loc, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  if (lcpl >= 0)
    H5Pclose(lcpl);
  return *g < 0 ? h5_fail("H5Gcreate2", path) : 0;
}

/* Chunks never empty (HDF5 rejects zero-sized chunks), of lay->chunk_rows rows or about 1 MiB. */
static hid_t dataset_props(int rank, const hsize_t *dims, size_t elem, const h5u_layout *lay) {
  hsize_t chunk[2] = {dims[0] ? dims[0] : 1, rank > 1 ? (dims[1] ? dims[1] : 1) : 1};
  size_t row = elem * (rank > 1 ? chunk[1] : 1);
  if (lay->chunk_rows > 0 && (hsize_t)lay->chunk_rows < chunk[0])
    chunk[0] = (hsize_t)lay->chunk_rows;
  else if (lay->chunk_rows <= 0 && chunk[0] * row > (1u << 20))
    chunk[0] = (1u << 20) / row ? (1u << 20) / row : 1;
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  int bad = dcpl < 0 || H5Pset_chunk(dcpl, rank, chunk) < 0 || (lay->checksum && H5Pset_fletcher32(dcpl) < 0) ||
            (lay->deflate > 0 && H5Pset_deflate(dcpl, (unsigned)lay->deflate) < 0);
  if (bad && dcpl >= 0)
    H5Pclose(dcpl);
  return bad ? -1 : dcpl;
}

int h5u_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *data, int rank, const int64_t *dims,
              const h5u_layout *lay) {
  hsize_t d[2] = {(hsize_t)dims[0], rank > 1 ? (hsize_t)dims[1] : 1};
  hid_t sp = H5Screate_simple(rank, d, NULL), dcpl = dataset_props(rank, d, H5Tget_size(mtype), lay);
  hid_t ds = sp < 0 || dcpl < 0 ? -1 : H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  const char *call = sp < 0 ? "H5Screate_simple" : dcpl < 0 ? "H5Pset_chunk" : ds < 0 ? "H5Dcreate2" : "H5Dwrite";
  herr_t st = ds < 0 ? -1 : H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  if (ds >= 0 && H5Dclose(ds) < 0 && st >= 0)
    st = -1, call = "H5Dclose";
  if (dcpl >= 0)
    H5Pclose(dcpl);
  if (sp >= 0)
    H5Sclose(sp);
  return st < 0 ? h5_fail(call, name) : 0;
}

int h5u_create(hid_t loc, const char *name, hid_t ftype, int rank, const int64_t *dims, const h5u_layout *lay,
               hid_t *ds) {
  hsize_t d[2] = {(hsize_t)dims[0], rank > 1 ? (hsize_t)dims[1] : 1};
  hid_t sp = H5Screate_simple(rank, d, NULL), dcpl = dataset_props(rank, d, H5Tget_size(ftype), lay);
  *ds = sp < 0 || dcpl < 0 ? -1 : H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  const char *call = sp < 0 ? "H5Screate_simple" : dcpl < 0 ? "H5Pset_chunk" : "H5Dcreate2";
  if (dcpl >= 0)
    H5Pclose(dcpl);
  if (sp >= 0)
    H5Sclose(sp);
  return *ds < 0 ? h5_fail(call, name) : 0;
}

int h5u_write_f32(hid_t loc, const char *name, const float *data, int rank, const int64_t *dims) {
  return h5u_write(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data, rank, dims, &h5u_checksummed);
}

int h5u_write_f64(hid_t loc, const char *name, const double *data, int64_t n) {
  return h5u_write(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, data, 1, &n, &h5u_checksummed);
}

int h5u_write_text(hid_t loc, const char *name, const char *text) {
  int64_t n = (int64_t)strlen(text);
  return h5u_write(loc, name, H5T_STD_U8LE, H5T_NATIVE_UCHAR, text, 1, &n, &h5u_checksummed);
}

int h5u_exists(hid_t loc, const char *name, int *exists) {
  /* H5Lexists fails (rather than saying no) when a parent group is missing: check each prefix. */
  char part[512];
  *exists = 0;
  for (const char *p = name;; p++) {
    if (*p == '/' || *p == 0) {
      size_t n = (size_t)(p - name);
      if (n >= sizeof part)
        return dp_fail(DP_EHDF5, "HDF5 object name too long: %s", name);
      memcpy(part, name, n);
      part[n] = 0;
      htri_t e = H5Lexists(loc, part, H5P_DEFAULT);
      if (e < 0)
        return h5_fail("H5Lexists", part);
      if (e == 0)
        return 0;
      if (*p == 0)
        break;
    }
  }
  *exists = 1;
  return 0;
}

int h5u_shape(hid_t loc, const char *name, int *rank, int64_t dims[2]) {
  int exists = 0;
  DP_TRY(h5u_exists(loc, name, &exists));
  if (!exists)
    return dp_fail(DP_EHDF5, "no dataset %s", name);
  hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
  hid_t sp = d < 0 ? -1 : H5Dget_space(d);
  int r = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
  hsize_t h[2] = {0, 0};
  if (r >= 1 && r <= 2 && H5Sget_simple_extent_dims(sp, h, NULL) < 0)
    r = -1;
  if (sp >= 0)
    H5Sclose(sp);
  if (d >= 0)
    H5Dclose(d);
  if (r < 1 || r > 2)
    return d < 0 ? h5_fail("H5Dopen2", name) : dp_fail(DP_EHDF5, "%s is not a 1- or 2-dimensional dataset", name);
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
  return st < 0 ? h5_fail(d < 0 ? "H5Dopen2" : "H5Dread", name) : 0;
}

int h5u_read_f32(hid_t loc, const char *name, float *data) { return read_any(loc, name, H5T_NATIVE_FLOAT, data); }

int h5u_read_f64(hid_t loc, const char *name, double *data) { return read_any(loc, name, H5T_NATIVE_DOUBLE, data); }

int h5u_read_text(hid_t loc, const char *name, char *buf, size_t len) {
  int rank;
  int64_t dims[2];
  DP_TRY(h5u_shape(loc, name, &rank, dims));
  if (rank != 1 || (size_t)dims[0] >= len)
    return dp_fail(DP_EHDF5, "%s: not text of at most %zu bytes", name, len - 1);
  if (dims[0] > 0)
    DP_TRY(read_any(loc, name, H5T_NATIVE_UCHAR, buf));
  buf[dims[0]] = 0;
  return 0;
}

static int attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v) {
  hid_t sp = H5Screate(H5S_SCALAR);
  hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
  herr_t st = a < 0 ? -1 : H5Awrite(a, mtype, v);
  if (a >= 0)
    H5Aclose(a);
  if (sp >= 0)
    H5Sclose(sp);
  return st < 0 ? h5_fail(a < 0 ? "H5Acreate2" : "H5Awrite", name) : 0;
}

int h5u_attr_i64(hid_t loc, const char *name, int64_t v) {
  return attr_write(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

int h5u_attr_f64(hid_t loc, const char *name, double v) {
  return attr_write(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

int h5u_attr_str(hid_t loc, const char *name, const char *v) {
  hid_t t = H5Tcopy(H5T_C_S1);
  if (t < 0 || H5Tset_size(t, strlen(v) + 1) < 0) {
    if (t >= 0)
      H5Tclose(t);
    return h5_fail("H5Tset_size", name);
  }
  int rc = attr_write(loc, name, t, t, v);
  H5Tclose(t);
  return rc;
}

int h5u_attr_exists(hid_t loc, const char *name, int *exists) {
  htri_t e = H5Aexists(loc, name);
  if (e < 0)
    return h5_fail("H5Aexists", name);
  *exists = e > 0;
  return 0;
}

static int attr_read(hid_t loc, const char *name, hid_t mtype, void *v) {
  int exists = 0;
  DP_TRY(h5u_attr_exists(loc, name, &exists));
  if (!exists)
    return dp_fail(DP_EHDF5, "no attribute %s", name);
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  herr_t st = a < 0 ? -1 : H5Aread(a, mtype, v);
  if (a >= 0)
    H5Aclose(a);
  return st < 0 ? h5_fail(a < 0 ? "H5Aopen" : "H5Aread", name) : 0;
}

int h5u_get_i64(hid_t loc, const char *name, int64_t *v) { return attr_read(loc, name, H5T_NATIVE_INT64, v); }

int h5u_get_f64(hid_t loc, const char *name, double *v) { return attr_read(loc, name, H5T_NATIVE_DOUBLE, v); }

int h5u_get_str(hid_t loc, const char *name, char *buf, size_t len) {
  int exists = 0;
  DP_TRY(h5u_attr_exists(loc, name, &exists));
  if (!exists)
    return dp_fail(DP_EHDF5, "no attribute %s", name);
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  hid_t ft = a < 0 ? -1 : H5Aget_type(a);
  int ok = ft >= 0 && H5Tget_class(ft) == H5T_STRING && !H5Tis_variable_str(ft) && H5Tget_size(ft) <= len;
  herr_t st = -1;
  if (ok) {
    hid_t mt = H5Tcopy(H5T_C_S1);
    st = mt < 0 || H5Tset_size(mt, H5Tget_size(ft)) < 0 ? -1 : H5Aread(a, mt, buf);
    if (mt >= 0)
      H5Tclose(mt);
    buf[len - 1] = 0;
  }
  if (ft >= 0)
    H5Tclose(ft);
  if (a >= 0)
    H5Aclose(a);
  if (!ok)
    return dp_fail(DP_EHDF5, "attribute %s is not a fixed-length string of at most %zu bytes", name, len - 1);
  return st < 0 ? h5_fail("H5Aread", name) : 0;
}
