/* The decay gate of gated linear attention (docs/model.md), CPU and CUDA, f32, elementwise:
 *
 *   forward   y = scale * logsigmoid(x) = scale * (min(x, 0) - log1p(exp(-|x|)))    (<= 0)
 *   backward  dx = dy * scale * sigmoid(-x)
 *
 * Both are written in the overflow-free forms above (no exp of a positive argument), so any
 * finite x gives a finite result; logsigmoid(x) -> x for x -> -inf and -> 0 for x -> +inf.
 * The model uses scale = 1/16 (GLA's gate temperature). CPU and CUDA use the same formulas
 * with the libm / CUDA expf and log1pf, so they agree to a few ulps (not bitwise).
 * y may be x (in place); dx may be dy. Other overlaps are WEFT_ERR_INVALID_ARG.
 * Errors: WEFT_ERR_INVALID_ARG (NULL context, n < 0, NULL pointers with n > 0, scale not
 * finite), WEFT_ERR_DEVICE. n = 0 is a no-op. */
#ifndef WEFT_GATE_H
#define WEFT_GATE_H

#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"

/* [in] x [n]  [out] y [n] */
weft_status_t weft_gate_logsigmoid_forward(weft_kernel_ctx_t *ctx, int64_t n, float scale,
                                           const float *x, float *y);
/* [in] x [n] (the forward's input), dy [n]  [out] dx [n] */
weft_status_t weft_gate_logsigmoid_backward(weft_kernel_ctx_t *ctx, int64_t n, float scale,
                                            const float *x, const float *dy, float *dx);

#endif /* WEFT_GATE_H */
