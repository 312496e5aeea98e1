/* Block softmax attention: the kernel primitive of every sequence-parallel algorithm
 * (design.md section 4), CPU and CUDA.
 *
 * A call attends a block of queries to a block of keys/values. Both blocks carry the GLOBAL
 * position of each of their tokens, so one kernel serves every block pair of Ulysses, ring
 * (zigzag) and TokenRing: with `causal`, query i may attend key j iff kv_pos[j] <= q_pos[i].
 * A negative position marks a padding token: a padded key is never attended, a padded query
 * gets out = 0 and lse = -inf (and contributes nothing to any gradient).
 *
 * Per batch b and query head h (key/value head h / (H / Hkv), integer division, as in
 * flash-attention: GQA/MQA when Hkv < H):
 *   s_ij  = scale * q_i . k_j                         over allowed (i, j)
 *   lse_i = log sum_j exp(s_ij)        (natural log; -inf when row i allows no key)
 *   out_i = sum_j exp(s_ij - lse_i) v_j               (0 when lse_i = -inf)
 *
 * Partial results over different KV blocks combine exactly with weft_attn_merge, in f32:
 *   lse = log(exp(lse_a) + exp(lse_b)),  out = exp(lse_a - lse) out_a + exp(lse_b - lse) out_b
 * so a rank can attend its queries to the KV blocks one at a time, in any order.
 *
 * Backward of L = sum <dout, out> for one block pair, given the FINAL (merged over all KV
 * blocks) out's lse and delta_i = dout_i . out_i (weft_attn_backward_delta):
 *   p_ij  = exp(s_ij - lse_i),  dp_ij = dout_i . v_j,  ds_ij = p_ij (dp_ij - delta_i)
 *   dq_i += scale * sum_j ds_ij k_j,   dk_j += scale * sum_i ds_ij q_i,   dv_j += sum_i p_ij dout_i
 * The gradients ACCUMULATE (+=) into f32 buffers the caller zeroed, so the contributions of
 * every block pair (and, for GQA, of every query head of a group into its KV head) add up.
 *
 * Layouts (row-major, contiguous), per call:
 *   q, out, dout, dq     : [B, nq, H, d]        lse, delta : [B, H, nq] f32
 *   k, v, dk, dv         : [B, nk, Hkv, d]
 *   q_pos [nq], kv_pos [nk] : int64 global positions, shared by all batch entries and heads,
 *                             in the context device's memory (host memory on the CPU)
 * q, k, v and dout are of `dtype`: WEFT_DTYPE_F32, or on CUDA also WEFT_DTYPE_BF16. out, lse,
 * delta and the gradients dq, dk, dv are always f32: block outputs are partials that are
 * merged before any rounding, so results do not drift with the number of blocks (ranks).
 * Compute and accumulation are f32 on both devices. Memory beyond the operands is O(block)
 * (flash-style tiling): no [nq, nk] score matrix is ever stored. Scratch comes from the context's
 * grow-once workspace.
 *
 * Every function is ordered on the context's stream (kernel_ctx.h). nq or nk may be 0 (an
 * empty block): forward gives lse = -inf and out = 0 for every row; backward adds nothing. */
#ifndef WEFT_ATTENTION_H
#define WEFT_ATTENTION_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"
#include "weft/tensor.h"

typedef struct weft_attn_shape {
  int64_t batch;      /* B */
  int64_t heads;      /* H, query heads */
  int64_t kv_heads;   /* Hkv: H must be a multiple of Hkv */
  int64_t head_dim;   /* d */
  int64_t q_len;      /* nq: query tokens in this block */
  int64_t kv_len;     /* nk: key/value tokens in this block */
  float scale;        /* softmax scale, usually 1/sqrt(d) */
  bool causal;        /* mask by global position: key j allowed iff kv_pos[j] <= q_pos[i] */
  weft_dtype_t dtype; /* of q, k, v, dout: F32 (both devices) or BF16 (CUDA only) */
} weft_attn_shape_t;

/* Forward of one block pair.
 * [in]  q [B,nq,H,d]; k, v [B,nk,Hkv,d]; q_pos [nq]; kv_pos [nk]
 * [out] out [B,nq,H,d] f32, lse [B,H,nq] f32 */
weft_status_t weft_attn_block_forward(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,
                                      const void *q, const void *k, const void *v,
                                      const int64_t *q_pos, const int64_t *kv_pos, float *out,
                                      float *lse);

/* Merges a block's partial result into a running one, in place, in f32:
 * (out, lse) <- merge((out, lse), (out_b, lse_b)). Uses B, H, nq, d of `shape` (kv fields
 * ignored). Rows where both lse are -inf stay (0, -inf).
 * [in,out] out [B,nq,H,d] f32, lse [B,H,nq]   [in] out_b [B,nq,H,d] f32, lse_b [B,H,nq] */
weft_status_t weft_attn_merge(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape, float *out,
                              float *lse, const float *out_b, const float *lse_b);

/* delta [B,H,nq] f32 = rowsum(dout * out) per (b, h, i), from the final (merged) out. Uses B,
 * H, nq, d and dtype of `shape` (kv fields ignored).
 * [in] out [B,nq,H,d] f32, dout [B,nq,H,d] (dtype) */
weft_status_t weft_attn_backward_delta(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,
                                       const float *out, const void *dout, float *delta);

/* Backward of one block pair, accumulating.
 * [in] q [B,nq,H,d]; k, v [B,nk,Hkv,d]; q_pos, kv_pos; dout [B,nq,H,d];
 *      lse, delta [B,H,nq] (of the final, merged out)
 * [in,out] dq [B,nq,H,d] f32, dk, dv [B,nk,Hkv,d] f32: += this pair's contribution */
weft_status_t weft_attn_block_backward(weft_kernel_ctx_t *ctx, const weft_attn_shape_t *shape,
                                       const void *q, const void *k, const void *v,
                                       const int64_t *q_pos, const int64_t *kv_pos,
                                       const void *dout, const float *lse, const float *delta,
                                       float *dq, float *dk, float *dv);

#endif /* WEFT_ATTENTION_H */
