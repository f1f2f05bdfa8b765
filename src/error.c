#include "dptrain/error.h"

#include <stdarg.h>
#include <stdio.h>

/* Per thread: the streaming reader's failures must not overwrite the main thread's message (it hands
 * its own over when the trainer asks for the step). */
static _Thread_local char last_msg[1024];
static _Thread_local int last_err;
static int reporter = -1;

const char *dp_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define DP_ERR_STR(name, val, desc, code) \
  case DP_E##name:                        \
    return desc;
    DP_ERRNO_MAP(DP_ERR_STR)
#undef DP_ERR_STR
  }
  return "unknown error";
}

int dp_exit_code(int err) {
  switch (err) {
  case 0:
    return 0;
#define DP_ERR_CODE(name, val, desc, code) \
  case DP_E##name:                         \
    return code;
    DP_ERRNO_MAP(DP_ERR_CODE)
#undef DP_ERR_CODE
  }
  return 1;
}

int dp_fail(int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_msg, sizeof last_msg, fmt, ap);
  va_end(ap);
  last_err = err;
  return err;
}

const char *dp_errmsg(int err) {
  if (last_err == err && last_msg[0])
    return last_msg;
  return dp_strerror(err);
}

void dp_error_clear(void) {
  last_msg[0] = 0;
  last_err = 0;
  reporter = -1;
}

void dp_error_set_reporter(int r) { reporter = r; }
int dp_error_reporter(void) { return reporter; }
