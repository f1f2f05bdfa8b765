/* Fuzz target: the CSV converter (dp_convert_csv, `dptrain convert csv`).
 *
 * Input layout: byte 0 chooses the options, the rest is the CSV text.
 *   bit 0      header (the first line is skipped)
 *   bit 1      regression (the label column is a float target)
 *   bit 2      also a test split: the text is split at its first form feed (\f) into train and
 *              test files (without one, the same text serves as both)
 *   bits 3-5   the label column: 0 → 0, 1 → 1, 2 → 2, 3 → -1, 4 → -2, 5 → 7, 6 → -100, 7 → 1000
 *   bit 6      scale 1/255 (else 0, meaning 1)
 * A conversion that succeeds must produce a file dp_dataset_open accepts (train and, when given,
 * test) with at least one row and one feature; otherwise the target aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/data.h"
#include "dptrain/error.h"
#include "fuzz_common.h"

static const int label_cols[8] = {0, 1, 2, -1, -2, 7, -100, 1000};

static void check_output(const char *out, const char *group) {
  dp_dataset ds;
  int rc = dp_dataset_open(&ds, out, group, 0);
  if (rc != 0 || ds.n < 1 || ds.d < 1) {
    fprintf(stderr, "fuzz_csv: converted, but /%s of the output does not open: %s\n", group, dp_errmsg(rc));
    abort();
  }
  dp_dataset_close(&ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 65536)
    return 0;
  uint8_t flags = data[0];
  const uint8_t *text = data + 1;
  size_t n = size - 1;
  char train[640], test[640], out[640];
  int with_test = flags & 4;
  if (with_test) {
    const uint8_t *ff = memchr(text, '\f', n);
    size_t cut = ff ? (size_t)(ff - text) : n;
    fz_write(train, sizeof train, "in0", text, cut);
    if (ff)
      fz_write(test, sizeof test, "in1", ff + 1, n - cut - 1);
    else
      fz_write(test, sizeof test, "in1", text, n);
  } else {
    fz_write(train, sizeof train, "in0", text, n);
  }
  fz_path(out, sizeof out, "out.h5");
  dp_csv_options o = {.train_csv = train,
                      .test_csv = with_test ? test : NULL,
                      .label_col = label_cols[(flags >> 3) & 7],
                      .header = flags & 1,
                      .regression = (flags >> 1) & 1,
                      .scale = (flags & 64) ? 1.0f / 255.0f : 0.0f,
                      .out = out};
  int rc = dp_convert_csv(&o);
  fz_log("convert_csv", rc);
  if (rc == 0) {
    check_output(out, "train");
    if (with_test)
      check_output(out, "test");
  }
  dp_error_clear();
  fz_rm("out.h5");
  fz_rm("out.h5.tmp");
  fz_rm("in0");
  fz_rm("in1");
  return 0;
}
