/* OpenBLAS set-up: which kernel it uses and how many threads each rank gives it. */
#ifndef DPTRAIN_BLAS_H
#define DPTRAIN_BLAS_H

#include <stdint.h>

#include "dptrain/comm.h"

/* OpenBLAS 0.3.21 (Debian 12) does not know recent Intel models and falls back to its SSE3
 * "Prescott" kernel, which runs sgemm 2-3x slower than the AVX-512 one the CPU supports. When that
 * happened and OPENBLAS_CORETYPE is unset, this sets it to the best kernel the CPU supports and
 * re-executes the program (OpenBLAS reads the variable only when it loads). Call first in main,
 * before MPI_Init. Returns only when nothing needed doing (or the exec failed). */
void dp_blas_fix_kernel(char **argv);
/* The kernel OpenBLAS uses ("SkylakeX"). */
const char *dp_blas_kernel(void);
/* The threads one rank gives OpenBLAS, and what decided it, for the start-up line. */
typedef struct {
  int threads;
  char source[96]; /* "set by [train] threads", "set by OMP_NUM_THREADS", "from the affinity mask: ..." */
} dp_blas_threads;

/* Sets OpenBLAS's thread count. configured > 0 ([train] threads) wins; else OPENBLAS_NUM_THREADS,
 * else OMP_NUM_THREADS (its first entry) when set; else this rank's share of the cores in its
 * affinity mask (sched_getaffinity), a core held by k of the node's ranks' masks counting 1/k
 * (at least 1). A collective over c (every rank allgathers its mask on its node), whatever decides.
 * Returns 0, or DP_ECONFIG naming a variable that is no thread count (nothing set; the caller
 * agrees on it). */
int dp_blas_set_threads(dp_comm *c, int configured, dp_blas_threads *out);

/* The share rule above on n ranks' masks (words 64-bit words each, CPU i = bit i % 64 of word
 * i / 64): the threads rank me gets. */
int dp_blas_share(const uint64_t *masks, int words, int n, int me);

#endif
