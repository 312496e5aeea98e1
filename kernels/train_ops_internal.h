/* Private to kernels/: the device back ends of weft/cross_entropy.h and weft/adamw.h, the
 * AdamW constants both back ends share, the sumsq blocking, and the CPU row-range threading
 * helper.
 *
 * cross_entropy.c and adamw.c validate every argument once and dispatch on the device kind to
 * weft_<fn>_cpu / weft_<fn>_cuda. What the back ends may assume: rows, n > 0; vocab >= 1;
 * rows * vocab fits in int64; non-NULL, non-overlapping buffers (dlogits may be logits); a
 * finite scale. On the CPU every target is < vocab (checked by the front end); on CUDA targets
 * live in device memory and are not checked, so the back end writes NaN for a row whose target
 * is >= vocab (loss and gradient) instead of reading out of bounds.
 *
 * AdamW: the front end turns weft_adamw_params_t into weft_adamw_coef_t on the host, once,
 * so both back ends use the very same f32 constants (1 - beta1, the bias corrections, ...);
 * only the per-element arithmetic runs on the device. Rejected: computing beta^t on the device
 * (powf differs between libm and CUDA; one ulp there would break bitwise agreement). */
#ifndef WEFT_TRAIN_OPS_INTERNAL_H
#define WEFT_TRAIN_OPS_INTERNAL_H

/* Inside extern "C": the .cu files include this, and weft/kernel_ctx.h and weft/status.h carry
 * no linkage guards of their own. */
#ifdef __cplusplus
extern "C" {
#endif

#include <stdint.h>

#include "weft/adamw.h"
#include "weft/cross_entropy.h"

/* The f32 constants of one AdamW step (see weft/adamw.h for the formulas). */
typedef struct weft_adamw_coef {
  float lr, weight_decay, eps, grad_scale;
  float beta1, one_minus_beta1; /* 1 - beta1 rounded to f32 */
  float beta2, one_minus_beta2;
  float bias1, bias2; /* 1 - beta^t computed in double, rounded to f32 (> 0 for t >= 1) */
} weft_adamw_coef_t;

/* sumsq order, the same on both devices: x is cut into chunks of WEFT_SUMSQ_CHUNK elements;
 * lane l of WEFT_SUMSQ_LANES sums (double) x_i^2 over the chunk's i = l (mod LANES) in
 * increasing i; a chunk's sum is ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)); chunks are
 * summed in order, WEFT_SUMSQ_ROUND at a time, from 0.0, into a round sum, and round sums in
 * order from 0.0 into the total. 8 lanes: a vector's worth of doubles (AVX-512) so the CPU loop
 * vectorises; 8192 elements (32 KiB, L1-sized) per chunk; 1024 chunks per round bound the CPU's
 * stack array and keep the CUDA round sums few. The square of a float is exact in double, so
 * contraction (FMA) cannot change any bit. */
#define WEFT_SUMSQ_LANES 8
#define WEFT_SUMSQ_CHUNK 8192
#define WEFT_SUMSQ_ROUND 1024

#define WEFT_TRAIN_OPS_BACKENDS(X)                                                               \
  weft_status_t weft_cross_entropy_forward_##X(weft_kernel_ctx_t *ctx, int64_t rows,             \
                                               int64_t vocab, const float *logits,               \
                                               const int32_t *targets, float *loss, float *lse); \
  weft_status_t weft_cross_entropy_backward_##X(                                                 \
      weft_kernel_ctx_t *ctx, int64_t rows, int64_t vocab, const float *logits,                  \
      const int32_t *targets, const float *lse, float scale, float *dlogits);                    \
  weft_status_t weft_adamw_step_##X(weft_kernel_ctx_t *ctx, const weft_adamw_coef_t *coef,       \
                                    int64_t n, float *param, const float *grad, float *m,        \
                                    float *v);                                                   \
  weft_status_t weft_sumsq_##X(weft_kernel_ctx_t *ctx, int64_t n, const float *x, double *sum_p);

WEFT_TRAIN_OPS_BACKENDS(cpu)
#if WEFT_HAVE_CUDA
WEFT_TRAIN_OPS_BACKENDS(cuda)
#endif

#ifdef __cplusplus
}
#endif

#endif /* WEFT_TRAIN_OPS_INTERNAL_H */
