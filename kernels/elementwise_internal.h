/* Private to kernels/: the CPU and CUDA backends of weft/elementwise.h.
 *
 * elementwise.c validates (dtype, count, pointers, aliasing) and dispatches; the backends
 * assume n > 0, non-NULL pointers and a dtype of f32 or bf16 (a supported pair for casts).
 * CPU backends cannot fail and return nothing; CUDA backends report launch failures.
 * Declared inside extern "C" because the .cu files in kernels/cuda (C++) defines the CUDA ones. */
#ifndef WEFT_ELEMENTWISE_INTERNAL_H
#define WEFT_ELEMENTWISE_INTERNAL_H

#include "kernel_ctx_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

#include <stdint.h>

#include "weft/tensor.h"

void weft_elementwise_add_cpu(weft_dtype_t dtype, int64_t n, const void *a, const void *b, void *y);
void weft_elementwise_scale_cpu(weft_dtype_t dtype, int64_t n, float alpha, const void *x, void *y);
void weft_elementwise_axpy_cpu(weft_dtype_t dtype, int64_t n, float alpha, const void *x, void *y);
void weft_elementwise_fill_cpu(weft_dtype_t dtype, int64_t n, float value, void *y);
void weft_elementwise_cast_cpu(int64_t n, weft_dtype_t x_dtype, const void *x, weft_dtype_t y_dtype,
                               void *y);

#if WEFT_HAVE_CUDA
weft_status_t weft_elementwise_add_cuda(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                        const void *a, const void *b, void *y);
weft_status_t weft_elementwise_scale_cuda(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                          float alpha, const void *x, void *y);
weft_status_t weft_elementwise_axpy_cuda(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                         float alpha, const void *x, void *y);
weft_status_t weft_elementwise_fill_cuda(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                         float value, void *y);
weft_status_t weft_elementwise_cast_cuda(weft_kernel_ctx_t *ctx, int64_t n, weft_dtype_t x_dtype,
                                         const void *x, weft_dtype_t y_dtype, void *y);
#endif

#ifdef __cplusplus
}
#endif

#endif /* WEFT_ELEMENTWISE_INTERNAL_H */
