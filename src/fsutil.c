/* Durable whole-file writes: a reader sees the old file or the new one, never half of one. */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dptrain/config.h"
#include "dptrain/error.h"
#include "faults.h"

static int fsync_path(const char *path, int dir) {
  int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0)
    return -1;
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

static int fsync_parent(const char *path) {
  char copy[DP_FILE_PATH_MAX + 8]; /* as long as any path dp_write_durable accepts */
  snprintf(copy, sizeof copy, "%s", path);
  return fsync_path(dirname(copy), 1);
}

int dp_write_durable(const char *path, const char *what, int (*fill)(const char *tmp, void *ctx), void *ctx) {
  char tmp[DP_FILE_PATH_MAX + 8];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return dp_fail(DP_EIO, "%s: path too long", path);
  errno = 0;
  int rc = fill(tmp, ctx);
  if (rc == 0 && fsync_path(tmp, 0) < 0)
    rc = DP_EIO;
  if (rc < 0) {
    int e = errno;
    char why[600];
    snprintf(why, sizeof why, "%s", e ? strerror(e) : dp_errmsg(rc));
    remove(tmp);
    return dp_fail(rc == DP_ENOMEM ? rc : DP_EIO, "%s: writing %s failed (%s)", tmp, what, why);
  }
  dp_fault_before_rename(what);
  if (rename(tmp, path) != 0 || fsync_parent(path) < 0) {
    int e = errno;
    remove(tmp);
    return dp_fail(DP_EIO, "%s: cannot move %s into place: %s", path, what, strerror(e));
  }
  return 0;
}

typedef struct {
  int (*fill)(FILE *f, void *ctx);
  void *ctx;
} stdio_fill;

static int fill_stdio(const char *tmp, void *arg) {
  const stdio_fill *s = arg;
  FILE *f = fopen(tmp, "w");
  if (!f)
    return DP_EIO;
  int rc = s->fill(f, s->ctx);
  if (fclose(f) != 0 && rc == 0)
    rc = DP_EIO;
  return rc;
}

int dp_write_durable_stdio(const char *path, const char *what, int (*fill)(FILE *f, void *ctx), void *ctx) {
  stdio_fill s = {fill, ctx};
  return dp_write_durable(path, what, fill_stdio, &s);
}

/* stat, not open: opening a FIFO blocks until a writer comes, and a device or directory is no data. */
int dp_check_regular(const char *path, const char *what, int err, struct stat *st) {
  struct stat local;
  if (!st)
    st = &local;
  if (stat(path, st) != 0)
    return dp_fail(err, "%s: cannot open %s: %s", path, what, strerror(errno));
  if (!S_ISREG(st->st_mode))
    return dp_fail(err, "%s: %s must be a regular file, this is a %s", path, what,
                   S_ISFIFO(st->st_mode) ? "FIFO" : S_ISDIR(st->st_mode) ? "directory"
                   : S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode) ? "device" : S_ISSOCK(st->st_mode) ? "socket"
                   : "special file");
  if (access(path, R_OK) != 0)
    return dp_fail(err, "%s: cannot open %s: %s", path, what, strerror(errno));
  return 0;
}
