#include "dptrain/schedule.h"

#include <math.h>

void dp_schedule_init(dp_schedule *s, const dp_schedule_cfg *c, double lr, int64_t total_steps, int64_t batch) {
  s->kind = c->name;
  s->base = lr;
  if (c->lr_scale == DP_LR_SCALE_LINEAR && c->base_batch > 0)
    s->base *= (double)batch / (double)c->base_batch;
  s->gamma = c->gamma;
  s->min_lr = c->min_lr;
  s->step_size = c->step_size > 0 ? c->step_size : 1;
  s->warmup = c->warmup_steps;
  s->decay_steps = total_steps - c->warmup_steps;
  s->milestones = c->milestones;
  s->n_milestones = c->n_milestones;
}

static double decayed(const dp_schedule *s, int64_t k) {
  switch (s->kind) {
  case DP_SCHED_CONSTANT:
    return s->base;
  case DP_SCHED_STEP:
    return s->base * pow(s->gamma, (double)(k / s->step_size));
  case DP_SCHED_MULTISTEP: {
    int passed = 0;
    for (int i = 0; i < s->n_milestones; i++)
      passed += k >= s->milestones[i];
    return s->base * pow(s->gamma, passed);
  }
  case DP_SCHED_EXPONENTIAL:
    return s->base * pow(s->gamma, (double)k);
  case DP_SCHED_COSINE:
    if (s->decay_steps <= 0 || k >= s->decay_steps)
      return s->min_lr;
    return s->min_lr + (s->base - s->min_lr) * 0.5 * (1.0 + cos(M_PI * (double)k / (double)s->decay_steps));
  }
  return s->base;
}

double dp_schedule_lr(const dp_schedule *s, int64_t k) {
  if (k < s->warmup)
    return s->base * (double)(k + 1) / (double)s->warmup;
  return decayed(s, k - s->warmup);
}
