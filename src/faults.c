/* The fault-injection hooks of src/faults.h; compiled only into the test build (-DDP_FAULTS). */
#include "faults.h"

#ifdef DP_FAULTS

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void dp_fault_before_rename(const char *what) {
  if (getenv("DPTRAIN_TEST_CRASH_BEFORE_RENAME") && !strcmp(what, "the checkpoint"))
    raise(SIGKILL);
}

void dp_fault_slow_checkpoint(void) {
  const char *v = getenv("DPTRAIN_TEST_SLOW_CHECKPOINT");
  /* In 10 ms naps: a signal (mpirun's SIGTERM while the ranks stop) cuts one nap short, not the write. */
  for (int naps = v ? 100 * atoi(v) : 0; naps > 0; naps--)
    nanosleep(&(struct timespec){0, 10000000}, NULL);
}

void dp_fault_before_step(int rank, long long step) {
  const char *v = getenv("DPTRAIN_TEST_STALL");
  int r;
  long long s;
  if (v && sscanf(v, "%d:%lld", &r, &s) == 2 && r == rank && s == step)
    for (;;)
      pause();
}

int dp_fault_no_space_check(void) { return getenv("DPTRAIN_TEST_NO_SPACE_CHECK") != NULL; }

double dp_fault_node_memory(double real) {
  const char *v = getenv("DPTRAIN_TEST_NODE_MEMORY");
  return v ? atof(v) : real;
}

void dp_fault_slow_startup(const char *phase) {
  const char *v = getenv("DPTRAIN_TEST_SLOW_STARTUP"), *colon = v ? strchr(v, ':') : NULL;
  if (!colon || strncmp(v, phase, (size_t)(colon - v)) || phase[colon - v])
    return;
  fprintf(stderr, "fault: slow start-up\n");
  for (int naps = 100 * atoi(colon + 1); naps > 0; naps--) /* a signal cuts one nap short, not the phase */
    nanosleep(&(struct timespec){0, 10000000}, NULL);
}

double dp_fault_out_mem_max(double real) {
  const char *v = getenv("DPTRAIN_TEST_OUT_MEM_MAX");
  return v ? atof(v) : real;
}

int dp_fault_stream_read(long long k) {
  const char *slow = getenv("DPTRAIN_TEST_STREAM_SLOW"), *fail = getenv("DPTRAIN_TEST_STREAM_FAIL");
  long ms = slow ? atol(slow) : 0;
  if (ms > 0)
    nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000}, NULL);
  return fail && atoll(fail) == k;
}

void dp_fault_dump_rows(int rank, long long step, const int64_t *rows, long long n) {
  const char *prefix = getenv("DPTRAIN_TEST_DUMP_ROWS");
  char path[1100];
  if (!prefix)
    return;
  snprintf(path, sizeof path, "%s.%d", prefix, rank);
  FILE *f = fopen(path, "a");
  if (!f)
    return;
  fprintf(f, "%lld", step);
  for (long long i = 0; i < n; i++)
    fprintf(f, " %lld", (long long)rows[i]);
  fputc('\n', f);
  fclose(f);
}

void dp_fault_peak_rss(int rank) {
  char line[256];
  FILE *f = getenv("DPTRAIN_TEST_PEAK_RSS") ? fopen("/proc/self/status", "r") : NULL;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmHWM:", 6))
      fprintf(stderr, "rank %d peak %s", rank, line);
  if (f)
    fclose(f);
}

#else
/* ISO C forbids an empty translation unit. */
typedef int dp_faults_unused;
#endif
