/* AdamW (decoupled weight decay, Loshchilov & Hutter) and the squared norm for global-norm
 * clipping, CPU and CUDA, over flat f32 buffers (docs/model.md).
 *
 * One step t >= 1 on n parameters, after the caller has scaled the gradient by the clipping
 * factor (it is passed as grad_scale so the gradient buffer is not rewritten):
 *   g  = grad_scale * grad
 *   m  = beta1 m + (1 - beta1) g
 *   v  = beta2 v + (1 - beta2) g^2
 *   mh = m / (1 - beta1^t),  vh = v / (1 - beta2^t)
 *   p  = p - lr * (mh / (sqrt(vh) + eps) + weight_decay * p)
 * The same f32 operations in the same order on both devices (no fused multiply-add in the CPU
 * path, __fmul_rn/__fadd_rn style on CUDA), so CPU and CUDA agree bitwise for the same inputs,
 * which the bitwise resume and --deterministic guarantees build on.
 * weft_sumsq gives sum_i x_i^2 in double, in a fixed blocked order (deterministic for a given n
 * on a device); the trainer adds the buffers' sums and takes the square root.
 * Errors: WEFT_ERR_INVALID_ARG (NULL pointers of non-empty buffers, n < 0, step < 1, betas
 * outside [0, 1), eps <= 0 or not finite, lr, weight_decay or grad_scale negative or not finite,
 * param, grad, m, v not pairwise disjoint), WEFT_ERR_DEVICE. */
#ifndef WEFT_ADAMW_H
#define WEFT_ADAMW_H

#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"

typedef struct weft_adamw_params {
  float lr;
  float beta1, beta2;
  float eps;
  float weight_decay;
  int64_t step;     /* t, 1 for the first step */
  float grad_scale; /* clipping factor (1 = none) */
} weft_adamw_params_t;

/* [in,out] param, m, v [n]  [in] grad [n] */
weft_status_t weft_adamw_step(weft_kernel_ctx_t *ctx, const weft_adamw_params_t *params, int64_t n,
                              float *param, const float *grad, float *m, float *v);

/* [in] x [n]  [out] *sum_p = sum x_i^2 (double; the call synchronises the context) */
weft_status_t weft_sumsq(weft_kernel_ctx_t *ctx, int64_t n, const float *x, double *sum_p);

#endif /* WEFT_ADAMW_H */
