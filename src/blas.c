/* OpenBLAS kernel and thread selection. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <cblas.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "dptrain/blas.h"
#include "dptrain/error.h"

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

/* cpu_set_t's 1024 CPUs; a machine with more falls back to the online count. */
enum { MASK_WORDS = 16, MAX_THREADS = 1024 };

static int popcount_words(const uint64_t *m, int words) {
  int n = 0;
  for (int w = 0; w < words; w++)
    n += __builtin_popcountll(m[w]);
  return n;
}

int dp_blas_share(const uint64_t *masks, int words, int n, int me) {
  const uint64_t *mine = masks + (size_t)me * words;
  double share = 0;
  for (int cpu = 0; cpu < 64 * words; cpu++) {
    uint64_t bit = 1ull << (cpu % 64);
    if (!(mine[cpu / 64] & bit))
      continue;
    int holders = 0;
    for (int r = 0; r < n; r++)
      holders += (masks[(size_t)r * words + cpu / 64] & bit) != 0;
    share += 1.0 / holders;
  }
  int t = (int)(share + 1e-9);
  return t < 1 ? 1 : t > MAX_THREADS ? MAX_THREADS : t;
}

/* This process's CPUs; all online CPUs when the kernel will not say. */
static void own_mask(uint64_t m[MASK_WORDS]) {
  memset(m, 0, MASK_WORDS * sizeof *m);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    for (int cpu = 0; cpu < 64 * MASK_WORDS; cpu++)
      if (CPU_ISSET(cpu, &set))
        m[cpu / 64] |= 1ull << (cpu % 64);
    return;
  }
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  for (long cpu = 0; cpu < online && cpu < 64 * MASK_WORDS; cpu++)
    m[cpu / 64] |= 1ull << (cpu % 64);
}

/* A thread-count variable as OpenBLAS and OpenMP read it: a whole number, OMP_NUM_THREADS's
 * first level before any comma. 0 when unset or empty; DP_ECONFIG when it is something else. */
static int env_threads(const char *name, int *n) {
  const char *v = getenv(name);
  *n = 0;
  if (!v || !*v)
    return 0;
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (end == v || (*end && *end != ',') || errno || x < 1 || x > MAX_THREADS)
    return dp_fail(DP_ECONFIG, "%s='%s': expected a number of BLAS threads from 1 to %d (or unset it)", name, v,
                   MAX_THREADS);
  *n = (int)x;
  return 0;
}

/* The affinity rule, and what it saw: this rank's cores, and how many of the node's ranks (itself
 * included) hold any of them. */
static int from_masks(dp_comm *c, dp_blas_threads *out) {
  uint64_t mine[MASK_WORDS];
  own_mask(mine);
  int n = c->node_size > 0 ? c->node_size : 1;
  uint64_t *all = calloc((size_t)n * MASK_WORDS, sizeof *all);
  if (!all)
    return dp_fail(DP_ENOMEM, "BLAS threads: out of memory");
  int rc = dp_comm_node_allgather(c, mine, all, sizeof mine);
  if (rc == 0) {
    int cores = popcount_words(mine, MASK_WORDS), sharers = 1;
    for (int r = 0; r < n; r++)
      for (int w = 0; w < MASK_WORDS; w++)
        if (r != c->node_rank && (all[(size_t)r * MASK_WORDS + w] & mine[w])) {
          sharers++;
          break;
        }
    out->threads = dp_blas_share(all, MASK_WORDS, n, c->node_rank);
    if (sharers > 1)
      snprintf(out->source, sizeof out->source, "from the affinity mask: %d core%s shared by %d ranks", cores,
               dp_plural(cores), sharers);
    else
      snprintf(out->source, sizeof out->source, "from the affinity mask: %d core%s", cores, dp_plural(cores));
  }
  free(all);
  return rc;
}

int dp_blas_set_threads(dp_comm *c, int configured, dp_blas_threads *out) {
  *out = (dp_blas_threads){.threads = 1};
  int env = 0;
  const char *name = "OPENBLAS_NUM_THREADS";
  int bad = env_threads(name, &env);
  if (bad == 0 && env == 0) {
    name = "OMP_NUM_THREADS";
    bad = env_threads(name, &env);
  }
  /* Every rank gathers its mask, whatever decides here, so the collective never depends on a
   * variable that may differ between ranks. */
  DP_TRY(from_masks(c, out));
  if (configured > 0) {
    out->threads = configured;
    snprintf(out->source, sizeof out->source, "set by [train] threads");
  } else if (bad < 0) {
    return bad;
  } else if (env > 0) {
    out->threads = env;
    snprintf(out->source, sizeof out->source, "set by %s", name);
  }
  openblas_set_num_threads(out->threads);
  /* What OpenBLAS took, which its build may cap, is what the start-up line must say. */
  int got = openblas_get_num_threads();
  if (got > 0 && got != out->threads) {
    size_t len = strlen(out->source);
    snprintf(out->source + len, sizeof out->source - len, ", capped at %d by OpenBLAS", got);
    out->threads = got;
  }
  return 0;
}
