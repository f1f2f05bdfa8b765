/* OpenBLAS kernel and thread selection. */
#include <cblas.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#include "dptrain/blas.h"

void dp_blas_fix_kernel(char **argv) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (getenv("OPENBLAS_CORETYPE") || getenv("DPTRAIN_NO_KERNEL_FIX"))
    return;
  if (strcasecmp(openblas_get_corename(), "prescott") != 0)
    return;
  const char *core = NULL;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    core = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    core = "Haswell";
  if (!core)
    return;
  setenv("OPENBLAS_CORETYPE", core, 1);
  execv("/proc/self/exe", argv); /* on failure we carry on with the slow kernel */
  unsetenv("OPENBLAS_CORETYPE");
#else
  (void)argv;
#endif
}

const char *dp_blas_kernel(void) {
  return openblas_get_corename();
}

int dp_blas_set_threads(int n, int ranks_on_node) {
  if (n <= 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    n = (int)(cores / (ranks_on_node > 0 ? ranks_on_node : 1));
    if (n < 1)
      n = 1;
  }
  openblas_set_num_threads(n);
  return n;
}
