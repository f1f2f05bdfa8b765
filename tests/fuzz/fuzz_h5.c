/* Fuzz target: everything that reads an HDF5 file the user hands over.
 *
 * The input is written to a file and read (1) as a data set, as `dptrain train` reads it: /train
 * and the optional /test opened, part of the rows loaded into memory, a gather of a few rows (some
 * from memory, some from the file), the label range and the finite-values check; (2) as a
 * checkpoint, as `dptrain inspect` and `dptrain eval` read it: dp_ckpt_inspect (to /dev/null),
 * dp_ckpt_config_text (and the text parsed as eval does), and dp_ckpt_load_weights into a small
 * fixed model (FZ_MODEL, input width FZ_IN_DIM: the seed checkpoints are of that model).
 *
 * Libfuzzer mutates bytes, so most mutants fail in HDF5's own checks; the seeds (tests/fuzz/corpus/
 * h5) are real data files and checkpoints, so the first mutants get past them. A data set whose
 * declared size is larger than FZ_MAX_VALUES is opened and validated but not read: HDF5 would fill
 * a never-written dataset of any declared size, which is slow, not a bug. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/checkpoint.h"
#include "dptrain/config.h"
#include "dptrain/data.h"
#include "dptrain/error.h"
#include "dptrain/model.h"
#include "dptrain/optim.h"
#include "fuzz_common.h"

#define FZ_MAX_VALUES (1 << 20)
#define FZ_IN_DIM 4
#define FZ_MODEL                                                                                               \
  "[data]\npath = fuzz.h5\n[layer]\nunits = 8\nnorm = batch\n[layer]\nunits = 3\nactivation = identity\n" \
  "[optimizer]\nname = adam\nlr = 0.01\n"

static dp_model model;
static dp_optim optim;
static dp_state state; /* the model and an Adam optimizer, as a trainer registers them */
static dp_config cfg, stored;
static FILE *devnull;
static char *text;
#define TEXT_MAX (1 << 16)

static int make_state(void) {
  dp_optim_hparams h;
  dp_optim_hparams_from_cfg(&h, &cfg.optimizer);
  dp_state_init(&state);
  DP_TRY(dp_optim_create(&optim, &h, model.n_floats));
  DP_TRY(dp_model_register(&model, &state));
  return dp_optim_register(&optim, &state, model.params, model.grads);
}

static void setup(void) {
  if (devnull)
    return;
  fz_tmpdir();
  devnull = fopen("/dev/null", "w");
  text = malloc(TEXT_MAX);
  if (!devnull || !text || dp_config_parse_string(&cfg, FZ_MODEL, "fuzz-model.ini", NULL, 0) != 0 ||
      dp_model_create(&model, cfg.layer, cfg.n_layers, cfg.model.loss, NULL, FZ_IN_DIM, 8) != 0 || make_state() != 0) {
    fprintf(stderr, "fuzz_h5: setup failed: %s\n", dp_errmsg(DP_EINVAL));
    exit(1);
  }
}

static void read_split(const char *path, const char *group) {
  dp_dataset ds;
  int found;
  int rc = dp_dataset_open(&ds, path, group, strcmp(group, "test") ? NULL : &found);
  fz_log(group, rc);
  if (rc == 0 && ds.n >= 1 && ds.d >= 1 && ds.k >= 1 && (double)ds.n * (double)(ds.d + ds.k) <= FZ_MAX_VALUES) {
    int64_t n = ds.n;
    rc = dp_dataset_load(&ds, 0, (n + 1) / 2);
    if (rc == 0)
      rc = dp_dataset_check_finite(&ds, 0, n);
    if (rc == 0 && ds.has_labels) {
      int32_t mn, mx;
      rc = dp_dataset_label_range(&ds, 0, n, &mn, &mx);
      if (rc == 0 && mn > mx) {
        fprintf(stderr, "fuzz_h5: label range %d..%d over %lld rows\n", mn, mx, (long long)n);
        abort();
      }
    }
    if (rc == 0) {
      int64_t rows[6] = {0, n - 1, n / 2, n / 2 + 1 < n ? n / 2 + 1 : n - 1, n / 2 + 2 < n ? n / 2 + 2 : 0, 0};
      float *x = malloc(sizeof(float) * 6 * (size_t)ds.d);
      int32_t *labels = malloc(sizeof(int32_t) * 6);
      float *targets = malloc(sizeof(float) * 6 * (size_t)ds.k);
      if (x && labels && targets)
        rc = dp_dataset_gather(&ds, rows, 6, x, ds.has_labels ? labels : NULL, ds.has_labels ? NULL : targets);
      fz_log("  load, check_finite, label_range, gather", rc);
      free(x);
      free(labels);
      free(targets);
    }
  }
  dp_dataset_close(&ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  char path[640];
  fz_write(path, sizeof path, "in0", data, size);

  read_split(path, "train");
  read_split(path, "test");

  fz_log("inspect", dp_ckpt_inspect(path, devnull));
  int rc = dp_ckpt_config_text(path, text, TEXT_MAX);
  fz_log("config_text", rc);
  if (rc == 0)
    fz_log("stored config parses", dp_config_parse_string(&stored, text, path, NULL, 0));
  fz_log("read model", dp_ckpt_read(&state, path, DP_ST_MODEL));
  fz_log("read state", dp_ckpt_read(&state, path, 0));

  dp_error_clear();
  fz_rm("in0");
  return 0;
}
