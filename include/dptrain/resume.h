/* What a resume may change: the configuration stored in the checkpoint against the current one,
 * key by key, by each key's dp_resume_rule in the key table (src/config.c). */
#ifndef DPTRAIN_RESUME_H
#define DPTRAIN_RESUME_H

#include <stdio.h>

#include "dptrain/config.h"
#include "dptrain/train.h"

/* Before the checkpoint at path is loaded into t (rank-local: rank 0 reads the file): DP_ECONFIG
 * listing every key that must match and does not ("layer.0.units 32 -> 16", and the layer count),
 * or 0 with *stored = the checkpoint's configuration (malloc'd, for dp_resume_report). */
int dp_resume_check(const dp_trainer *t, const char *path, dp_config **stored);

/* After the load: one line per key that differs and may ("train.epochs 5 -> 10"), with what a new
 * run length does to the schedule from the resumed step on. */
void dp_resume_report(const dp_config *stored, const dp_trainer *t, FILE *out);

#endif
