/* Private to kernels/: the device back ends of weft/linear_attention.h. linear_attention.c
 * validates arguments and dispatches on the context's device kind to these; each takes the
 * same arguments as its public counterpart. */
#ifndef WEFT_LINEAR_ATTENTION_INTERNAL_H
#define WEFT_LINEAR_ATTENTION_INTERNAL_H

#include "weft/linear_attention.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_GLA_BACKENDS(X)                                                                     \
  weft_status_t weft_gla_forward_local_##X(                                                      \
      weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape, const float *q, const float *k,     \
      const float *v, const float *g, float *out, float *s_local, float *log_gamma);             \
  weft_status_t weft_gla_forward_correct_##X(weft_kernel_ctx_t *ctx,                             \
                                             const weft_gla_shape_t *shape, const float *q,      \
                                             const float *g, const float *s_in, float *out);     \
  weft_status_t weft_gla_backward_state_local_##X(                                               \
      weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape, const float *q, const float *g,     \
      const float *dout, float *ds_local);                                                       \
  weft_status_t weft_gla_backward_##X(                                                           \
      weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape, const float *q, const float *k,     \
      const float *v, const float *g, const float *dout, const float *s_in, const float *ds_out, \
      float *dq, float *dk, float *dv, float *dg);

WEFT_GLA_BACKENDS(cpu)
#if WEFT_HAVE_CUDA
WEFT_GLA_BACKENDS(cuda)
#endif

#ifdef __cplusplus
}
#endif

#endif /* WEFT_LINEAR_ATTENTION_INTERNAL_H */
