/* Error codes and the last-error message.
 *
 * Every library function returns 0 or a negative DP_E* code. The code says what kind of failure it
 * was; the message (set with dp_fail) says which file, key or dataset and what was expected, so the
 * user gets one line that explains itself. Only main turns an error into an exit code. */
#ifndef DPTRAIN_ERROR_H
#define DPTRAIN_ERROR_H

#include <stdio.h>

/* X(NAME, value, description, exit code) */
#define DP_ERRNO_MAP(X)                                                   \
  X(NOMEM, -1, "out of memory", 1)                                        \
  X(IO, -2, "input/output error", 1)                                      \
  X(USAGE, -3, "invalid command line", 2)                                 \
  X(CONFIG, -4, "invalid configuration", 2)                               \
  X(DATA, -5, "invalid data file", 1)                                     \
  X(SHAPE, -6, "shapes do not match", 2)                                  \
  X(MPI, -7, "MPI error", 1)                                              \
  X(HDF5, -8, "HDF5 error", 1)                                            \
  X(CKPT, -9, "invalid checkpoint", 1)                                    \
  X(NONFINITE, -10, "non-finite loss or gradient (diverged)", 3)          \
  X(INVAL, -11, "invalid argument", 1)                                    \
  X(PEER, -12, "another rank failed", 1)                                  \
  X(DIVERGED, -13, "training diverged", 3)

enum {
#define DP_ERR_ENUM(name, val, desc, code) DP_E##name = (val),
  DP_ERRNO_MAP(DP_ERR_ENUM)
#undef DP_ERR_ENUM
};

/* Short description of a code ("invalid data file"). */
const char *dp_strerror(int err);
/* Process exit code for an error: 0 ok, 1 runtime, 2 usage/config, 3 diverged. */
int dp_exit_code(int err);

/* Records a message for err and returns err, so callers write `return dp_fail(DP_EDATA, ...)`. */
int dp_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The message of the last dp_fail on this thread, or dp_strerror of the code if none was set. */
const char *dp_errmsg(int err);
void dp_error_clear(void);

/* Set by dp_comm_agree when every rank knows of the failure: rank `reporter` prints the message and
 * the others stay silent, and nobody needs MPI_Abort. DP_REPORTER_UNKNOWN (the default): only this
 * rank knows; DP_REPORTER_ELSEWHERE: another rank reports it (in another communicator, say). */
enum { DP_REPORTER_UNKNOWN = -1, DP_REPORTER_ELSEWHERE = -2 };
void dp_error_set_reporter(int reporter);
int dp_error_reporter(void);

/* The plural ending for a count in a message: "1 rank", "0 ranks", "2 ranks". */
static inline const char *dp_plural(long long n) { return n == 1 ? "" : "s"; }

/* Checked-call helper: evaluates expr; on a negative result returns it from the calling function. */
#define DP_TRY(expr)          \
  do {                        \
    int dp_try_rc_ = (expr);  \
    if (dp_try_rc_ < 0)       \
      return dp_try_rc_;      \
  } while (0)

#endif
