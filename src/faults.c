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

#else
/* ISO C forbids an empty translation unit. */
typedef int dp_faults_unused;
#endif
