/* Fault injection for the tests. The hooks exist only in the test build (-DDP_FAULTS, the binary in
 * build/test/ that tests/cli uses); in the release binary they are empty inline functions, so
 * neither the code nor the environment variables that trigger it are in build/dptrain. */
#ifndef DPTRAIN_FAULTS_H
#define DPTRAIN_FAULTS_H

#ifdef DP_FAULTS
/* DPTRAIN_TEST_CRASH_BEFORE_RENAME: the durable writer is killed between write and rename, when
 * what it writes is `what` ("the checkpoint"; other files are written at start-up too). */
void dp_fault_before_rename(const char *what);
/* DPTRAIN_TEST_SLOW_CHECKPOINT=SECONDS: the checkpoint's writer (rank 0) sleeps that long before its
 * rename, as a large checkpoint on a slow file system takes (the others wait in the next collective). */
void dp_fault_slow_checkpoint(void);
/* DPTRAIN_TEST_STALL=RANK:STEP: that rank hangs before that step (a stuck rank). */
void dp_fault_before_step(int rank, long long step);
/* DPTRAIN_TEST_NO_SPACE_CHECK: the checkpoint writer's free-space estimate passes whatever is free, so
 * HDF5 itself meets the full disk (as when the estimate is short or the disk fills meanwhile). */
int dp_fault_no_space_check(void);
/* DPTRAIN_TEST_NODE_MEMORY=BYTES: the node's memory as the start-up checks see it (real: the actual). */
double dp_fault_node_memory(double real);
#else
static inline void dp_fault_before_rename(const char *what) { (void)what; }
static inline void dp_fault_slow_checkpoint(void) {}
static inline void dp_fault_before_step(int rank, long long step) {
  (void)rank;
  (void)step;
}
static inline int dp_fault_no_space_check(void) { return 0; }
static inline double dp_fault_node_memory(double real) { return real; }
#endif

#endif
