/* The registry of named state. */
#include "dptrain/state.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dptrain/error.h"

void dp_state_init(dp_state *s) { memset(s, 0, sizeof *s); }

void dp_state_free(dp_state *s) {
  free(s->e);
  memset(s, 0, sizeof *s);
}

size_t dp_dtype_size(dp_dtype t) {
  switch (t) {
  case DP_T_F32:
    return sizeof(float);
  case DP_T_F64:
    return sizeof(double);
  case DP_T_U8:
  case DP_T_STR:
    return 1;
  case DP_T_I64:
    return sizeof(int64_t);
  case DP_T_INT:
    return sizeof(int);
  }
  return 0;
}

const dp_state_entry *dp_state_find(const dp_state *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (!strcmp(s->e[i].name, name))
      return &s->e[i];
  return NULL;
}

static int add(dp_state *s, const dp_state_entry *e) {
  if (dp_state_find(s, e->name))
    return dp_fail(DP_EINVAL, "state: '%s' registered twice", e->name);
  if (s->n == s->cap) {
    int cap = s->cap ? 2 * s->cap : 64;
    dp_state_entry *p = realloc(s->e, sizeof *p * (size_t)cap);
    if (!p)
      return dp_fail(DP_ENOMEM, "state: cannot register '%s'", e->name);
    s->e = p;
    s->cap = cap;
  }
  s->e[s->n++] = *e;
  return 0;
}

static int set_name(dp_state_entry *e, const char *fmt, va_list ap) {
  int n = vsnprintf(e->name, sizeof e->name, fmt, ap);
  if (n < 0 || (size_t)n >= sizeof e->name)
    return dp_fail(DP_EINVAL, "state: name '%s...' longer than %d bytes", e->name, DP_STATE_NAME_MAX - 1);
  return 0;
}

int dp_state_tensor(dp_state *s, dp_dtype type, void *ptr, int rank, const int64_t dims[2], unsigned flags,
                    const char *name, ...) {
  dp_state_entry e = {.type = type, .ptr = ptr, .rank = rank, .flags = flags};
  e.dims[0] = dims[0];
  e.dims[1] = rank > 1 ? dims[1] : 1;
  va_list ap;
  va_start(ap, name);
  int rc = set_name(&e, name, ap);
  va_end(ap);
  return rc < 0 ? rc : add(s, &e);
}

static int scalar(dp_state *s, dp_dtype type, void *p, double lo, double hi, unsigned flags, const char *name) {
  dp_state_entry e = {.type = type, .ptr = p, .flags = flags, .lo = lo, .hi = hi, .dims = {1, 1}};
  if (strlen(name) >= sizeof e.name)
    return dp_fail(DP_EINVAL, "state: name '%s' too long", name);
  strcpy(e.name, name);
  return add(s, &e);
}

int dp_state_i64(dp_state *s, int64_t *p, int64_t lo, int64_t hi, unsigned flags, const char *name) {
  return scalar(s, DP_T_I64, p, (double)lo, (double)hi, flags, name);
}

int dp_state_int(dp_state *s, int *p, int64_t lo, int64_t hi, unsigned flags, const char *name) {
  return scalar(s, DP_T_INT, p, (double)lo, (double)hi, flags, name);
}

int dp_state_f64(dp_state *s, double *p, double lo, double hi, unsigned flags, const char *name) {
  return scalar(s, DP_T_F64, p, lo, hi, flags, name);
}

int dp_state_str(dp_state *s, char *p, size_t len, unsigned flags, const char *name) {
  if (len > DP_STATE_STR_MAX)
    return dp_fail(DP_EINVAL, "state: string '%s' longer than %d bytes", name, DP_STATE_STR_MAX);
  DP_TRY(scalar(s, DP_T_STR, p, 0, 0, flags, name));
  s->e[s->n - 1].str_len = len;
  return 0;
}

int dp_state_add_check(dp_state *s, dp_state_check_fn fn, void *ctx, unsigned flags) {
  if (s->n_checks == DP_STATE_CHECKS_MAX)
    return dp_fail(DP_EINVAL, "state: more than %d checks", DP_STATE_CHECKS_MAX);
  s->check[s->n_checks].fn = fn;
  s->check[s->n_checks].flags = flags;
  s->check[s->n_checks++].ctx = ctx;
  return 0;
}

const void *dp_state_loaded(const dp_state *s, const char *name) {
  const dp_state_entry *e = dp_state_find(s, name);
  return e && e->rank == 0 && e->found ? (const void *)&e->loaded : NULL;
}

int dp_state_selected(const dp_state_entry *e, unsigned mask) { return (e->flags & mask) == mask; }

static size_t entry_bytes(const dp_state_entry *e) {
  if (e->rank == 0)
    return e->type == DP_T_STR ? e->str_len : dp_dtype_size(e->type);
  return (size_t)e->dims[0] * (size_t)e->dims[1] * dp_dtype_size(e->type);
}

double dp_state_bytes(const dp_state *s, unsigned mask) {
  double b = 0;
  for (int i = 0; i < s->n; i++)
    if (dp_state_selected(&s->e[i], mask))
      b += (double)entry_bytes(&s->e[i]);
  return b;
}

void dp_state_flag_range(dp_state *s, const void *p, size_t bytes, unsigned flag) {
  const char *lo = p, *hi = lo + bytes;
  for (int i = 0; i < s->n; i++) {
    const char *q = s->e[i].ptr;
    if (s->e[i].rank > 0 && q >= lo && q < hi)
      s->e[i].flags |= flag;
  }
}

int dp_state_bcast(const dp_state *s, dp_comm *c, unsigned mask, int root) {
  if (c->size == 1)
    return 0;
  int shared = 0;
  for (int i = 0; i < s->n; i++) {
    const dp_state_entry *e = &s->e[i];
    if (!dp_state_selected(e, mask) || (e->flags & (DP_ST_INFO | DP_ST_CONST)))
      continue;
    if (e->flags & DP_ST_NODE) /* one writer per node: the others would write the same bytes at once */
      shared = 1;
    DP_TRY(e->flags & DP_ST_NODE ? dp_comm_bcast_leaders(c, e->ptr, entry_bytes(e))
                                 : dp_comm_bcast(c, e->ptr, entry_bytes(e), root));
  }
  return shared ? dp_comm_node_barrier(c) : 0;
}
