/* The fault-injection hooks of src/faults.h; compiled only into the test build (-DDP_FAULTS). */
#include "faults.h"

#ifdef DP_FAULTS

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void dp_fault_before_rename(const char *what) {
  if (getenv("DPTRAIN_TEST_CRASH_BEFORE_RENAME") && !strcmp(what, "the checkpoint"))
    raise(SIGKILL);
}

void dp_fault_before_step(int rank, long long step) {
  const char *v = getenv("DPTRAIN_TEST_STALL");
  int r;
  long long s;
  if (v && sscanf(v, "%d:%lld", &r, &s) == 2 && r == rank && s == step)
    for (;;)
      pause();
}

#else
/* ISO C forbids an empty translation unit. */
typedef int dp_faults_unused;
#endif
