/* `dptrain bench`: measured throughput of the training step next to the references it should be
 * judged against, all taken in the same run: the OpenBLAS sgemm rate for the step's own GEMM
 * shapes, the allreduce time for the gradient block's size, a plain sequential write for
 * checkpoints, and the process's memory baseline. Prints one JSON object (rank 0). */
#ifndef DPTRAIN_BENCH_H
#define DPTRAIN_BENCH_H

#include <stdio.h>

#include "dptrain/comm.h"

#define DP_BENCH_DATA "data/fashion_mnist.h5"

typedef struct {
  const char *data;      /* an HDF5 data file with 784-wide rows; NULL: the config's, or DP_BENCH_DATA */
  const char *hidden;    /* hidden layer widths, "512,256" */
  const char *config;    /* a config file whose model and optimizer are timed instead; NULL = the MLP */
  long batch;            /* the GLOBAL batch */
  double seconds;        /* time each measurement for about this long */
  int threads;           /* BLAS threads per rank; 0 = as dp_blas_set_threads decides */
  int sgemm;             /* also time the step's GEMM shapes alone (1 = yes) */
  int allreduce;         /* also time allreduces of 2^10 .. 2^24 bytes (needs > 1 rank) */
  const char *ckpt_dir;  /* also time a checkpoint write here against a plain write; NULL = no */
  double bucket_mb;      /* [train] bucket_mb */
  const char *comm;      /* [train] comm: auto, node or flat; NULL = auto */
} dp_bench_opts;

/* Collective. Writes the JSON result to out on rank 0. */
int dp_bench_run(const dp_bench_opts *o, dp_comm *comm, FILE *out);

#endif
