/* Gated linear attention (GLA) kernels: one rank's share of the sequence, CPU and CUDA.
 *
 * Math (design.md section 5), per batch b and head h, tokens t = 1..n of this rank:
 *   S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t        S: [dk, dv], row i decays by exp(g_t[i])
 *   o_t = scale * q_t S_t                            o_t: [dv]
 * with g_t <= 0 the log decay ([dk]). A rank starts from an incoming state S_in (the state
 * after the previous ranks' tokens). Because the recurrence is linear in S,
 *   o_t = o_t^local + scale * (q_t * exp(c_t)) S_in,      c_t = g_1 + ... + g_t (cumulative)
 *   S_n = S_local + diag(Gamma) S_in,                     Gamma = exp(c_n)
 * where o^local and S_local are what the rank computes from S_in = 0. So the forward is split
 * into a communication-free local part and a correction once S_in has arrived, and the
 * sequence-parallel algorithms only move [dk, dv] states.
 *
 * Backward: let dS_out be the gradient of the loss with respect to the state leaving this
 * rank, S_n (zero on the last rank unless the final state feeds a loss). The gradient with
 * respect to S_in is
 *   dS_in = diag(Gamma) dS_out + dS_local,  dS_local = scale * sum_t (q_t * exp(c_t))^T do_t
 * which is the reverse scan of design.md section 5. Then dq, dk, dv, dg follow locally,
 * recomputing local states from the saved S_in (no O(n) state storage).
 *
 * Layouts (row-major, contiguous; H is shape.layout_heads, which is shape.heads unless a call
 * covers a subset of the heads, see weft_gla_shape_t):
 *   q, k, g, dq, dk, dg : [B, n, H, dk]      v, o, do, dv : [B, n, H, dv]
 *   S_in, S_local, dS_*  : [B, H, dk, dv]    log_gamma    : [B, H, dk]  (= c_n, <= 0)
 * All tensors are f32. Computation is chunked (chunk length `chunk`, default 64): within a
 * chunk the work is dense matrix products, across chunks a [dk, dv] state is carried, so
 * memory is O(chunk) per head beyond the inputs and outputs. Decays are applied through
 * differences of cumulative log decays inside a chunk (exp(c_t - c_s), s <= t), so very
 * negative g cannot overflow. (The CPU kernels factor exp(c_t - c_s) into two bounded factors
 * around the chunk's middle decay, turning the scores into GEMMs, only for the channels whose
 * decay over the chunk and whose values keep every product far from the f32 range; the other
 * channels take the exact path. See kernels/cpu/linear_attention_cpu.c.)
 *
 * Every function is ordered on the context's stream (see kernel_ctx.h); scratch comes from
 * the context's grow-once workspace. n may be 0 (a rank with no tokens): outputs are empty,
 * S_local = 0, log_gamma = 0. */
#ifndef WEFT_LINEAR_ATTENTION_H
#define WEFT_LINEAR_ATTENTION_H

#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"

typedef struct weft_gla_shape {
  int64_t batch;  /* B */
  int64_t tokens; /* n: this rank's tokens (may be 0) */
  int64_t heads;  /* H */
  int64_t dk;     /* key / decay width */
  int64_t dv;     /* value width */
  int64_t chunk;  /* chunk length C; 0 = 64 */
  float scale;    /* output scale, usually 1/sqrt(dk) */
  /* Heads per token in the tensors' layout; 0 means `heads` (whole tensors). With
   * layout_heads > heads a call covers `heads` consecutive heads of tensors laid out
   * [B, n, layout_heads, d] (states [B, layout_heads, dk, dv], log_gamma [B, layout_heads, dk]),
   * and every pointer points at the first head of the subset: to run heads [h0, h0 + heads) a
   * caller passes q + h0*dk, v + h0*dv, s_in + h0*dk*dv, log_gamma + h0*dk, ... (one call
   * covers all B batch elements, strided by the layout). Heads are independent, so the result
   * for each head is bitwise the same as in a whole-tensor call and elements of other heads are
   * neither read nor written. Sequence parallelism uses it to pipeline per head group: the
   * states of one group travel between ranks while the next group computes, with no copy into
   * per-group tensors. Kept last so positional initialisers leave it 0. CPU only: on a CUDA
   * context layout_heads != heads is WEFT_ERR_UNSUPPORTED (the CUDA kernels take whole heads).
   * Values other than 0 and >= heads are WEFT_ERR_INVALID_ARG. */
  int64_t layout_heads;
} weft_gla_shape_t;

/* Local forward from a zero incoming state.
 * [in]  q, k, g [B,n,H,dk]; v [B,n,H,dv]
 * [out] out [B,n,H,dv]: o^local;  s_local [B,H,dk,dv];  log_gamma [B,H,dk] */
weft_status_t weft_gla_forward_local(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                     const float *q, const float *k, const float *v, const float *g,
                                     float *out, float *s_local, float *log_gamma);

/* Adds the incoming state's contribution: out_t += scale * (q_t * exp(c_t)) S_in.
 * [in] q, g [B,n,H,dk]; s_in [B,H,dk,dv]   [in,out] out [B,n,H,dv] */
weft_status_t weft_gla_forward_correct(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                       const float *q, const float *g, const float *s_in,
                                       float *out);

/* The local part of the state gradient: dS_local = scale * sum_t (q_t * exp(c_t))^T do_t.
 * [in] q, g [B,n,H,dk]; dout [B,n,H,dv]   [out] ds_local [B,H,dk,dv] */
weft_status_t weft_gla_backward_state_local(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                            const float *q, const float *g, const float *dout,
                                            float *ds_local);

/* Gradients of the inputs, given the saved incoming state and the gradient of the outgoing
 * state. Local states are recomputed chunk by chunk from s_in.
 * [in]  q, k, g [B,n,H,dk]; v, dout [B,n,H,dv]; s_in, ds_out [B,H,dk,dv]
 * [out] dq, dk, dg [B,n,H,dk]; dv [B,n,H,dv] */
weft_status_t weft_gla_backward(weft_kernel_ctx_t *ctx, const weft_gla_shape_t *shape,
                                const float *q, const float *k, const float *v, const float *g,
                                const float *dout, const float *s_in, const float *ds_out,
                                float *dq, float *dk, float *dv, float *dg);

#endif /* WEFT_LINEAR_ATTENTION_H */
