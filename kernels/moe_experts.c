/* Grouped SwiGLU experts (weft/moe.h): forward and backward over expert-major rows, written
 * once for every device with weft_gemm and the SwiGLU kernels.
 *
 * Expert e owns rows [o_e, o_e + m_e) of every [M, *] tensor (o = offsets, m_e = o_{e+1} - o_e)
 * and its weights W1_e, W3_e = w1, w3 + e h f ([h, f]) and W2_e = w2 + e f h ([f, h]):
 *   forward    a_e = x_e W1_e,  b_e = x_e W3_e          (per expert)
 *              act = silu(a) * b                        (one elementwise call over all M rows)
 *              y_e = act_e W2_e                         (per expert)
 *   backward   dact_e = dy_e W2_e^T,  dW2_e += act_e^T dy_e
 *              da, db = swiglu_backward(a, b, dact)     (one call; da over dact, in place)
 *              dx_e = da_e W1_e^T + db_e W3_e^T         (second GEMM with beta = 1)
 *              dW1_e += x_e^T da_e,  dW3_e += x_e^T db_e
 * work [2, M, f] holds dact (then da) and db. Experts with no rows are skipped, so their
 * gradients are left untouched and no zero-size GEMM is issued. Everything is queued on the
 * context's stream; the host only reads the offsets.
 *
 * Rejected: one batched GEMM over all experts (rows per expert differ, and padding every expert
 * to the largest count wastes the imbalance it is meant to measure) and cuBLAS grouped GEMM
 * (CUDA-only, and 3 launches per expert are cheap next to the data movement of the layer at
 * the expert counts a rank holds). A fused SwiGLU epilogue would save one pass over [M, f]
 * each way; left for when a profile shows it. */
#include "kernel_ctx_internal.h"
#include "moe_internal.h"
#include "weft/gemm.h"

#define MOE_F32 WEFT_DTYPE_F32

/* C [m, n] = alpha op(A) op(B) + beta C, f32, leading dimensions given. */
static weft_status_t moe_gemm(weft_kernel_ctx_t *ctx, bool ta, bool tb, int64_t m, int64_t n,
                              int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb,
                              float beta, float *c, int64_t ldc) {
  return weft_gemm(ctx, ta, tb, m, n, k, 1.0f, MOE_F32, a, lda, MOE_F32, b, ldb, beta, MOE_F32, c,
                   ldc);
}

weft_status_t weft_moe_experts_forward(weft_kernel_ctx_t *ctx,
                                       const weft_moe_experts_shape_t *shape,
                                       const int64_t *offsets, const float *x, const float *w1,
                                       const float *w3, const float *w2, float *a, float *b,
                                       float *act, float *y) {
  static const char fn[] = "weft_moe_experts_forward";
  int64_t M = 0;
  WEFT_CHECK(weft_moe_experts_check(fn, ctx, shape, offsets, &M));
  const int64_t E = shape->experts, h = shape->hidden, f = shape->ffn;
  const weft_moe_arg_t args[] = {
      {"x", x, M * h}, {"w1", w1, E * h * f}, {"w3", w3, E * h * f}, {"w2", w2, E * f * h},
      {"a", a, M * f}, {"b", b, M * f},       {"act", act, M * f},   {"y", y, M * h}};
  WEFT_CHECK(weft_moe_check_args(fn, args, (int)(sizeof args / sizeof args[0])));
  if (M == 0) return WEFT_OK;
  for (int64_t e = 0; e < E; e++) {
    int64_t r0 = offsets[e], m = offsets[e + 1] - r0;
    if (m == 0) continue;
    const float *xe = x + r0 * h;
    WEFT_CHECK(moe_gemm(ctx, false, false, m, f, h, xe, h, w1 + e * h * f, f, 0.0f, a + r0 * f, f));
    WEFT_CHECK(moe_gemm(ctx, false, false, m, f, h, xe, h, w3 + e * h * f, f, 0.0f, b + r0 * f, f));
  }
  WEFT_CHECK(weft_moe_swiglu_forward(ctx, M * f, a, b, act));
  for (int64_t e = 0; e < E; e++) {
    int64_t r0 = offsets[e], m = offsets[e + 1] - r0;
    if (m == 0) continue;
    WEFT_CHECK(moe_gemm(ctx, false, false, m, h, f, act + r0 * f, f, w2 + e * f * h, h, 0.0f,
                        y + r0 * h, h));
  }
  return WEFT_OK;
}

weft_status_t weft_moe_experts_backward(weft_kernel_ctx_t *ctx,
                                        const weft_moe_experts_shape_t *shape,
                                        const int64_t *offsets, const float *x, const float *w1,
                                        const float *w3, const float *w2, const float *a,
                                        const float *b, const float *act, const float *dy,
                                        float *dx, float *dw1, float *dw3, float *dw2,
                                        float *work) {
  static const char fn[] = "weft_moe_experts_backward";
  int64_t M = 0;
  WEFT_CHECK(weft_moe_experts_check(fn, ctx, shape, offsets, &M));
  const int64_t E = shape->experts, h = shape->hidden, f = shape->ffn;
  const weft_moe_arg_t args[] = {
      {"x", x, M * h},          {"w1", w1, E * h * f},   {"w3", w3, E * h * f},
      {"w2", w2, E * f * h},    {"a", a, M * f},         {"b", b, M * f},
      {"act", act, M * f},      {"dy", dy, M * h},       {"dx", dx, M * h},
      {"dw1", dw1, E * h * f},  {"dw3", dw3, E * h * f}, {"dw2", dw2, E * f * h},
      {"work", work, 2 * M * f}};
  WEFT_CHECK(weft_moe_check_args(fn, args, (int)(sizeof args / sizeof args[0])));
  if (M == 0) return WEFT_OK;
  float *dact = work, *db = work + M * f; /* dact becomes da in place */
  for (int64_t e = 0; e < E; e++) {
    int64_t r0 = offsets[e], m = offsets[e + 1] - r0;
    if (m == 0) continue;
    const float *dye = dy + r0 * h;
    WEFT_CHECK(moe_gemm(ctx, false, true, m, f, h, dye, h, w2 + e * f * h, h, 0.0f, dact + r0 * f,
                        f)); /* dact_e = dy_e W2_e^T */
    WEFT_CHECK(moe_gemm(ctx, true, false, f, h, m, act + r0 * f, f, dye, h, 1.0f, dw2 + e * f * h,
                        h)); /* dW2_e += act_e^T dy_e */
  }
  WEFT_CHECK(weft_moe_swiglu_backward(ctx, M * f, a, b, dact, dact, db));
  const float *da = dact;
  for (int64_t e = 0; e < E; e++) {
    int64_t r0 = offsets[e], m = offsets[e + 1] - r0;
    if (m == 0) continue;
    const float *xe = x + r0 * h, *dae = da + r0 * f, *dbe = db + r0 * f;
    float *dxe = dx + r0 * h;
    WEFT_CHECK(moe_gemm(ctx, false, true, m, h, f, dae, f, w1 + e * h * f, f, 0.0f, dxe, h));
    WEFT_CHECK(moe_gemm(ctx, false, true, m, h, f, dbe, f, w3 + e * h * f, f, 1.0f, dxe, h));
    WEFT_CHECK(moe_gemm(ctx, true, false, h, f, m, xe, h, dae, f, 1.0f, dw1 + e * h * f, f));
    WEFT_CHECK(moe_gemm(ctx, true, false, h, f, m, xe, h, dbe, f, 1.0f, dw3 + e * h * f, f));
  }
  return WEFT_OK;
}
