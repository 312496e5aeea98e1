/* Softmax cross-entropy over a vocabulary, CPU and CUDA, f32 (docs/model.md).
 *
 * Per row t of logits z [n, V] with target y_t (int32; a negative target marks a position
 * without a label, e.g. the last token of a sequence or padding, which adds no loss and gets a
 * zero gradient):
 *   lse_t  = log sum_v exp(z_t,v)           (max-subtracted)
 *   loss_t = lse_t - z_t,y_t                (0 when y_t < 0)
 * Backward with a scale s (usually 1 / the number of labelled tokens in the global batch, so
 * that gradients summed over ranks and micro-batches give the gradient of the mean loss):
 *   dz_t,v = s * (exp(z_t,v - lse_t) - [v == y_t])      (0 for a row with y_t < 0)
 * The forward writes the per-row losses; the caller sums them (in double, rank by rank) so the
 * reported loss does not depend on the thread count or the number of ranks beyond rounding.
 * lse is written for every row, labelled or not. Targets in device memory are not checked (that
 * would cost a sync per call): on CUDA a target >= V gives its row a NaN loss and a NaN gradient
 * row, never an out-of-bounds access.
 * Errors: WEFT_ERR_INVALID_ARG (NULL pointers of non-empty tensors, n < 0, V < 1, a target
 * >= V on the CPU, s not finite, outputs overlapping inputs other than dlogits == logits),
 * WEFT_ERR_DEVICE. */
#ifndef WEFT_CROSS_ENTROPY_H
#define WEFT_CROSS_ENTROPY_H

#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"

/* [in] logits [n, V], targets [n]  [out] loss [n], lse [n] (saved for the backward) */
weft_status_t weft_cross_entropy_forward(weft_kernel_ctx_t *ctx, int64_t rows, int64_t vocab,
                                         const float *logits, const int32_t *targets, float *loss,
                                         float *lse);
/* [in] logits [n, V], targets [n], lse [n]  [out] dlogits [n, V] (overwritten; may alias
 * logits: computed in place) */
weft_status_t weft_cross_entropy_backward(weft_kernel_ctx_t *ctx, int64_t rows, int64_t vocab,
                                          const float *logits, const int32_t *targets,
                                          const float *lse, float scale, float *dlogits);

#endif /* WEFT_CROSS_ENTROPY_H */
