/* The training state: a registry of every named tensor and scalar that a resume needs or that the
 * ranks must agree on. Each component registers its own when it is created — the model its
 * parameters and batch norm's running statistics, the optimizer its slots and counters, the trainer
 * its position in the data, the run its open logging interval — and checkpoints (save, load,
 * init_from), the broadcasts that make the ranks start equal, and the size estimates all iterate
 * the registry, knowing nothing of who registered what.
 *
 * Names are HDF5 paths in the checkpoint: a tensor is a dataset ("model/layer0/weight"), a scalar is
 * an attribute of the group its name's directory part names ("step" on the root group,
 * "optimizer/lbfgs/count" on /optimizer/lbfgs). Registering allocates; nothing else does, so the
 * registry is built once and read in the training loop for free. */
#ifndef DPTRAIN_STATE_H
#define DPTRAIN_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "dptrain/comm.h"

typedef enum {
  DP_T_F32, /* tensors: float32 */
  DP_T_F64, /* tensors and scalars: float64 */
  DP_T_U8,  /* tensors: bytes (text) */
  DP_T_I64, /* scalars: int64 */
  DP_T_INT, /* scalars: an int in memory, int64 in the file */
  DP_T_STR  /* scalars: a NUL-terminated string */
} dp_dtype;

enum {
  DP_ST_MODEL = 1u << 0,    /* part of the trained model: init_from and eval read only these */
  DP_ST_INFO = 1u << 1,     /* written for readers (inspect, h5py), never loaded nor broadcast */
  DP_ST_OPTIONAL = 1u << 2, /* may be absent (older checkpoints): the registered value stays (tensors too) */
  DP_ST_CONST = 1u << 3,    /* follows from the configuration: compared on load, never overwritten */
  DP_ST_NODE = 1u << 4      /* lives once per node in shared memory ([train] comm = node): a broadcast
                               reaches the node leaders, which write it for their node */
};

enum { DP_STATE_NAME_MAX = 96, DP_STATE_STR_MAX = 128 };

typedef struct {
  char name[DP_STATE_NAME_MAX];
  dp_dtype type;
  int rank;          /* 0 for scalars */
  int64_t dims[2];
  void *ptr;
  size_t str_len;    /* DP_T_STR: the buffer's size */
  unsigned flags;
  double lo, hi;     /* numeric scalars: a loaded value outside [lo, hi] is refused */
  /* Set by a load: whether the file has the entry; for scalars, the value found in the file (checks
   * read it before it is used). */
  int found;
  union {
    int64_t i;
    double f;
    char s[DP_STATE_STR_MAX];
  } loaded;
} dp_state_entry;

typedef struct dp_state dp_state;
/* A component's own validation of what a load found (dp_state_loaded), before anything is used:
 * 0, or a DP_E code with a message naming path. */
typedef int (*dp_state_check_fn)(void *ctx, const dp_state *s, const char *path);

enum { DP_STATE_CHECKS_MAX = 8 };

struct dp_state {
  dp_state_entry *e;
  int n, cap;
  struct {
    dp_state_check_fn fn;
    void *ctx;
    unsigned flags; /* it runs in loads that select these flags, as an entry would */
  } check[DP_STATE_CHECKS_MAX];
  int n_checks;
};

void dp_state_init(dp_state *s);
void dp_state_free(dp_state *s);

/* Registration: 0 or DP_ENOMEM / DP_EINVAL (a duplicate or too long name). The pointer must stay
 * valid for the life of the registry. name is a printf format. */
int dp_state_tensor(dp_state *s, dp_dtype type, void *ptr, int rank, const int64_t dims[2], unsigned flags,
                    const char *name, ...) __attribute__((format(printf, 7, 8)));
int dp_state_i64(dp_state *s, int64_t *p, int64_t lo, int64_t hi, unsigned flags, const char *name);
int dp_state_int(dp_state *s, int *p, int64_t lo, int64_t hi, unsigned flags, const char *name);
int dp_state_f64(dp_state *s, double *p, double lo, double hi, unsigned flags, const char *name);
int dp_state_str(dp_state *s, char *p, size_t len, unsigned flags, const char *name);
int dp_state_add_check(dp_state *s, dp_state_check_fn fn, void *ctx, unsigned flags);

/* The entry of that name, or NULL. */
const dp_state_entry *dp_state_find(const dp_state *s, const char *name);
/* After a load: the scalar's value found in the file (int64 for integer types), or NULL when absent. */
const void *dp_state_loaded(const dp_state *s, const char *name);
/* Bytes of the tensors (and strings) whose flags contain all of `mask` (0: every entry). */
double dp_state_bytes(const dp_state *s, unsigned mask);
/* Whether an entry takes part in a load or broadcast restricted to mask (0: everything loadable). */
int dp_state_selected(const dp_state_entry *e, unsigned mask);
/* Adds flag to every tensor whose memory lies within [p, p + bytes). */
void dp_state_flag_range(dp_state *s, const void *p, size_t bytes, unsigned flag);
/* Copies every selected, loadable entry from root to all ranks of c. Collective. DP_ST_NODE entries go
 * to the node leaders only (root must be 0), then the node's ranks wait for them. */
int dp_state_bcast(const dp_state *s, dp_comm *c, unsigned mask, int root);
/* Element size of a dtype in memory. */
size_t dp_dtype_size(dp_dtype t);

#endif
