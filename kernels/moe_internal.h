/* Private to kernels/: the device back ends of weft/moe.h and the checks shared by the two
 * front-end files. moe.c validates the arguments of the six elementwise/row kernels once and
 * dispatches on the context's device kind to weft_moe_<fn>_cpu or weft_moe_<fn>_cuda, which
 * take the same arguments as their public counterparts. moe_experts.c (device-agnostic: GEMMs
 * and the SwiGLU kernels) uses the same checks through weft_moe_experts_check.
 *
 * What the back ends may assume: sizes >= 0 and, where they have work (rows > 0 and
 * width > 0, n > 0), non-NULL pointers; 1 <= k <= experts <= INT32_MAX; fan >= 1; leading
 * dimensions >= the row width; a finite z_scale and a non-NULL lse when it is != 0. Index
 * values are NOT checked (they live in device memory): back ends skip negative indices and
 * router ids outside 0..experts-1 rather than read or write out of bounds. */
#ifndef WEFT_MOE_INTERNAL_H
#define WEFT_MOE_INTERNAL_H

/* Inside extern "C": moe.cu includes this, and weft/kernel_ctx.h and weft/status.h carry no
 * linkage guards of their own. */
#ifdef __cplusplus
extern "C" {
#endif

#include "weft/moe.h"

#define WEFT_MOE_BACKENDS(X)                                                                       \
  weft_status_t weft_moe_router_topk_##X(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t experts,  \
                                         int k, bool normalize, const float *logits, float *probs, \
                                         float *lse, int32_t *ids, float *weights);                \
  weft_status_t weft_moe_router_backward_##X(                                                      \
      weft_kernel_ctx_t *ctx, int64_t tokens, int64_t experts, int k, bool normalize,              \
      const float *probs, const float *lse, const int32_t *ids, const float *weights,              \
      const float *dweights, const float *prob_coef, float z_scale, float *dlogits);               \
  weft_status_t weft_moe_gather_sum_##X(                                                           \
      weft_kernel_ctx_t *ctx, int64_t rows, int64_t width, int fan, const float *src,              \
      int64_t src_ld, const int32_t *idx, const float *w, float *dst, int64_t dst_ld);             \
  weft_status_t weft_moe_row_dot_##X(                                                              \
      weft_kernel_ctx_t *ctx, int64_t rows, int64_t width, const float *a, int64_t lda,            \
      const int32_t *a_idx, const float *b, int64_t ldb, const int32_t *b_idx, float *out);        \
  weft_status_t weft_moe_swiglu_forward_##X(weft_kernel_ctx_t *ctx, int64_t n, const float *a,     \
                                            const float *b, float *act);                           \
  weft_status_t weft_moe_swiglu_backward_##X(weft_kernel_ctx_t *ctx, int64_t n, const float *a,    \
                                             const float *b, const float *dact, float *da,         \
                                             float *db);

WEFT_MOE_BACKENDS(cpu)
#if WEFT_HAVE_CUDA
WEFT_MOE_BACKENDS(cuda)
#endif

/* A tensor argument for the NULL check: its name, pointer and element count (0: empty, so it
 * may be NULL; -1: rows picked by an index list, size unknown but needed). */
typedef struct weft_moe_arg {
  const char *name;
  const void *ptr;
  int64_t elems;
} weft_moe_arg_t;

/* Logs and returns WEFT_ERR_INVALID_ARG for the first argument that is NULL but needed. */
weft_status_t weft_moe_check_args(const char *fn, const weft_moe_arg_t *args, int count);

/* Checks ctx, shape and the host offsets of a grouped-experts call (see weft/moe.h) and
 * returns M = offsets[E_l] in *rows_p. Guarantees hidden, ffn and every expert's row count fit
 * in int (what BLAS takes) and that M*h, M*f, 2*M*f and E_l*h*f fit in int64. */
weft_status_t weft_moe_experts_check(const char *fn, const weft_kernel_ctx_t *ctx,
                                     const weft_moe_experts_shape_t *shape, const int64_t *offsets,
                                     int64_t *rows_p);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_MOE_INTERNAL_H */
