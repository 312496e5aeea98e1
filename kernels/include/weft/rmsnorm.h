/* RMSNorm (docs/model.md), CPU and CUDA, f32.
 *
 * Per row x [d] of a [N, d] tensor, with a learned gain w [d]:
 *   rstd = 1 / sqrt(mean_i x_i^2 + eps),   y_i = x_i * rstd * w_i
 * Backward of L given dy, with xhat_i = x_i * rstd:
 *   dw_i += sum_rows dy_i * xhat_i                     (accumulated, like every weight gradient)
 *   dx_i  = rstd * (w_i dy_i - xhat_i * mean_j(w_j dy_j xhat_j))
 * rstd is saved by the forward so the backward does not recompute it. Rows are independent;
 * each sum has a fixed order, so results do not depend on the thread count. The dw reduction
 * over rows is done in an order fixed by the implementation, never by the thread count or the
 * GPU (CPU: rows in increasing order per column, in double; CUDA: 32 strided row groups added
 * in group order), so it is deterministic too; no float atomics.
 *
 * Errors: WEFT_ERR_INVALID_ARG (NULL context or pointers of non-empty tensors, N < 0, d < 1,
 * eps not finite or < 0), WEFT_ERR_DEVICE. N = 0 is a no-op. */
#ifndef WEFT_RMSNORM_H
#define WEFT_RMSNORM_H

#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"

/* [in] x [N, d], w [d]  [out] y [N, d] (may not alias x), rstd [N] */
weft_status_t weft_rmsnorm_forward(weft_kernel_ctx_t *ctx, int64_t rows, int64_t dim, float eps,
                                   const float *x, const float *w, float *y, float *rstd);

/* [in] x [N, d], w [d], rstd [N] from the forward, dy [N, d]
 * [out] dx [N, d] (overwritten; may alias dy)  [in,out] dw [d] (added to) */
weft_status_t weft_rmsnorm_backward(weft_kernel_ctx_t *ctx, int64_t rows, int64_t dim,
                                    const float *x, const float *w, const float *rstd,
                                    const float *dy, float *dx, float *dw);

#endif /* WEFT_RMSNORM_H */
