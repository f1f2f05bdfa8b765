/* Step-size schedules: γ_k for step k.
 *
 * base = lr, times batch_size / base_batch under the linear scaling rule (lr_scale = linear).
 * Warm-up: γ rises linearly to base over warmup_steps steps; the schedule then runs on k' = k −
 * warmup_steps:
 *   constant     γ = base
 *   step         γ = base · gamma^⌊k'/step_size⌋
 *   multistep    γ = base · gamma^(milestones passed)
 *   exponential  γ = base · gamma^k'
 *   cosine       γ = min_lr + (base − min_lr)(1 + cos(π k'/T'))/2, T' = total − warmup_steps */
#ifndef DPTRAIN_SCHEDULE_H
#define DPTRAIN_SCHEDULE_H

#include <stdint.h>

#include "dptrain/config.h"

typedef struct {
  dp_sched_kind kind;
  double base, gamma, min_lr;
  int64_t step_size, warmup, decay_steps;
  const int64_t *milestones;
  int n_milestones;
} dp_schedule;

/* For a run of total_steps steps with global batch `batch`. */
void dp_schedule_init(dp_schedule *s, const dp_schedule_cfg *c, double lr, int64_t total_steps, int64_t batch);
/* The step size for step k (0-based). */
double dp_schedule_lr(const dp_schedule *s, int64_t k);

#endif
