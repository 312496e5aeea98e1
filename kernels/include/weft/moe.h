/* Mixture-of-Experts kernels: router, row gather/reduce, SwiGLU experts grouped per expert.
 * CPU and CUDA behind one header (design.md section 6; docs/expert-parallel.md).
 *
 * These are the device-side pieces of the expert-parallel layer (parallel/moe_ep.c). They know
 * nothing about ranks: the layer builds index lists on the host and calls these on buffers in
 * the memory of the context's device (host memory on the CPU device). All tensors are f32 and
 * row-major; row strides (ld*) count elements. Index lists are int32 (a layer's rows per rank
 * stay far below 2^31) and live in device memory like the data.
 *
 * Router (per token t, E experts, top-k):
 *   logits_t = x_t W_r                        (computed by the caller with weft_gemm)
 *   p_t = softmax(logits_t),  lse_t = log sum_i exp(logits_t,i)
 *   ids_t = the k experts with the largest logits, largest first; equal logits are ordered by
 *           the lower expert id (deterministic, the same on CPU and CUDA)
 *   w_t,j = p_t,ids_j            or, with normalize,  p_t,ids_j / sum_j' p_t,ids_j'
 * Router backward, given dw (gradient of the loss with respect to the k weights), a per-expert
 * coefficient a_i added to every dp_t,i (the load-balancing loss, whose gradient is linear in
 * p) and a z-loss scale c (the z-loss gradient c * lse_t * p_t,i with respect to the logits):
 *   dp_t,i = a_i + [i chosen] * (normalize ? (dw_t,i - sum_j dw_t,j w_t,j) / Z_t : dw_t,i),
 *            Z_t = sum_j p_t,ids_j
 *   dlogits_t,i = p_t,i * (dp_t,i - sum_m p_t,m dp_t,m) + c * lse_t * p_t,i
 * (dw_t,i is dweights at the slot j with ids_t,j = i; the sums over j run over the k slots)
 *
 * Experts: SwiGLU FFNs y_e(x) = (silu(x W1_e) * (x W3_e)) W2_e with silu(a) = a / (1 + e^-a),
 * W1_e, W3_e: [h, f], W2_e: [f, h]. Rows are grouped expert-major: expert e owns rows
 * [offsets[e], offsets[e+1]) of x, so each expert is three GEMMs over a contiguous block
 * (OpenBLAS / cuBLAS through weft_gemm) and the kernels never see a per-token loop.
 *
 * Rejected: a fused dispatch kernel that routes, counts and packs in one pass (DeepEP's way).
 * The layer needs the counts on the host anyway to size the MPI all-to-all-v, and the index
 * lists built there are reused by combine and by the whole backward, so the device work that
 * remains is the gathers below; fusing them would save launches, not bytes.
 *
 * Errors: WEFT_ERR_INVALID_ARG (NULL context, negative sizes, ld below the row width, k
 * outside 1..E, NULL pointers for non-empty tensors, offsets not non-decreasing from 0),
 * WEFT_ERR_UNSUPPORTED (sizes beyond int32 where BLAS or the index type needs them),
 * WEFT_ERR_DEVICE (CUDA launch failure). A size of 0 rows is a no-op. Outputs must not overlap
 * inputs except where a function allows it (checked from the address ranges where the extent
 * is known). Index values live in device memory and are not validated: negative indices mean
 * "no row" as documented per function, and router ids outside 0..E-1 are skipped by the
 * backward (never read or written out of bounds); an index past the end of its tensor is the
 * caller's bug. */
#ifndef WEFT_MOE_H
#define WEFT_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"

/* Softmax and top-k of router logits.
 * [in]  logits [T, E]
 * [out] probs [T, E]: softmax over all E (f32, max-subtracted)
 * [out] lse [T]: log-sum-exp of each row of logits (for the z-loss); may be NULL
 * [out] ids [T, k]: chosen experts, largest logit first, ties to the lower id (a NaN logit
 *       ranks as -inf, so ids are defined, distinct and device-independent for any input)
 * [out] weights [T, k]: their probabilities (bitwise probs[t, ids_j]), divided by their f32 sum
 *       in slot order when `normalize` */
weft_status_t weft_moe_router_topk(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t experts, int k,
                                   bool normalize, const float *logits, float *probs, float *lse,
                                   int32_t *ids, float *weights);

/* Gradient of the router logits (see the file comment for the formulas).
 * [in]  probs [T, E], ids [T, k], weights [T, k] from weft_moe_router_topk
 * [in]  lse [T]: needed when z_scale != 0, else may be NULL
 * [in]  dweights [T, k]: gradient with respect to the k weights (0 for a dropped slot)
 * [in]  prob_coef [E]: added to every dp_t,i; NULL means 0
 * [in]  z_scale: c in c * lse_t * p_t,i (for z-loss weight z over T tokens: c = 2 z / T)
 * [out] dlogits [T, E] (overwritten) */
weft_status_t weft_moe_router_backward(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t experts,
                                       int k, bool normalize, const float *probs, const float *lse,
                                       const int32_t *ids, const float *weights,
                                       const float *dweights, const float *prob_coef, float z_scale,
                                       float *dlogits);

/* Weighted gather-sum of rows: for each output row i,
 *   dst[i, :] = sum over j in 0..fan-1 with idx[i, j] >= 0 of w[i, j] * src[idx[i, j], :]
 * summed in increasing j (a fixed order: the result does not depend on the device's thread
 * schedule); a row whose indices are all negative becomes 0. fan = 1 with w == NULL is a plain
 * row gather (permutation; rows are copied bit for bit); w == NULL means every weight is 1.
 * fan >= 1. The CPU and CUDA results are bitwise equal (the same unfused f32 operations).
 * [in]  src [*, width] with row stride src_ld; idx [rows, fan]; w [rows, fan] or NULL
 * [out] dst [rows, width] with row stride dst_ld (must not overlap src) */
weft_status_t weft_moe_gather_sum(weft_kernel_ctx_t *ctx, int64_t rows, int64_t width, int fan,
                                  const float *src, int64_t src_ld, const int32_t *idx,
                                  const float *w, float *dst, int64_t dst_ld);

/* Row dot products: out[i] = sum_c a[ia(i), c] * b[ib(i), c], where ia(i) = a_idx[i] (or i when
 * a_idx is NULL) and likewise for b; a negative index in either list gives out[i] = 0 (a
 * dropped slot). Used for the gradient of a routing weight, the dot of an expert's output row
 * with the output gradient of its token.
 * [in]  a [*, width] (row stride lda), b [*, width] (row stride ldb); a_idx, b_idx [rows] or NULL
 * [out] out [rows] */
weft_status_t weft_moe_row_dot(weft_kernel_ctx_t *ctx, int64_t rows, int64_t width, const float *a,
                               int64_t lda, const int32_t *a_idx, const float *b, int64_t ldb,
                               const int32_t *b_idx, float *out);

/* SwiGLU gate, elementwise over n values: act = silu(a) * b. act may alias neither a nor b. */
weft_status_t weft_moe_swiglu_forward(weft_kernel_ctx_t *ctx, int64_t n, const float *a,
                                      const float *b, float *act);
/* Its backward: da = dact * b * silu'(a), db = dact * silu(a), silu'(a) = s (1 + a (1 - s)),
 * s = sigmoid(a). da may be the same buffer as dact (computed in place); db may not alias. */
weft_status_t weft_moe_swiglu_backward(weft_kernel_ctx_t *ctx, int64_t n, const float *a,
                                       const float *b, const float *dact, float *da, float *db);

/* Shape of a group of experts held by one rank. */
typedef struct weft_moe_experts_shape {
  int64_t experts; /* E_l >= 0: experts in the group (the rank's local experts) */
  int64_t hidden;  /* h >= 1 */
  int64_t ffn;     /* f >= 1 */
} weft_moe_experts_shape_t;

/* Grouped SwiGLU forward over M = offsets[E_l] expert-major rows.
 * [in]  offsets [E_l + 1]: HOST array, offsets[0] = 0, non-decreasing; expert e owns rows
 *       [offsets[e], offsets[e+1]) (an expert with no rows is skipped)
 * [in]  x [M, h]; w1, w3 [E_l, h, f]; w2 [E_l, f, h]
 * [out] a, b [M, f]: x W1_e and x W3_e (kept for the backward)
 * [out] act [M, f]: silu(a) * b (kept for the backward)
 * [out] y [M, h] */
weft_status_t weft_moe_experts_forward(weft_kernel_ctx_t *ctx,
                                       const weft_moe_experts_shape_t *shape,
                                       const int64_t *offsets, const float *x, const float *w1,
                                       const float *w3, const float *w2, float *a, float *b,
                                       float *act, float *y);

/* Grouped SwiGLU backward.
 * [in]  offsets, x, w1, w3, w2, a, b, act as in (and from) the forward; dy [M, h]
 * [out] dx [M, h] (overwritten)
 * [in,out] dw1, dw3 [E_l, h, f], dw2 [E_l, f, h]: gradients ADDED (beta = 1), so gradient
 *       accumulation over micro-batches needs no extra buffer; zero them for a fresh gradient
 * [tmp] work [2 * M * f]: scratch owned by the caller */
weft_status_t weft_moe_experts_backward(weft_kernel_ctx_t *ctx,
                                        const weft_moe_experts_shape_t *shape,
                                        const int64_t *offsets, const float *x, const float *w1,
                                        const float *w3, const float *w2, const float *a,
                                        const float *b, const float *act, const float *dy,
                                        float *dx, float *dw1, float *dw3, float *dw2, float *work);

#endif /* WEFT_MOE_H */
