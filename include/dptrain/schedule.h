/* Step-size schedules: γ_k for step k. */
#ifndef DPTRAIN_SCHEDULE_H
#define DPTRAIN_SCHEDULE_H

#include <stdint.h>

#include "dptrain/config.h"

/* The step size for step k (0-based). */
double dp_schedule_lr(const dp_config *cfg, int64_t k);

#endif
