/* CUDA back end of the token embedding (weft/embedding.h), f32. ids live in device memory and
 * are not checked by the front end; an id outside 0..V-1 gives a zero row in the forward and is
 * skipped by the backward, so a caller's bug never becomes an out-of-bounds access.
 *
 *   forward   one thread per element of y (coalesced along d), grid-stride.
 *   backward  one warp per (vocabulary row v, chunk of 128 columns): lane l holds columns
 *       l, l + 32, l + 64, l + 96 of the chunk, starting from dtable's values. The warp scans
 *       the ids 32 at a time (one coalesced load), __ballot_sync marks the tokens with id v, and
 *       their dy rows are added in increasing t with __fadd_rn: the same f32 adds in the same
 *       order as the CPU, so dtable is bitwise the CPU's, with no atomics and no scratch.
 *       Cost: every warp reads all n ids (4n bytes, from L2 after the first warp), V x d / 128
 *       warps in all: fine for the byte vocabulary (V = 256) of design.md section 9.
 * Rejected: float atomics (order varies: not deterministic); a stable sort of (id, t) pairs
 * into per-id lists (the scalable way for V in the tens of thousands, but it needs scratch of a
 * few n ints and several launches; revisit when a tokenizer with a large vocabulary lands). */
#include "cuda_common.cuh"
#include "layer_ops_internal.h"

#define EMB_WARP 32
#define EMB_COLS 4 /* columns per lane in the backward: 128 per warp, 4 loads in flight */

__global__ void emb_forward_kernel(int64_t tokens, int64_t vocab, int64_t d, const float *table,
                                   const int32_t *ids, float *y) {
  WEFT_CUDA_GRID_STRIDE_LOOP(e, tokens * d) {
    const int64_t t = e / d, c = e - t * d, v = ids[t];
    y[e] = v >= 0 && v < vocab ? table[v * d + c] : 0.0f;
  }
}

__global__ void emb_backward_kernel(int64_t tokens, int64_t vocab, int64_t d, const int32_t *ids,
                                    const float *dy, float *dtable) {
  const int lane = threadIdx.x % EMB_WARP;
  const int64_t chunks = (d + EMB_WARP * EMB_COLS - 1) / (EMB_WARP * EMB_COLS);
  for (int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / EMB_WARP;
       wid < vocab * chunks; wid += ((int64_t)gridDim.x * blockDim.x) / EMB_WARP) {
    const int64_t v = wid / chunks, c0 = (wid - v * chunks) * EMB_WARP * EMB_COLS + lane;
    float acc[EMB_COLS];
    for (int k = 0; k < EMB_COLS; k++) {
      int64_t c = c0 + k * EMB_WARP;
      acc[k] = c < d ? dtable[v * d + c] : 0.0f;
    }
    for (int64_t t0 = 0; t0 < tokens; t0 += EMB_WARP) {
      const int64_t my_t = t0 + lane;
      unsigned hits = __ballot_sync(0xffffffffu, my_t < tokens && ids[my_t] == v);
      while (hits) { /* lowest set bit first: increasing t */
        const int64_t t = t0 + __ffs(hits) - 1;
        hits &= hits - 1;
        for (int k = 0; k < EMB_COLS; k++) {
          int64_t c = c0 + k * EMB_WARP;
          if (c < d) acc[k] = __fadd_rn(acc[k], dy[t * d + c]);
        }
      }
    }
    for (int k = 0; k < EMB_COLS; k++) {
      int64_t c = c0 + k * EMB_WARP;
      if (c < d) dtable[v * d + c] = acc[k];
    }
  }
}

extern "C" weft_status_t weft_embedding_forward_cuda(weft_kernel_ctx_t *ctx, int64_t tokens,
                                                     int64_t vocab, int64_t dim, const float *table,
                                                     const int32_t *ids, float *y) {
  emb_forward_kernel<<<weft_cuda_grid(ctx, tokens * dim), WEFT_CUDA_BLOCK, 0,
                       (cudaStream_t)ctx->cuda_stream>>>(tokens, vocab, dim, table, ids, y);
  return weft_cuda_launch_check("embedding_forward", WEFT_DTYPE_F32, tokens);
}

extern "C" weft_status_t weft_embedding_backward_cuda(weft_kernel_ctx_t *ctx, int64_t tokens,
                                                      int64_t vocab, int64_t dim,
                                                      const int32_t *ids, const float *dy,
                                                      float *dtable) {
  const int64_t warps = vocab * ((dim + EMB_WARP * EMB_COLS - 1) / (EMB_WARP * EMB_COLS));
  emb_backward_kernel<<<weft_cuda_grid(ctx, warps * EMB_WARP), WEFT_CUDA_BLOCK, 0,
                        (cudaStream_t)ctx->cuda_stream>>>(tokens, vocab, dim, ids, dy, dtable);
  return weft_cuda_launch_check("embedding_backward", WEFT_DTYPE_F32, tokens);
}
