/* `dptrain predict CHECKPOINT DATA [-o OUT] [--split train|test]`: a checkpoint's model on every row
 * of DATA through the inference library (include/dptrain/infer.h), so its outputs are the library's. */
#ifndef DPTRAIN_PREDICT_H
#define DPTRAIN_PREDICT_H

#include <stdio.h>

#include "dptrain/comm.h"

typedef struct {
  const char *ckpt;
  const char *data;  /* an HDF5 data file, or a CSV (name ending in .csv) in the `convert csv` layout */
  const char *out;   /* .h5 (/y, and /label for classifiers) or .csv; NULL: CSV on standard output */
  const char *split; /* HDF5 input: "test" or "train" */
} dp_predict_opts;

/* Every rank predicts its share of each round of rows; rank 0 writes them in order (to a .tmp file
 * renamed into place). Collective; every rank returns the same status. */
int dp_predict_run(const dp_predict_opts *o, dp_comm *comm, FILE *std_out);

#endif
