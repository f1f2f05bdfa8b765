/* The run directory: its lock, and the fresh run that must not train into another run's checkpoints. */
#include "dptrain/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dptrain/checkpoint.h"
#include "dptrain/error.h"
#include "dptrain/metrics.h"
#include "dptrain/state.h"

void dp_rundir_lock_init(dp_rundir_lock *l) {
  memset(l, 0, sizeof *l);
  l->fd[0] = l->fd[1] = -1;
}

/* The lock file's text: "host H pid P since T" of whoever wrote it last ("" when empty). */
static void read_owner(int fd, char *buf, size_t len) {
  ssize_t n = pread(fd, buf, len - 1, 0);
  buf[n > 0 ? n : 0] = 0;
  buf[strcspn(buf, "\n")] = 0;
}

static int write_owner(int fd, const char *path) {
  char host[256] = "?", when[32], text[400];
  gethostname(host, sizeof host - 1);
  time_t now = time(NULL);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  int n = snprintf(text, sizeof text, "host %s pid %ld since %s\n", host, (long)getpid(), when);
  if (ftruncate(fd, 0) < 0 || pwrite(fd, text, (size_t)n, 0) != n)
    return dp_fail(DP_EIO, "%s: cannot write the run directory's lock: %s", path, strerror(errno));
  return 0;
}

/* fcntl locks belong to the process and vanish with it, which is what makes a left lock file
 * recognisable as stale. 1: locked, 0: another process holds it, <0: no locking here. */
static int try_lock(int fd) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  if (fcntl(fd, F_SETLK, &fl) == 0)
    return 1;
  return errno == EACCES || errno == EAGAIN ? 0 : -1;
}

/* Whether fd is still the file at path: the owner that unlocked it may have removed it between our
 * open and our lock, and a lock on a removed file guards nothing. */
static int still_there(int fd, const char *path) {
  struct stat a, b;
  return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int busy(int fd, const char *dir, const char *path) {
  char owner[300];
  read_owner(fd, owner, sizeof owner);
  close(fd);
  return dp_fail(DP_EUSAGE,
                 "%s is in use by another dptrain run (%s; lock %s): two runs must not write one directory; "
                 "wait for it to end or train into another [train] out_dir",
                 dir, owner[0] ? owner : "owner unknown", path);
}

/* Opens and locks path; *fd = -1 when the file system has no locks (the run goes on unguarded). */
static int open_locked(const char *dir, const char *path, int *fd) {
  for (int tries = 0; tries < 100; tries++) {
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0)
      return dp_fail(DP_EIO, "%s: cannot create the run directory's lock: %s", path, strerror(errno));
    int got = try_lock(*fd);
    if (got == 0)
      return busy(*fd, dir, path);
    if (got < 0 || still_there(*fd, path))
      return 0;
    close(*fd);
  }
  return dp_fail(DP_EIO, "%s: the lock file keeps being replaced", path);
}

/* Whether this process holds path's lock already (the same directory under another name): fcntl
 * would grant it again, and the file would look like a stale lock of our own. */
static int held(const dp_rundir_lock *l, const char *path) {
  struct stat a, b;
  if (stat(path, &b) != 0)
    return 0;
  for (int i = 0; i < l->n; i++)
    if (fstat(l->fd[i], &a) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
      return 1;
  return 0;
}

int dp_rundir_lock_dir(dp_rundir_lock *l, const char *dir, char *note, size_t note_len) {
  if (note)
    note[0] = 0;
  if (l->n == 2)
    return dp_fail(DP_EINVAL, "%s: at most two run directories are locked", dir);
  DP_TRY(dp_mkdirs(dir));
  char *path = l->path[l->n];
  if (snprintf(path, DP_FILE_PATH_MAX, "%s/%s", dir, DP_RUNDIR_LOCK) >= DP_FILE_PATH_MAX)
    return dp_fail(DP_EIO, "%s: directory name too long", dir);
  if (held(l, path))
    return 0;
  int fd;
  DP_TRY(open_locked(dir, path, &fd));
  char old[300];
  read_owner(fd, old, sizeof old);
  if (old[0] && note)
    snprintf(note, note_len, "note: %s was left by a run that is gone (%s): taken over\n", path, old);
  int rc = write_owner(fd, path);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  l->fd[l->n++] = fd;
  return 0;
}

void dp_rundir_unlock(dp_rundir_lock *l) {
  for (int i = l->n - 1; i >= 0; i--) {
    unlink(l->path[i]); /* before the close: whoever locks the old file next sees it gone and retries */
    close(l->fd[i]);
  }
  l->n = 0;
}

/* ---- a fresh start ---- */

static int is_ckpt_file(const char *name) {
  long long step;
  int end = 0;
  return sscanf(name, "ckpt-%lld.h5%n", &step, &end) == 1 && (!name[end] || !strcmp(name + end, ".tmp"));
}

/* A directory previous-<UTC time> under parent that does not exist yet; made. */
static int make_previous(const char *parent, char *out, size_t len) {
  char when[32];
  time_t now = time(NULL);
  strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", gmtime(&now));
  for (int i = 1; i < 1000; i++) {
    int n = i == 1 ? snprintf(out, len, "%s/previous-%s", parent, when)
                   : snprintf(out, len, "%s/previous-%s-%d", parent, when, i);
    if (n >= (int)len)
      return dp_fail(DP_EIO, "%s: directory name too long", parent);
    if (mkdir(out, 0777) == 0)
      return 0;
    if (errno != EEXIST)
      return dp_fail(DP_EIO, "%s: cannot create directory: %s", out, strerror(errno));
  }
  return dp_fail(DP_EIO, "%s: cannot find a free previous-<time> name", parent);
}

static int move(const char *from_dir, const char *name, const char *to_dir) {
  char from[DP_FILE_PATH_MAX + 300], to[DP_FILE_PATH_MAX + 300];
  snprintf(from, sizeof from, "%s/%s", from_dir, name);
  snprintf(to, sizeof to, "%s/%s", to_dir, name);
  if (rename(from, to) == 0 || errno == ENOENT)
    return 0;
  return dp_fail(DP_EIO, "%s: cannot move it to %s: %s", from, to_dir, strerror(errno));
}

static int move_checkpoints(const char *ckpt_dir, const char *to) {
  DIR *d = opendir(ckpt_dir);
  if (!d)
    return dp_fail(DP_EIO, "%s: cannot read: %s", ckpt_dir, strerror(errno));
  int rc = 0;
  for (struct dirent *e; rc == 0 && (e = readdir(d));)
    if (is_ckpt_file(e->d_name))
      rc = move(ckpt_dir, e->d_name, to);
  closedir(d);
  return rc;
}

/* Whether ckpt_dir is out_dir's default, "<out_dir>/checkpoints" (then both go to one place). */
static int is_default_dir(const char *out_dir, const char *ckpt_dir) {
  size_t n = strlen(out_dir);
  return !strncmp(ckpt_dir, out_dir, n) && !strcmp(ckpt_dir + n, "/checkpoints");
}

/* --overwrite: the previous run's files into previous-<time>, so that nothing of it is lost. */
static int move_aside(const char *out_dir, const char *ckpt_dir, char *note, size_t len) {
  char to[DP_FILE_PATH_MAX], ckpt_to[DP_FILE_PATH_MAX + 16];
  DP_TRY(make_previous(out_dir, to, sizeof to));
  if (is_default_dir(out_dir, ckpt_dir)) {
    snprintf(ckpt_to, sizeof ckpt_to, "%s/checkpoints", to);
    if (mkdir(ckpt_to, 0777) != 0)
      return dp_fail(DP_EIO, "%s: cannot create directory: %s", ckpt_to, strerror(errno));
  } else {
    DP_TRY(make_previous(ckpt_dir, ckpt_to, sizeof ckpt_to));
  }
  DP_TRY(move_checkpoints(ckpt_dir, ckpt_to));
  DP_TRY(move(out_dir, "metrics.jsonl", to));
  DP_TRY(move(out_dir, "config.ini", to));
  snprintf(note, len, "overwrite: the previous run's checkpoints are now in %s, its metrics.jsonl and config.ini in %s\n",
           ckpt_to, to);
  return 0;
}

int dp_rundir_fresh(const char *out_dir, const char *ckpt_dir, int overwrite, char *note, size_t note_len) {
  note[0] = 0;
  char newest[DP_FILE_PATH_MAX];
  int found = 0;
  DP_TRY(dp_ckpt_latest(ckpt_dir, newest, sizeof newest, &found));
  if (!found)
    return 0;
  if (overwrite)
    return move_aside(out_dir, ckpt_dir, note, note_len);
  return dp_fail(DP_EUSAGE,
                 "%s already holds another run's checkpoints (newest %s): continue that run with --resume auto, "
                 "train into another [train] out_dir (or [checkpoint] dir), or pass --overwrite to move that run's "
                 "files aside into previous-<time> directories (nothing is deleted)",
                 ckpt_dir, newest);
}

/* ---- a resume from elsewhere ---- */

void dp_rundir_new_id(char *id, size_t len) {
  char host[256] = "?", when[32];
  gethostname(host, sizeof host - 1);
  host[64] = 0; /* the id must fit a state string */
  time_t now = time(NULL);
  strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", gmtime(&now));
  snprintf(id, len, "%s-%ld-%s", host, (long)getpid(), when);
}

/* Whether path's directory is dir itself (by inode: "a/./b" and a symlink name it too). */
static int lies_in(const char *path, const char *dir) {
  char parent[DP_FILE_PATH_MAX];
  snprintf(parent, sizeof parent, "%s", path);
  char *slash = strrchr(parent, '/');
  if (!slash)
    snprintf(parent, sizeof parent, ".");
  else if (slash == parent)
    parent[1] = 0;
  else
    *slash = 0;
  struct stat a, b;
  return stat(parent, &a) == 0 && stat(dir, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* The run id a checkpoint carries, "" when it has none or cannot be read (unknown either way). */
static void id_of(const char *path, char *id, size_t len) {
  dp_state st;
  dp_state_init(&st);
  id[0] = 0;
  if (dp_state_str(&st, id, len, DP_ST_OPTIONAL, DP_RUN_ID) < 0 || dp_ckpt_read(&st, path, 0) < 0)
    id[0] = 0;
  dp_state_free(&st);
}

int dp_rundir_resume(const char *out_dir, const char *ckpt_dir, const char *path, const char *id, int overwrite,
                     char *note, size_t note_len) {
  note[0] = 0;
  char newest[DP_FILE_PATH_MAX], theirs[DP_STATE_STR_MAX];
  int found = 0;
  if (lies_in(path, ckpt_dir))
    return 0;
  DP_TRY(dp_ckpt_latest(ckpt_dir, newest, sizeof newest, &found));
  if (!found)
    return 0;
  id_of(newest, theirs, sizeof theirs);
  if (id && id[0] && !strcmp(id, theirs))
    return 0;
  if (overwrite)
    return move_aside(out_dir, ckpt_dir, note, note_len);
  return dp_fail(DP_EUSAGE,
                 "%s already holds the checkpoints of another run (newest %s, run %s) than %s (run %s): resuming "
                 "there would mix two runs' checkpoints; continue that directory's run with --resume auto, "
                 "resume into another [train] out_dir (or [checkpoint] dir), or pass --overwrite to move that "
                 "run's files aside into previous-<time> directories (nothing is deleted)",
                 ckpt_dir, newest, theirs[0] ? theirs : "unknown", path, id && id[0] ? id : "unknown");
}
