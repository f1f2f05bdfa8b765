/* ckpt_tamper flip FILE DATASET    flip one byte inside the stored data (chunk 0) of DATASET
 * ckpt_tamper version FILE N       overwrite the root attribute "version" (int64) with N
 * Damages a checkpoint on purpose, for the command-line tests of checkpoint validation.
 * Prints one error and exits 1 on failure. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *file) {
  fprintf(stderr, "ckpt_tamper: %s: %s\n", file, what);
  return 1;
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
  if (argc != 4 || (strcmp(argv[1], "flip") && strcmp(argv[1], "version"))) {
    fprintf(stderr, "usage: ckpt_tamper flip FILE DATASET | ckpt_tamper version FILE N\n");
    return 1;
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  if (!strcmp(argv[1], "flip"))
    return flip(argv[2], argv[3]);
  char *end;
  long long n = strtoll(argv[3], &end, 10);
  if (*end || end == argv[3])
    return fail("N must be an integer", argv[2]);
  return set_version(argv[2], n);
}
