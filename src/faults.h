/* Fault injection for the tests. The hooks exist only in the test build (-DDP_FAULTS, the binary in
 * build/test/ that tests/cli uses); in the release binary they are empty inline functions, so
 * neither the code nor the environment variables that trigger it are in build/dptrain. */
#ifndef DPTRAIN_FAULTS_H
#define DPTRAIN_FAULTS_H

#ifdef DP_FAULTS
/* DPTRAIN_TEST_CRASH_BEFORE_RENAME: the durable writer is killed between write and rename, when
 * what it writes is `what` ("the checkpoint"; other files are written at start-up too). */
void dp_fault_before_rename(const char *what);
/* DPTRAIN_TEST_STALL=RANK:STEP: that rank hangs before that step (a stuck rank). */
void dp_fault_before_step(int rank, long long step);
#else
static inline void dp_fault_before_rename(const char *what) { (void)what; }
static inline void dp_fault_before_step(int rank, long long step) {
  (void)rank;
  (void)step;
}
#endif

#endif
