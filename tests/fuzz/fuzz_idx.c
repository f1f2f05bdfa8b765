/* Fuzz target: the IDX converter (dp_convert_idx, `dptrain convert idx`).
 *
 * Input layout:
 *   byte 0        flags: bit 0 = also a test split
 *   bytes 1-2     big-endian length of the train images part (clamped to what is there)
 *   bytes 3-4     (test only) length of the train labels part
 *   bytes 5-6     (test only) length of the test images part
 *   rest          the parts in order: train images, train labels, [test images, test labels]
 * Without a test split the rest after the images is the labels file. Each part is written to its
 * own file (plain or gzip'd: the converter reads both) and the converter writes out.h5 in the
 * temp directory. A conversion that succeeds must produce a file dp_dataset_open accepts with as
 * many rows as the images file declares; otherwise the target aborts.
 *
 * The converter allocates what an IDX header declares before reading the data (up to 64 GiB);
 * inputs that declare more than FZ_MAX_BYTES are skipped, so libFuzzer's malloc limit does not
 * report that design choice as a crash on every other input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "dptrain/data.h"
#include "dptrain/error.h"
#include "fuzz_common.h"

#define FZ_MAX_BYTES (64u << 20)

/* What the IDX file at path declares (items × item bytes), or 0 when the header is not valid. */
static double declared(const char *path) {
  gzFile gz = gzopen(path, "rb");
  if (!gz)
    return 0;
  uint8_t h[16];
  int got = gzread(gz, h, sizeof h);
  gzclose(gz);
  if (got < 8 || h[0] || h[1] || h[2] != 8 || h[3] < 1 || h[3] > 3 || got < 4 + 4 * h[3])
    return 0;
  double total = 1;
  for (int i = 0; i < h[3]; i++)
    total *= (double)((uint32_t)h[4 + 4 * i] << 24 | (uint32_t)h[5 + 4 * i] << 16 | (uint32_t)h[6 + 4 * i] << 8 |
                      h[7 + 4 * i]);
  return total;
}

static size_t take(const uint8_t **p, size_t *left) {
  if (*left < 2)
    return *left = 0, 0;
  size_t v = (size_t)(*p)[0] << 8 | (*p)[1];
  *p += 2;
  *left -= 2;
  return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  int with_test = data[0] & 1;
  const uint8_t *p = data + 1;
  size_t left = size - 1;
  size_t len[4];
  len[0] = take(&p, &left);
  len[1] = with_test ? take(&p, &left) : left;
  len[2] = with_test ? take(&p, &left) : 0;
  const char *names[4] = {"in0", "in1", "in2", "in3"};
  char path[4][640];
  size_t off = 0;
  for (int i = 0; i < (with_test ? 4 : 2); i++) {
    size_t n = i == 3 || (i == 1 && !with_test) ? left - off : len[i];
    if (n > left - off)
      n = left - off;
    fz_write(path[i], sizeof path[i], names[i], p + off, n);
    off += n;
  }
  for (int i = 0; i < (with_test ? 4 : 2); i++)
    if (declared(path[i]) > FZ_MAX_BYTES)
      goto done;

  char out[640];
  fz_path(out, sizeof out, "out.h5");
  int rc = dp_convert_idx(path[0], path[1], with_test ? path[2] : NULL, with_test ? path[3] : NULL, out);
  fz_log("convert_idx", rc);
  if (rc == 0) {
    dp_dataset ds;
    int orc = dp_dataset_open(&ds, out, "train", 0);
    double n = declared(path[0]);
    if (orc != 0 || ds.n < 1 || ds.d < 1 || (double)ds.n * (double)ds.d != n) {
      fprintf(stderr, "fuzz_idx: converted, but the output does not open as %g images: %s\n", n, dp_errmsg(orc));
      abort();
    }
    dp_dataset_close(&ds);
  }
  dp_error_clear();
  fz_rm("out.h5");
  fz_rm("out.h5.tmp");
done:
  for (int i = 0; i < 4; i++)
    fz_rm(names[i]);
  return 0;
}
