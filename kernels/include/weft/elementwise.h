/* Elementwise kernels on contiguous vectors: add, scale, axpy, fill and dtype casts.
 *
 * Each takes a kernel context (the work is queued on its stream), a dtype, an element count n
 * and pointers into the memory of the context's device. f32 and bf16 are supported; bf16
 * values are widened to f32, computed in f32 and rounded back to nearest even once per element,
 * so a bf16 result is the correctly rounded f32 result. The CPU and CUDA implementations perform
 * the same f32 operations in the same order (no fused multiply-add), so their results are
 * bitwise identical; the CUDA tests rely on this.
 *
 * Aliasing: an output may be the very same buffer as an input (in place, e.g. scale with
 * x == y); partially overlapping buffers are rejected with WEFT_ERR_INVALID_ARG, because the
 * parallel kernels would read elements another thread has already written. n == 0 is a no-op
 * and accepts NULL pointers.
 *
 * Rejected: tensor descriptors here (these kernels are called on flat slices of arenas and
 * gradient buckets, where a count is the whole shape), and separate entry points per dtype
 * (the dtype argument keeps one validated entry per operation).
 *
 * Errors: WEFT_ERR_INVALID_ARG for a NULL context or pointer, n < 0, a dtype other than f32 or
 * bf16 (or a cast pair other than those listed), or partial overlap; WEFT_ERR_DEVICE when a
 * CUDA launch fails. */
#ifndef WEFT_ELEMENTWISE_H
#define WEFT_ELEMENTWISE_H

#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"
#include "weft/tensor.h"

/* y[i] = a[i] + b[i].  a, b, y: [n] dtype (y may be a or b). */
weft_status_t weft_elementwise_add(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                   const void *a, const void *b, void *y);

/* y[i] = alpha * x[i].  x, y: [n] dtype (y may be x: scale in place). */
weft_status_t weft_elementwise_scale(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                     float alpha, const void *x, void *y);

/* y[i] = y[i] + alpha * x[i], the product rounded to f32 before the sum.  x, y: [n] dtype. */
weft_status_t weft_elementwise_axpy(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                    float alpha, const void *x, void *y);

/* y[i] = value (rounded to nearest even for bf16).  y: [n] dtype. */
weft_status_t weft_elementwise_fill(weft_kernel_ctx_t *ctx, weft_dtype_t dtype, int64_t n,
                                    float value, void *y);

/* y[i] = (y_dtype) x[i].  x: [n] x_dtype, y: [n] y_dtype.
 * f32 -> bf16 rounds to nearest, ties to even; overflow gives inf; NaN stays NaN (sign and
 * leading payload kept, made quiet) instead of rounding to inf; denormals round like any value.
 * bf16 -> f32 is exact. f32 -> f32 and bf16 -> bf16 copy. x and y must not overlap, except a
 * same-dtype cast with x == y, which does nothing. Bitwise equal to weft_f32_to_bf16 /
 * weft_bf16_to_f32 (weft/bf16.h) on every input. */
weft_status_t weft_elementwise_cast(weft_kernel_ctx_t *ctx, int64_t n, weft_dtype_t x_dtype,
                                    const void *x, weft_dtype_t y_dtype, void *y);

#endif /* WEFT_ELEMENTWISE_H */
