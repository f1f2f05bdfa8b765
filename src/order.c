/* The epoch's order of the training rows (include/dptrain/order.h). */
#include "dptrain/order.h"

#include "dptrain/rng.h"

static void shuffle_range(dp_rng *rng, int64_t *a, int64_t n) {
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)dp_rng_below(rng, (uint64_t)i + 1);
    int64_t tmp = a[i];
    a[i] = a[j];
    a[j] = tmp;
  }
}

/* The block permutation is drawn into out itself (one index per block, at the front) and expanded
 * into rows from the back, so no other memory is needed: the rows of the blocks after i take at
 * least one place each, so they never overwrite the block indices 0..i-1 still to be expanded. */
static void block_order(const dp_order *o, dp_rng *rng, int64_t n, int64_t *out) {
  int64_t br = o->block_rows, nb = (n + br - 1) / br;
  for (int64_t b = 0; b < nb; b++)
    out[b] = b;
  shuffle_range(rng, out, nb);
  int64_t end = n; /* the short last block (nb - 1) may sit anywhere in the permutation */
  for (int64_t i = nb - 1; i >= 0; i--) {
    int64_t b = out[i], lo = b * br, len = (b == nb - 1 ? n - lo : br);
    end -= len;
    for (int64_t r = len - 1; r >= 0; r--)
      out[end + r] = lo + r;
  }
  for (int64_t pos = 0; pos < n;) {
    int64_t len = 0;
    for (int64_t k = 0; k < o->window && pos + len < n; k++) {
      int64_t b = out[pos + len] / br;
      len += b == nb - 1 ? n - b * br : br;
    }
    shuffle_range(rng, out + pos, len);
    pos += len;
  }
}

void dp_order_epoch(const dp_order *o, int64_t epoch, int64_t n, int64_t *out) {
  if (!o->shuffle || (o->blocks && o->block_rows < 1)) {
    for (int64_t i = 0; i < n; i++)
      out[i] = i;
    return;
  }
  dp_rng rng;
  if (!o->blocks) {
    for (int64_t i = 0; i < n; i++)
      out[i] = i;
    dp_rng_seed(&rng, o->seed, 0x5eed0000ULL + (uint64_t)epoch);
    shuffle_range(&rng, out, n);
    return;
  }
  dp_rng_seed(&rng, o->seed, 0xb10c0000ULL + (uint64_t)epoch);
  block_order(o, &rng, n, out);
}
