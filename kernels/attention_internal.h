/* Private to kernels/: the device back ends of weft/attention.h. attention.c validates the
 * arguments once (shape, pointers, dtype for the device) and dispatches on the context's
 * device kind to these; each takes the same arguments as its public counterpart, with a
 * shape the front end has checked. */
#ifndef WEFT_ATTENTION_INTERNAL_H
#define WEFT_ATTENTION_INTERNAL_H

/* Inside extern "C": attention.cu includes this first, and the C headers it pulls in
 * (weft/tensor.h) carry no linkage guards of their own. */
#ifdef __cplusplus
extern "C" {
#endif

#include "weft/attention.h"

#define WEFT_ATTN_BACKENDS(X)                                                                  \
  weft_status_t weft_attn_block_forward_##X(                                                   \
      weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape, const void *q, const void *k,    \
      const void *v, const int64_t *q_pos, const int64_t *kv_pos, float *out, float *lse);     \
  weft_status_t weft_attn_merge_##X(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,    \
                                    float *out, float *lse, const float *out_b,                \
                                    const float *lse_b);                                       \
  weft_status_t weft_attn_backward_delta_##X(weft_kernel_ctx_t *ctx,                           \
                                             const weft_attn_shape_t *shape, const float *out, \
                                             const void *dout, float *delta);                  \
  weft_status_t weft_attn_block_backward_##X(                                                  \
      weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape, const void *q, const void *k,    \
      const void *v, const int64_t *q_pos, const int64_t *kv_pos, const void *dout,            \
      const float *lse, const float *delta, float *dq, float *dk, float *dv);

WEFT_ATTN_BACKENDS(cpu)
#if WEFT_HAVE_CUDA
WEFT_ATTN_BACKENDS(cuda)
#endif

#ifdef __cplusplus
}
#endif

#endif /* WEFT_ATTENTION_INTERNAL_H */
