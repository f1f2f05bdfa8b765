/* Fault injection for the tests. The hooks exist only in the test build (-DDP_FAULTS, the binary in
 * build/test/ that tests/cli uses); in the release binary they are empty inline functions, so
 * neither the code nor the environment variables that trigger it are in build/dptrain. */
#ifndef DPTRAIN_FAULTS_H
#define DPTRAIN_FAULTS_H

#include <stdint.h>

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
/* DPTRAIN_TEST_SLOW_STARTUP=PHASE:SECONDS: every rank, at the start of that start-up phase ("data":
 * before it opens the data; "checkpoint": once rank 0 holds the run directory's lock, before the
 * start point's checkpoint is read), says "fault: slow start-up" on stderr and sleeps that long
 * whatever signals come, as a large file read from a slow file system takes. */
void dp_fault_slow_startup(const char *phase);
/* DPTRAIN_TEST_OUT_MEM_MAX=BYTES: the largest new data file built in memory (real: the default), so
 * that a small file takes the path a large one does. */
double dp_fault_out_mem_max(double real);
/* DPTRAIN_TEST_STREAM_FAIL=K: the streaming reader's K-th block read (0-based) fails as a read error
 * would; DPTRAIN_TEST_STREAM_SLOW=MS: it sleeps that long before each block read, so that a test can
 * change the file between reads. Nonzero: fail this read. */
int dp_fault_stream_read(long long k);
/* DPTRAIN_TEST_DUMP_ROWS=PREFIX: each rank appends a line "STEP ROW..." of the training rows of every
 * step it computes to PREFIX.RANK. */
void dp_fault_dump_rows(int rank, long long step, const int64_t *rows, long long n);
/* DPTRAIN_TEST_PEAK_RSS: the process's peak resident memory (VmHWM) printed to stderr at the end. */
void dp_fault_peak_rss(int rank);
#else
static inline int dp_fault_stream_read(long long k) {
  (void)k;
  return 0;
}
static inline void dp_fault_dump_rows(int rank, long long step, const int64_t *rows, long long n) {
  (void)rank;
  (void)step;
  (void)rows;
  (void)n;
}
static inline void dp_fault_peak_rss(int rank) { (void)rank; }
static inline void dp_fault_before_rename(const char *what) { (void)what; }
static inline void dp_fault_slow_checkpoint(void) {}
static inline void dp_fault_before_step(int rank, long long step) {
  (void)rank;
  (void)step;
}
static inline int dp_fault_no_space_check(void) { return 0; }
static inline double dp_fault_node_memory(double real) { return real; }
static inline void dp_fault_slow_startup(const char *phase) { (void)phase; }
static inline double dp_fault_out_mem_max(double real) { return real; }
#endif

#endif
