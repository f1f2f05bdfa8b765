/* The files a run reads and writes, checked before it reads or writes any of them.
 *
 * Relative paths in a configuration resolve against the current directory (as every program's
 * do); an error about one says so, with that directory, and names the config file's directory when
 * the file exists there instead. */
#ifndef DPTRAIN_PATHS_H
#define DPTRAIN_PATHS_H

#include <stdio.h>

#include "dptrain/comm.h"
#include "dptrain/config.h"

/* For a relative path, "relative to the current directory D"; "" for an absolute one. */
void dp_path_relative_note(const char *path, char *out, size_t len);

/* Every rank: [data] path is a readable regular file. Rank 0, which alone writes and loads
 * checkpoints: [model] init_from (at a fresh start) and resume (NULL, "auto" or a checkpoint path)
 * are readable files; out_dir, the checkpoint directory and the timeline's directory are
 * directories, or can be created (their nearest existing ancestor is a writable directory); the
 * files written there (metrics.jsonl, config.ini, the timeline) are not directories. Creates
 * nothing. One error naming the path, its key and what was expected; collective (one agreement). */
int dp_paths_check(const dp_config *cfg, dp_comm *comm, const char *resume);

/* `dptrain sweep`: the data on every rank; on rank 0 the CSV (-o, or out_dir/sweep.csv) and its
 * directory, which dp_mkdirs_for makes at the end. Collective. */
int dp_paths_check_sweep(const dp_config *cfg, dp_comm *comm, const char *csv);

/* A file named on the command line or in a checkpoint (`inspect`'s and `eval`'s checkpoint, `eval`'s
 * data), checked as a run checks its own before anything opens it: a readable regular file (a FIFO
 * would block the open), else err with "<path>: <what> ... (<key>, relative to the current directory
 * D)" (key may be ""). Rank-local. */
int dp_paths_check_input(const char *path, const char *what, const char *key, int err);

/* A file to be written whose directory is made when missing (dp_mkdirs_for): that directory must be
 * one or be creatable, and path must not be a directory or a special file. DP_EIO naming key. */
int dp_paths_check_output(const char *path, const char *what, const char *key);

/* Makes the directory that file goes in, with its parents (nothing for a name without a '/'). */
int dp_mkdirs_for(const char *file);

/* `dptrain config --check`: dp_paths_check, then the files against the configuration — /train and
 * /test against the layers and the loss (the labels' range, the targets' width), init_from's
 * weights against the model — as training would, without writing anything. Prints what it
 * checked on out (may be NULL). Collective. */
int dp_config_check_files(const dp_config *cfg, dp_comm *comm, FILE *out);

#endif
