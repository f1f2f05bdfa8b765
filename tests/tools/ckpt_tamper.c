/* ckpt_tamper flip FILE DATASET    flip one byte inside the stored data (chunk 0) of DATASET
 * ckpt_tamper zero FILE DATASET    zero chunk 0 of DATASET with its Fletcher32 checksum (which then passes)
 * ckpt_tamper index FILE DATASET   flip one bit of chunk 0's key in DATASET's v1 B-tree chunk index (no
 *                                  checksum there): HDF5 then misses the chunk and returns the fill value
 * ckpt_tamper unhash FILE DATASET  delete DATASET's hash64 attribute (as files written before it had)
 * ckpt_tamper unattr FILE ATTR    delete the root group's attribute ATTR (as files written before it had)
 * ckpt_tamper version FILE N       overwrite the root attribute "version" (int64) with N
 * Damages a checkpoint on purpose, for the command-line tests of checkpoint validation.
 * Prints one error and exits 1 on failure. */
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *file) {
  fprintf(stderr, "ckpt_tamper: %s: %s\n", file, what);
  return 1;
}

/* Chunk 0's address and stored size, and the dataset's rank. */
static int chunk0(const char *file, const char *dataset, haddr_t *addr, hsize_t *size, int *rank) {
  hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0)
    return fail("cannot open as HDF5", file);
  hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT);
  if (d < 0) {
    H5Fclose(f);
    return fail("no such dataset", file);
  }
  hsize_t offset[2] = {0, 0};
  unsigned mask = 0;
  *addr = HADDR_UNDEF;
  *size = 0;
  hid_t sp = H5Dget_space(d);
  *rank = sp < 0 ? 0 : H5Sget_simple_extent_ndims(sp);
  herr_t st = sp < 0 ? -1 : H5Dget_chunk_info(d, sp, 0, offset, &mask, addr, size);
  if (sp >= 0)
    H5Sclose(sp);
  H5Dclose(d);
  H5Fclose(f);
  if (st < 0 || *addr == HADDR_UNDEF || *size == 0)
    return fail("no stored chunk 0 (not a chunked dataset?)", file);
  return 0;
}

static int rewrite(const char *file, long pos, const unsigned char *bytes, size_t n) {
  FILE *fp = fopen(file, "r+b");
  if (!fp)
    return fail("cannot open for writing", file);
  int bad = fseek(fp, pos, SEEK_SET) != 0 || fwrite(bytes, 1, n, fp) != n;
  if (fclose(fp) != 0 || bad)
    return fail("write failed", file);
  return 0;
}

static int zero(const char *file, const char *dataset) {
  haddr_t addr;
  hsize_t size;
  int rank;
  if (chunk0(file, dataset, &addr, &size, &rank))
    return 1;
  unsigned char *z = calloc(1, (size_t)size);
  int rc = z ? rewrite(file, (long)addr, z, (size_t)size) : fail("no memory", file);
  free(z);
  return rc;
}

/* A v1 B-tree node of chunks: "TREE", type 1, level, entries (2), siblings (2 x 8), then keys of
 * size (4), filter mask (4) and rank + 1 offsets (8 each), each key followed by a child address. */
static int index_flip(const char *file, const char *dataset) {
  haddr_t addr;
  hsize_t size;
  int rank;
  if (chunk0(file, dataset, &addr, &size, &rank))
    return 1;
  FILE *fp = fopen(file, "rb");
  if (!fp)
    return fail("cannot open", file);
  fseek(fp, 0, SEEK_END);
  long n = ftell(fp);
  unsigned char *b = n > 0 ? malloc((size_t)n) : NULL;
  int got = b && fseek(fp, 0, SEEK_SET) == 0 && fread(b, 1, (size_t)n, fp) == (size_t)n;
  fclose(fp);
  size_t key = 8 + 8 * (size_t)(rank + 1);
  for (long i = 0; got && i + 24 + (long)key + 8 <= n; i++) {
    if (memcmp(b + i, "TREE", 4) || b[i + 4] != 1 || b[i + 5] != 0)
      continue;
    uint64_t child = 0;
    for (int j = 7; j >= 0; j--)
      child = child << 8 | b[i + 24 + (long)key + j];
    if (child != addr)
      continue;
    unsigned char c = b[i + 24 + 8 + 1] ^ 0x01; /* chunk 0's first offset: 0 becomes 256 */
    free(b);
    return rewrite(file, i + 24 + 8 + 1, &c, 1);
  }
  free(b);
  return fail("no v1 B-tree node pointing at chunk 0", file);
}

static int delete_attr(const char *file, const char *object, const char *attr) {
  hid_t f = H5Fopen(file, H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0)
    return fail("cannot open as HDF5 for writing", file);
  herr_t st = H5Adelete_by_name(f, object, attr, H5P_DEFAULT);
  if (H5Fclose(f) < 0 || st < 0)
    return fail("cannot delete the attribute", file);
  return 0;
}

static int flip(const char *file, const char *dataset) {
  hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0)
    return fail("cannot open as HDF5", file);
  hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT);
  if (d < 0) {
    H5Fclose(f);
    return fail("no such dataset", file);
  }
  hsize_t offset[2] = {0, 0}, size = 0;
  haddr_t addr = HADDR_UNDEF;
  unsigned mask = 0;
  /* HDF5 1.10.8 rejects H5S_ALL here ("not a dataspace ID"): pass the dataset's own space. */
  hid_t sp = H5Dget_space(d);
  herr_t st = sp < 0 ? -1 : H5Dget_chunk_info(d, sp, 0, offset, &mask, &addr, &size);
  if (sp >= 0)
    H5Sclose(sp);
  H5Dclose(d);
  H5Fclose(f);
  if (st < 0 || addr == HADDR_UNDEF || size == 0)
    return fail("no stored chunk 0 (not a chunked dataset?)", file);
  FILE *fp = fopen(file, "r+b");
  if (!fp)
    return fail("cannot open for writing", file);
  long pos = (long)(addr + size / 2);
  int c;
  if (fseek(fp, pos, SEEK_SET) != 0 || (c = fgetc(fp)) == EOF || fseek(fp, pos, SEEK_SET) != 0 ||
      fputc(c ^ 0x5a, fp) == EOF) {
    fclose(fp);
    return fail("cannot rewrite the byte", file);
  }
  if (fclose(fp) != 0)
    return fail("write failed", file);
  return 0;
}

static int set_version(const char *file, long long n) {
  hid_t f = H5Fopen(file, H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0)
    return fail("cannot open as HDF5 for writing", file);
  hid_t a = H5Aopen(f, "version", H5P_DEFAULT);
  if (a < 0) {
    H5Fclose(f);
    return fail("no root attribute 'version'", file);
  }
  int64_t v = n;
  herr_t st = H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  if (H5Fclose(f) < 0 || st < 0)
    return fail("cannot write attribute 'version'", file);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[1], "flip") && strcmp(argv[1], "zero") && strcmp(argv[1], "index") &&
                    strcmp(argv[1], "unhash") && strcmp(argv[1], "unattr") && strcmp(argv[1], "version"))) {
    fprintf(stderr, "usage: ckpt_tamper flip|zero|index|unhash FILE DATASET | ckpt_tamper unattr FILE ATTR | "
                    "ckpt_tamper version FILE N\n");
    return 1;
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  if (!strcmp(argv[1], "flip"))
    return flip(argv[2], argv[3]);
  if (!strcmp(argv[1], "zero"))
    return zero(argv[2], argv[3]);
  if (!strcmp(argv[1], "index"))
    return index_flip(argv[2], argv[3]);
  if (!strcmp(argv[1], "unhash"))
    return delete_attr(argv[2], argv[3], "hash64");
  if (!strcmp(argv[1], "unattr"))
    return delete_attr(argv[2], "/", argv[3]);
  char *end;
  long long n = strtoll(argv[3], &end, 10);
  if (*end || end == argv[3])
    return fail("N must be an integer", argv[2]);
  return set_version(argv[2], n);
}
