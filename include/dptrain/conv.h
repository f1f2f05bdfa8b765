/* Image layers: 2-D convolution (im2col + one sgemm), max and average pooling, dropout.
 *
 * Layout. A data row is one C×H×W image in row-major order (PyTorch's NCHW per sample). Inside the
 * model every image activation is stored NHWC: (B·H·W, C) row-major, one row per pixel, so that a
 * convolution's output (B·OH·OW, F) is a plain matrix like a dense layer's (B, out): the bias, the
 * activation and batch norm (over N·H·W per channel = over the rows) are the dense layer's own
 * passes on B·OH·OW rows. dp_img describes where pixel (b, c, y, x) of an input lives, so that the
 * first convolution reads NCHW rows and later ones NHWC activations with the same code.
 *
 * Weights are (F, C, kh, kw) like PyTorch's Conv2d.weight, i.e. a (F, C·kh·kw) matrix whose column
 * order (c, i, j) is im2col's. Kernels allocate nothing: the caller passes the column scratch. */
#ifndef DPTRAIN_CONV_H
#define DPTRAIN_CONV_H

#include <stddef.h>
#include <stdint.h>

/* Element (b, c, y, x) of an image batch is at base[b·sb + c·sc + y·sy + x·sx]. */
typedef struct {
  int64_t sb, sc, sy, sx;
} dp_img;

/* The strides of NCHW rows (one C×H×W image per row) and of NHWC activations (B·H·W rows of C). */
dp_img dp_img_nchw(int c, int h, int w);
dp_img dp_img_nhwc(int c, int h, int w);

typedef struct {
  int c, h, w;      /* input channels and size */
  int f, oh, ow;    /* filters and output size */
  int kh, kw;       /* kernel */
  int stride;
  int pad_h, pad_w; /* zeros added on each side (top = bottom = pad_h; 'same' at stride 1: (k-1)/2, and
                       for an even k one more at the bottom/right is NOT supported: 'same' needs odd k) */
} dp_conv_geom;

/* Output size for an input c×h×w, f filters of kh×kw, stride, padding (pad < 0: 'same', which needs
 * odd kh, kw); DP_EINVAL with a message when the kernel is larger than the padded input or the
 * output would be empty. */
int dp_conv_geom_init(dp_conv_geom *g, int c, int h, int w, int f, int kh, int kw, int stride, int pad);
/* Floats of the im2col matrix for B images: B·oh·ow × c·kh·kw. */
size_t dp_conv_col_floats(const dp_conv_geom *g, int B);

/* The im2col matrix col (B·oh·ow, c·kh·kw) of x laid out as in, zeros where the window overhangs. */
void dp_im2col(const dp_conv_geom *g, const float *x, dp_img in, int B, float *col);
/* Its adjoint: dx (laid out as in) overwritten with the scatter-add of col (B·oh·ow, c·kh·kw). */
void dp_col2im(const dp_conv_geom *g, const float *col, int B, float *dx, dp_img in);

/* z (B·oh·ow, f) NHWC = im2col(x) · Wᵀ (+ bias b (f), if not NULL). x laid out as in. col: scratch. */
void dp_conv_forward(const dp_conv_geom *g, const float *x, dp_img in, int B, const float *w, const float *b,
                     float *z, float *col);
/* From dz (B·oh·ow, f) and the forward input x: dw (f, c·kh·kw) and db (f, may be NULL) overwritten
 * (accumulate 0) or added to (1); dx (laid out as in, may be NULL) overwritten with dL/dx. col:
 * scratch (recomputed from x: the forward's need not be kept). */
void dp_conv_backward(const dp_conv_geom *g, const float *x, dp_img in, int B, const float *w, const float *dz,
                      float *dw, float *db, float *dx, float *col, int accumulate);

/* Pooling over NHWC activations: windows of k×k with stride s (no padding; a window must fit). */
typedef struct {
  int c, h, w, k, stride, oh, ow;
  int max; /* 1: max pooling, 0: average */
} dp_pool_geom;

/* DP_EINVAL with a message when the window is larger than the input (nothing would be left). */
int dp_pool_geom_init(dp_pool_geom *g, int c, int h, int w, int k, int stride, int max);
/* x (B·h·w, c) → y (B·oh·ow, c); max pooling records the winner's index into x per output in arg
 * (B·oh·ow·c), which backward needs (ignored, may be NULL, for average). */
void dp_pool_forward(const dp_pool_geom *g, const float *x, int B, float *y, int32_t *arg);
/* dx (B·h·w, c) overwritten from dy (B·oh·ow, c). */
void dp_pool_backward(const dp_pool_geom *g, const float *dy, int B, const int32_t *arg, float *dx);

/* Dropout's mask for rows row0 .. row0+B of a pass, n units each: 0 or 1/(1 - rate), from a
 * counter-based hash of (seed, step, global row, layer, unit) alone — the same mask for a row
 * whichever rank or pass computes it, and again after a resume. rate in [0, 1). */
void dp_dropout_mask(uint64_t seed, int64_t step, int layer, int64_t row0, int B, int n, float rate, float *mask);

/* NHWC (B·h·w, c) ↔ NCHW rows (B, c·h·w): flatten hands dense layers PyTorch's (c, y, x) order. */
void dp_nhwc_to_nchw(const float *x, int B, int c, int h, int w, float *y);
void dp_nchw_to_nhwc(const float *x, int B, int c, int h, int w, float *y);

#endif
