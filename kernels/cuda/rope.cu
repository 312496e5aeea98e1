/* CUDA back end of RoPE (weft/rope.h), in place on x [n, H, d], repeating the CPU's expressions
 * (kernels/cpu/rope_cpu.c): theta_i = pow(base, -(2i) / d), a = p theta_i, cos and sin in
 * double, each rounded to f32 once; the rotation in f32 with __fmul_rn / __fadd_rn / __fsub_rn
 * (no FMA contraction, which the CPU does not do either). The two devices then differ only
 * where CUDA's double pow/cos/sin (2 ulp / 1 ulp) and glibc's round differently, which moves
 * an f32 cos/sin by at most 1 ulp and only rarely.
 *
 * One thread per (token, pair i), in a grid-stride loop: it computes one cos/sin and applies
 * it to that pair in all H heads; neighbouring threads touch neighbouring pairs (coalesced).
 * A negative position leaves the token unchanged.
 * Rejected: __sincosf / f32 angles (off by ~4e-3 rad at p = 1e5) and float2 loads (x need not
 * be 8-byte aligned when a caller passes an offset into a larger buffer). */
#include "cuda_common.cuh"
#include "layer_ops_internal.h"

__global__ void rope_kernel(int64_t tokens, int64_t heads, int64_t d, double base,
                            const int64_t *pos, bool inverse, float *x) {
  const int64_t half = d / 2;
  WEFT_CUDA_GRID_STRIDE_LOOP(e, tokens * half) {
    const int64_t t = e / half, i = e - t * half, p = pos[t];
    if (p < 0) continue;
    double theta = pow(base, -(double)(2 * i) / (double)d);
    double a = (double)p * theta, sd, cd;
    sincos(a, &sd, &cd);
    const float c = (float)cd, s = (float)sd;
    float *v = x + t * heads * d + 2 * i;
    for (int64_t h = 0; h < heads; h++, v += d) {
      float x0 = v[0], x1 = v[1];
      if (inverse) {
        v[0] = __fadd_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        v[1] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
      } else {
        v[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        v[1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
      }
    }
  }
}

extern "C" weft_status_t weft_rope_apply_cuda(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t heads,
                                              int64_t head_dim, double base, const int64_t *pos,
                                              bool inverse, float *x) {
  const int64_t pairs = tokens * (head_dim / 2);
  rope_kernel<<<weft_cuda_grid(ctx, pairs), WEFT_CUDA_BLOCK, 0, (cudaStream_t)ctx->cuda_stream>>>(
      tokens, heads, head_dim, base, pos, inverse, x);
  return weft_cuda_launch_check("rope_apply", WEFT_DTYPE_F32, pairs);
}
