/* Private to kernels/: the device back ends of weft/gate.h. gate.c validates and dispatches;
 * the back ends may assume n > 0, non-NULL pointers, a finite scale and allowed aliasing. */
#ifndef WEFT_GATE_INTERNAL_H
#define WEFT_GATE_INTERNAL_H

#include "kernel_ctx_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

#include <stdint.h>

#define WEFT_GATE_BACKENDS(X)                                                                     \
  weft_status_t weft_gate_logsigmoid_forward_##X(weft_kernel_ctx_t *ctx, int64_t n, float scale,  \
                                                 const float *x, float *y);                       \
  weft_status_t weft_gate_logsigmoid_backward_##X(weft_kernel_ctx_t *ctx, int64_t n, float scale, \
                                                  const float *x, const float *dy, float *dx);

WEFT_GATE_BACKENDS(cpu)
#if WEFT_HAVE_CUDA
WEFT_GATE_BACKENDS(cuda)
#endif

#ifdef __cplusplus
}
#endif

#endif /* WEFT_GATE_INTERNAL_H */
