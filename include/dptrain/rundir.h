/* The run directory (out_dir, and a [checkpoint] dir of its own): one run writes there at a time,
 * and a fresh run never mixes its checkpoints with another run's.
 *
 * The lock is <dir>/.dptrain.lock, held with flock(2) for the life of the run and holding the
 * owner's host, pid and start time. The kernel drops a flock when its process dies, so a lock file
 * left by a killed run is found unlocked: it is taken over, and its old owner reported. Rank 0
 * takes the locks; everything here is rank-local. */
#ifndef DPTRAIN_RUNDIR_H
#define DPTRAIN_RUNDIR_H

#include <stddef.h>

#include "dptrain/config.h"

#define DP_RUNDIR_LOCK ".dptrain.lock"

typedef struct {
  int fd[2];
  char path[2][DP_FILE_PATH_MAX];
  int n;
} dp_rundir_lock;

void dp_rundir_lock_init(dp_rundir_lock *l);
/* Creates dir and takes its lock: DP_EUSAGE naming the owner when a live run holds it. A lock left by
 * a run that is gone is taken over; note (when not NULL) then receives a line saying whose it was,
 * otherwise "". */
int dp_rundir_lock_dir(dp_rundir_lock *l, const char *dir, char *note, size_t note_len);
/* Removes the lock files this process holds. */
void dp_rundir_unlock(dp_rundir_lock *l);

/* A fresh run's start: 0 when ckpt_dir holds no complete checkpoint. Otherwise, without overwrite,
 * DP_EUSAGE naming the directory, its newest checkpoint and the ways on (--resume auto, another
 * out_dir, --overwrite), changing nothing. With overwrite, that run's checkpoints, metrics.jsonl and
 * config.ini move (never deleted) into a new directory previous-<UTC time> (under out_dir, or under
 * ckpt_dir when that is elsewhere), named in note. */
int dp_rundir_fresh(const char *out_dir, const char *ckpt_dir, int overwrite, char *note, size_t note_len);

/* A run's identity, the string scalar DP_RUN_ID of the training state: made at a fresh start (host,
 * pid, UTC time), saved in every checkpoint and carried on by a resume. Two checkpoints are of the
 * same run when both carry it and it is equal; older checkpoints lack it (unknown). */
#define DP_RUN_ID "run_id"
void dp_rundir_new_id(char *id, size_t len);

/* A resume of the checkpoint at path, whose run id is id (NULL or "": unknown), into ckpt_dir: 0 when
 * path lies in ckpt_dir, ckpt_dir holds no complete checkpoint, or its newest one is of the same run.
 * Otherwise, without overwrite, DP_EUSAGE naming the directory, its newest checkpoint and the ways on,
 * changing nothing; with overwrite, that run's files move aside as dp_rundir_fresh's do (note). */
int dp_rundir_resume(const char *out_dir, const char *ckpt_dir, const char *path, const char *id, int overwrite,
                     char *note, size_t note_len);

#endif
