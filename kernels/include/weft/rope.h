/* Rotary position embedding (RoPE, docs/model.md), CPU and CUDA, f32, in place.
 *
 * For a token at GLOBAL position p (sequence parallelism hands each rank positions that are
 * not 0..n-1, e.g. zigzag chunks) and each head, the pairs (x_2i, x_2i+1), i < d/2, rotate by
 * the angle p * theta_i with theta_i = base^(-2i/d):
 *   x_2i'   = x_2i cos - x_2i+1 sin
 *   x_2i+1' = x_2i sin + x_2i+1 cos
 * The backward is the rotation by -p * theta_i (the transpose), applied to the gradient.
 * Angles are computed in double and rounded to f32 once (cos/sin of large p * theta lose
 * precision in f32: at p = 10^5 an f32 angle is off by ~4e-3 rad), identically on CPU and CUDA
 * up to the last bit of cos/sin. A negative position (padding) leaves its row unchanged.
 *
 * Layout: x [n, H, d] (a batch is folded into n), pos [n] int64 in the context device's
 * memory (host memory on the CPU). d must be even.
 * Errors: WEFT_ERR_INVALID_ARG (odd or non-positive d, n < 0, H < 1, base <= 1 or not finite,
 * NULL pointers of non-empty tensors), WEFT_ERR_DEVICE. */
#ifndef WEFT_ROPE_H
#define WEFT_ROPE_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"

/* [in,out] x [n, H, d]; [in] pos [n]. inverse = false: forward rotation; true: backward
 * (rotate by the negative angle, for the gradient). */
weft_status_t weft_rope_apply(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t heads,
                              int64_t head_dim, double base, const int64_t *pos, bool inverse,
                              float *x);

#endif /* WEFT_ROPE_H */
