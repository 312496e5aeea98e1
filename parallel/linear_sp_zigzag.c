/* Sequence-parallel gated linear attention in the zigzag layout (linear_sp.h, "Zigzag").
 *
 * Rank r of P holds chunks r and 2P-1-r of a sequence cut into 2P chunks of c tokens, in
 * [B, 2c, H, d] tensors whose batch rows hold chunk r, then chunk 2P-1-r (the "pieces" 0 and
 * 1). That memory is also [2B, c, H, d] with batch index 2b + piece, so the kernels run on
 * the shape (2B, c) unchanged (plan->kshape) and their states and decays come out
 * [B, 2, H, dk, dv] and [B, 2, H, dk].
 *
 * The state travels along chunk order 0..2P-1: the first pieces of ranks 0..P-1, then the
 * second pieces of ranks P-1..0. The state gradient travels the other way: the second pieces
 * of ranks 0..P-1, then the first pieces of ranks P-1..0. Both are the same chain of 2P links
 * with the pieces swapped, so one routine (chain) runs both, `lead` being the piece the chain
 * visits first (0 forward, 1 backward):
 *   1. an exclusive forward scan of the lead pieces over ranks 0 -> P-1;
 *   2. the turn, on rank P-1 alone: what leaves its lead piece enters its other piece, and
 *      what leaves that piece is what it sends on (no communication);
 *   3. an exclusive reverse scan of the other pieces over ranks P-1 -> 0, rank P-1 sending
 *      the state from the turn.
 * Each scan is the contiguous plan's scan on half the buffer, so zeco and ring move one
 * [B,H,dk,dv] state per rank per direction per half. lasp2 gathers both pieces of every rank
 * at once and folds the chain up to each of its pieces locally.
 *
 * The scans want each half contiguous, but the pieces interleave per batch row, so states
 * and decays travel to and from the host piece-major, [2, B, ...], by two strided copies
 * each (states only; activations never move).
 *
 * Rejected: starting the reverse scan before the forward one ends (it would need the product
 * of the decays along it and rank P-1's turn state sent to every rank: more bytes for a
 * latency the benchmarks have not asked for), and the overlap of linear_sp_overlap.c. That
 * was built and measured (units of batch rows, each unit's chain of both scans and the turn on
 * the progress thread; bitwise equal results): on the 2-core VM, training step of the default
 * model, it hid nothing (sp 2: exposed 1.5-3.3% with it, 2.2-2.7% without; sp 4 on 2 cores:
 * 16-19% with, 12-17% without), the progress threads competing with the compute for the
 * cores. Worth measuring again where the host cores are idle (GPU nodes). */
#include <math.h>
#include <string.h>

#include "linear_sp_internal.h"
#include "weft/allscan.h"
#include "weft/check.h"
#include "weft/timer.h"

/* Elements of one piece's states, [B,H,dk,dv], and decays, [B,H,dk]: half of each buffer. */
static size_t half_states(const weft_linear_sp_plan_t *plan) { return plan->state_count / 2; }
static size_t half_gammas(const weft_linear_sp_plan_t *plan) { return plan->gamma_count / 2; }

/* [B, 2, m] device buffer -> [2, B, m] host buffer (m elements per batch row and piece). */
static weft_status_t pieces_down(weft_linear_sp_plan_t *plan, float *host, const float *dev,
                                 size_t m) {
  size_t B = (size_t)plan->shape.batch, row = m * sizeof(float);
  for (size_t p = 0; p < 2; p++)
    WEFT_CHECK(weft_device_copy_2d_async(plan->dev, host + p * B * m, row, dev + p * m, 2 * row,
                                         row, B, WEFT_COPY_DEVICE_TO_HOST,
                                         weft_kernel_ctx_stream(plan->ctx)));
  return WEFT_OK;
}

/* [2, B, m] host buffer -> [B, 2, m] device buffer, ordered before the next kernel. */
static weft_status_t pieces_up(weft_linear_sp_plan_t *plan, float *dev, const float *host,
                               size_t m) {
  size_t B = (size_t)plan->shape.batch, row = m * sizeof(float);
  for (size_t p = 0; p < 2; p++)
    WEFT_CHECK(weft_device_copy_2d_async(plan->dev, dev + p * m, 2 * row, host + p * B * m, row,
                                         row, B, WEFT_COPY_HOST_TO_DEVICE,
                                         weft_kernel_ctx_stream(plan->ctx)));
  return WEFT_OK;
}

/* After a local kernel filled d_state and d_log_gamma: both pieces' contributions and decays
 * on the host, piece-major, and the decays exp'd. */
static weft_status_t stage_pieces(weft_linear_sp_plan_t *plan) {
  const weft_gla_shape_t *s = &plan->shape;
  size_t per_state = (size_t)(s->heads * s->dk * s->dv), per_gamma = (size_t)(s->heads * s->dk);
  WEFT_CHECK(pieces_down(plan, plan->h_local, plan->d_state, per_state));
  WEFT_CHECK(pieces_down(plan, plan->h_log_gamma, plan->d_log_gamma, per_gamma));
  WEFT_CHECK(weft_kernel_ctx_synchronize(plan->ctx));
  for (size_t i = 0; i < plan->gamma_count; i++) plan->h_gamma[i] = expf(plan->h_log_gamma[i]);
  return WEFT_OK;
}

/* The decays of piece p's half of the buffer. */
static linear_sp_rows_t piece_rows(const weft_linear_sp_plan_t *plan, int p) {
  return (linear_sp_rows_t){plan->h_gamma + (size_t)p * half_gammas(plan), (size_t)plan->shape.dv};
}

/* One exclusive scan of half the buffer over the ranks, zeco or ring. */
static weft_status_t scan_half(weft_linear_sp_plan_t *plan, bool forward, linear_sp_rows_t *rows,
                               float *local, float *result) {
  if (plan->algo == WEFT_LINEAR_SP_RING)
    return linear_sp_ring_scan(plan, forward, half_states(plan), rows, local, result);
  weft_allscan_op_t op = {WEFT_DTYPE_F32, linear_sp_allscan_combine, rows};
  return weft_allscan(plan->comm, local, result, half_states(plan), &op,
                      forward ? WEFT_ALLSCAN_FORWARD : WEFT_ALLSCAN_REVERSE, WEFT_ALLSCAN_EXCLUSIVE,
                      plan->blocks, WEFT_MEM_HOST);
}

/* lasp2: one all-gather of every rank's two pieces (x, log_gamma), then the chain folded in
 * order. Link j of the chain is rank j's lead piece (j < P) or rank 2P-1-j's other piece;
 * this rank's lead piece is entered after link r-1, its other piece after link 2P-2-r. */
static weft_status_t lasp2_chain(weft_linear_sp_plan_t *plan, int lead, float *result) {
  const size_t n = plan->state_count, ng = plan->gamma_count, per = n + ng;
  const size_t half = half_states(plan), halfg = half_gammas(plan);
  const int P = plan->size, r = plan->rank;
  memcpy(plan->h_pack, plan->h_local, n * sizeof(float));
  memcpy(plan->h_pack + n, plan->h_log_gamma, ng * sizeof(float));
  WEFT_CHECK(weft_comm_allgather(plan->comm, plan->h_pack, plan->h_all, per, WEFT_DTYPE_F32,
                                 WEFT_MEM_HOST));
  /* This rank's pack is spent once gathered: its tail holds each link's decay in turn. */
  float *gamma = plan->h_pack + n;
  linear_sp_rows_t rows = {gamma, (size_t)plan->shape.dv};
  float *acc = result + (size_t)lead * half;
  memset(acc, 0, half * sizeof(float));
  for (int j = 0; j <= 2 * P - 2 - r; j++) {
    if (j == r) { /* acc entered the lead piece; carry on towards the other one */
      float *other = result + (size_t)(1 - lead) * half;
      memcpy(other, acc, half * sizeof(float));
      acc = other;
    }
    int q = j < P ? j : 2 * P - 1 - j, piece = j < P ? lead : 1 - lead;
    const float *x = plan->h_all + (size_t)q * per + (size_t)piece * half;
    const float *log_gamma = plan->h_all + (size_t)q * per + n + (size_t)piece * halfg;
    for (size_t i = 0; i < halfg; i++) gamma[i] = expf(log_gamma[i]);
    linear_sp_combine_rows(&rows, 0, half, acc, x, acc);
  }
  return WEFT_OK;
}

/* The exclusive chain over the 2P pieces, lead piece first (see the top of the file).
 * In: h_local, h_gamma piece-major. [out] result [2,B,H,dk,dv] host: what enters each piece
 * along the chain. Leaves rank 0's h_local intact (it only starts or ends a scan). */
static weft_status_t chain(weft_linear_sp_plan_t *plan, int lead, float *result) {
  if (plan->algo == WEFT_LINEAR_SP_LASP2) return lasp2_chain(plan, lead, result);
  const size_t half = half_states(plan);
  const int other = 1 - lead;
  float *local_lead = plan->h_local + (size_t)lead * half;
  float *local_other = plan->h_local + (size_t)other * half;
  float *result_lead = result + (size_t)lead * half, *result_other = result + (size_t)other * half;
  linear_sp_rows_t rows_lead = piece_rows(plan, lead), rows_other = piece_rows(plan, other);

  WEFT_CHECK(scan_half(plan, true, &rows_lead, local_lead, result_lead));
  const bool turn = plan->rank == plan->size - 1;
  if (turn) {
    linear_sp_combine_rows(&rows_lead, 0, half, result_lead, local_lead, result_other);
    linear_sp_combine_rows(&rows_other, 0, half, result_other, local_other, plan->h_carry);
  }
  /* Rank P-1 starts the reverse scan with h_carry. Its own exclusive result (zero) is not
   * wanted, so it lands in h_carry too: both scans write it after sending. */
  return scan_half(plan, false, &rows_other, turn ? plan->h_carry : local_other,
                   turn ? plan->h_carry : result_other);
}

/* chain, timed into the plan's statistics: nothing hides it. */
static weft_status_t chain_timed(weft_linear_sp_plan_t *plan, int lead, float *result) {
  double t0 = weft_time_now();
  weft_status_t st = chain(plan, lead, result);
  double dt = weft_time_now() - t0;
  plan->stats.passes++;
  plan->stats.scan_s += dt;
  plan->stats.exposed_s += dt;
  return st;
}

weft_status_t linear_sp_zigzag_forward(weft_linear_sp_plan_t *plan, const float *q, const float *k,
                                       const float *v, const float *g, float *out, float *s_in,
                                       float *final_state) {
  const weft_gla_shape_t *ks = &plan->kshape; /* [2B, c] */
  const size_t half = half_states(plan), per_state = half / (size_t)plan->shape.batch;
  WEFT_CHECK(
      weft_gla_forward_local(plan->ctx, ks, q, k, v, g, out, plan->d_state, plan->d_log_gamma));
  WEFT_CHECK(stage_pieces(plan));
  WEFT_CHECK(chain_timed(plan, 0, plan->h_result));
  WEFT_CHECK(pieces_up(plan, s_in, plan->h_result, per_state));

  if (final_state && plan->rank == 0) {
    /* The last chunk, 2P-1, is rank 0's second piece: S_end = diag(Gamma) S_in + S_local of
     * that piece, on the host (into h_carry, spent, when staged). */
    linear_sp_rows_t rows = piece_rows(plan, 1);
    float *fs = plan->staged ? plan->h_carry : final_state;
    linear_sp_combine_rows(&rows, 0, half, plan->h_result + half, plan->h_local + half, fs);
    WEFT_CHECK(linear_sp_stage_up(plan, final_state, fs, half));
  }
  WEFT_CHECK(weft_gla_forward_correct(plan->ctx, ks, q, g, s_in, out));
  return weft_kernel_ctx_synchronize(plan->ctx);
}

weft_status_t linear_sp_zigzag_backward(weft_linear_sp_plan_t *plan, const float *q, const float *k,
                                        const float *v, const float *g, const float *dout,
                                        const float *s_in, float *dq, float *dk, float *dv,
                                        float *dg) {
  const weft_gla_shape_t *ks = &plan->kshape;
  const size_t per_state = half_states(plan) / (size_t)plan->shape.batch;
  WEFT_CHECK(linear_sp_recompute_log_gamma(plan, g));
  WEFT_CHECK(weft_gla_backward_state_local(plan->ctx, ks, q, g, dout, plan->d_state));
  WEFT_CHECK(stage_pieces(plan));
  /* dS_out of each piece: the chain run from the last chunk (rank 0's second piece). */
  WEFT_CHECK(chain_timed(plan, 1, plan->h_result));
  WEFT_CHECK(pieces_up(plan, plan->d_ds_out, plan->h_result, per_state));
  WEFT_CHECK(
      weft_gla_backward(plan->ctx, ks, q, k, v, g, dout, s_in, plan->d_ds_out, dq, dk, dv, dg));
  return weft_kernel_ctx_synchronize(plan->ctx);
}
