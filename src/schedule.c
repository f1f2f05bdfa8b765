#include "dptrain/schedule.h"

double dp_schedule_lr(const dp_config *cfg, int64_t k) {
  (void)k; /* constant for now: the schedule family comes with the optimizer family */
  return cfg->optimizer.lr;
}
