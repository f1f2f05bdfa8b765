/* OpenBLAS set-up: which kernel it uses and how many threads each rank gives it. */
#ifndef DPTRAIN_BLAS_H
#define DPTRAIN_BLAS_H

/* OpenBLAS 0.3.21 (Debian 12) does not know recent Intel models and falls back to its SSE3
 * "Prescott" kernel, which runs sgemm 2-3x slower than the AVX-512 one the CPU supports. When that
 * happened and OPENBLAS_CORETYPE is unset, this sets it to the best kernel the CPU supports and
 * re-executes the program (OpenBLAS reads the variable only when it loads). Call first in main,
 * before MPI_Init. Returns only when nothing needed doing (or the exec failed). */
void dp_blas_fix_kernel(char **argv);
/* The kernel OpenBLAS uses ("SkylakeX"). */
const char *dp_blas_kernel(void);
/* Sets OpenBLAS's thread count; n = 0 picks cores on the node / ranks on the node (at least 1).
 * Returns the count set. */
int dp_blas_set_threads(int n, int ranks_on_node);

#endif
