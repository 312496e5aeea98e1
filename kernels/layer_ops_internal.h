/* Private to kernels/: the device back ends of the per-layer ops weft/rmsnorm.h, weft/rope.h and
 * weft/embedding.h, plus the CPU range-splitting helper their CPU back ends share.
 *
 * The front ends (rmsnorm.c, rope.c, embedding.c) validate every argument once, log one error
 * line naming the function and the values, and dispatch on the context's device kind to
 * weft_<op>_<fn>_cpu or weft_<op>_<fn>_cuda, which take the public arguments unchanged.
 *
 * What the back ends may assume: a non-NULL context; sizes already checked (rows, tokens >= 0
 * and > 0 on entry: empty calls return before dispatch; dim, heads, vocab >= 1; head_dim even;
 * element counts fit in int64 and size_t); non-NULL pointers for every tensor; eps finite and
 * >= 0; base finite and > 1; aliasing only where the header allows it (dx == dy). On the CPU the
 * embedding ids are already checked to lie in 0..vocab-1; on CUDA they are not (device memory),
 * so the CUDA kernels treat an out-of-range id as "no row": zeros in the forward, skipped in the
 * backward, never an out-of-bounds access.
 *
 * Rejected: one header per op (three files of four declarations each) and declaring the back
 * ends in the public headers (CPU-only callers would see CUDA symbols). */
#ifndef WEFT_LAYER_OPS_INTERNAL_H
#define WEFT_LAYER_OPS_INTERNAL_H

/* Inside extern "C": the .cu files include this, and weft/kernel_ctx.h and weft/status.h carry
 * no linkage guards of their own. */
#ifdef __cplusplus
extern "C" {
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/embedding.h"
#include "weft/rmsnorm.h"
#include "weft/rope.h"

#define WEFT_LAYER_OPS_BACKENDS(X)                                                                 \
  weft_status_t weft_rmsnorm_forward_##X(weft_kernel_ctx_t *ctx, int64_t rows, int64_t dim,        \
                                         float eps, const float *x, const float *w, float *y,      \
                                         float *rstd);                                             \
  weft_status_t weft_rmsnorm_backward_##X(weft_kernel_ctx_t *ctx, int64_t rows, int64_t dim,       \
                                          const float *x, const float *w, const float *rstd,       \
                                          const float *dy, float *dx, float *dw);                  \
  weft_status_t weft_rope_apply_##X(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t heads,         \
                                    int64_t head_dim, double base, const int64_t *pos,             \
                                    bool inverse, float *x);                                       \
  weft_status_t weft_embedding_forward_##X(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t vocab,  \
                                           int64_t dim, const float *table, const int32_t *ids,    \
                                           float *y);                                              \
  weft_status_t weft_embedding_backward_##X(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t vocab, \
                                            int64_t dim, const int32_t *ids, const float *dy,      \
                                            float *dtable);

WEFT_LAYER_OPS_BACKENDS(cpu)
#if WEFT_HAVE_CUDA
WEFT_LAYER_OPS_BACKENDS(cuda)
#endif

/* ---- front-end checks shared by rmsnorm.c, rope.c and embedding.c (defined in rmsnorm.c) ---- */

/* A tensor argument for the NULL check: name, pointer, element count (0: empty, may be NULL). */
typedef struct weft_layer_ops_arg {
  const char *name;
  const void *ptr;
  int64_t elems;
} weft_layer_ops_arg_t;

/* Each logs one error line and returns WEFT_ERR_INVALID_ARG on failure. */
weft_status_t weft_layer_ops_check_ctx(const char *fn, const weft_kernel_ctx_t *ctx);
/* The first argument that is NULL but has elements fails. */
weft_status_t weft_layer_ops_check_args(const char *fn, const weft_layer_ops_arg_t *args,
                                        int count);
/* Buffers a [a_bytes] and b [b_bytes] must be disjoint, or the same buffer when same_ok. */
weft_status_t weft_layer_ops_check_overlap(const char *fn, const char *a_name, const void *a,
                                           size_t a_bytes, const char *b_name, const void *b,
                                           size_t b_bytes, bool same_ok);
/* rows >= 0, cols >= 1 and rows * cols * 8 fits in int64 (so in size_t as bytes, f32 or i64);
 * names the two sizes as given. */
weft_status_t weft_layer_ops_check_shape(const char *fn, const char *rows_name, int64_t rows,
                                         const char *cols_name, int64_t cols);
/* Logs and returns WEFT_ERR_INTERNAL: a device kind with no back end in this build. */
weft_status_t weft_layer_ops_no_backend(const char *fn, const weft_kernel_ctx_t *ctx);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_LAYER_OPS_INTERNAL_H */
