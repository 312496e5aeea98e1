/* Sequence-parallel softmax attention (design.md section 4; docs/sequence-parallel.md).
 *
 * The P ranks of an sp communicator share one sequence of N tokens. Each holds n local token
 * SLOTS in weft's layout (weft_attn_sp_layout_t): for causal attention the padded sequence is
 * cut into 2P chunks of c tokens and rank r holds chunks r and 2P-1-r (zigzag: equal causal
 * work on every rank); non-causal uses P contiguous chunks. When N is not a multiple of 2P (or
 * P), the sequence is padded at its end: a padding slot has position -1; its inputs must be
 * finite (zeros are best) and their values never reach a result (a NaN or inf there would,
 * through 0 * x in the kernels); its outputs are out = 0, lse = -inf and its gradients 0.
 *
 * Algorithms (all exact: partial outputs merge in f32 with their log-sum-exp):
 *   ULYSSES    all-to-all from sequence shards to head shards (an uneven split of the query
 *              heads when P does not divide H; each rank gets the KV heads its query heads
 *              use, so KV heads are replicated when P > Hkv), local attention over the whole
 *              sequence, all-to-all back. Backward sends q, k, v, dout, lse and
 *              delta = rowsum(dout * out) the same way and dq, dk, dv back (replicated KV
 *              heads' gradients are summed at their owner).
 *   RING       K,V rotate P-1 steps; the next block's transfer is posted before the current
 *              block is computed. Backward rotates K,V again with dk,dv accumulators that
 *              travel one step behind and end at their owner; dq accumulates locally.
 *   TOKENRING  K,V never move. At step s rank r sends its Q to rank r+s and gets rank r-s's;
 *              the partial (out, lse) goes straight back to the Q's owner, so both directions
 *              of every link carry data. Causal: only the half of Q (and of the partial
 *              output) that has work travels. Backward: q, dout, lse, delta travel the same
 *              way, the partial dq returns to its owner, dk/dv accumulate locally.
 *   HYBRID     Ulysses inside groups of u consecutive ranks, ring across the P/u groups
 *              (a group's chunks form a zigzag over the groups, so the ring stays balanced).
 *   AUTO       the cost model (weft_attn_sp_cost_predict) with the group's measured link
 *              bandwidth and latency picks one of the above at plan creation; the choice and
 *              the predictions are logged at info level.
 *
 * Bytes sent per rank per call are given by weft_attn_sp_cost_predict (exact, checked by the
 * tests against the communicators' counters); with f32 inputs and P dividing H and Hkv they
 * are design.md's formulas plus, for Ulysses, the lse that travels back with the output.
 *
 * Memory: q, k, v, dout, out, lse and the gradients are in the memory of the kernel context's
 * device. q, k, v, dout are of the configured dtype (F32; BF16 on CUDA); out, lse, dq, dk, dv
 * are f32. All workspace is allocated at plan creation; forward and backward allocate nothing
 * (the kernels' grow-once context workspace aside). */
#ifndef WEFT_ATTENTION_SP_H
#define WEFT_ATTENTION_SP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/comm.h"
#include "weft/kernel_ctx.h"
#include "weft/status.h"
#include "weft/tensor.h"

typedef enum weft_attn_sp_algo {
  WEFT_ATTN_SP_ULYSSES = 0,
  WEFT_ATTN_SP_RING = 1,
  WEFT_ATTN_SP_TOKENRING = 2,
  WEFT_ATTN_SP_HYBRID = 3,
  WEFT_ATTN_SP_AUTO = 4,
} weft_attn_sp_algo_t;

/* "ulysses", "ring", "tokenring", "hybrid", "auto". */
const char *weft_attn_sp_algo_name(weft_attn_sp_algo_t algo);
/* Parses one of the names above; WEFT_ERR_INVALID_ARG (not logged) otherwise. */
weft_status_t weft_attn_sp_algo_parse(const char *text, weft_attn_sp_algo_t *algo_p);

/* Where each global token lives. Pure arithmetic: no communication. */
typedef struct weft_attn_sp_layout {
  int64_t seq_len; /* N, real tokens */
  int ranks;       /* P */
  bool zigzag;     /* causal: 2P chunks, rank r holds r and 2P-1-r; else P contiguous */
  int64_t chunk;   /* c: tokens per chunk (padded) */
  int64_t local;   /* n: slots per rank = 2c (zigzag) or c */
} weft_attn_sp_layout_t;

/* seq_len >= 1, ranks >= 1. */
weft_status_t weft_attn_sp_layout_init(weft_attn_sp_layout_t *layout, int64_t seq_len, int ranks,
                                       bool zigzag);
/* Global position of slot `slot` (0 <= slot < n) of rank `rank`, or -1 for padding. */
int64_t weft_attn_sp_layout_position(const weft_attn_sp_layout_t *layout, int rank, int64_t slot);

typedef struct weft_attn_sp_config {
  int64_t batch;      /* B */
  int64_t heads;      /* H */
  int64_t kv_heads;   /* Hkv, H a multiple of Hkv */
  int64_t head_dim;   /* d */
  int64_t seq_len;    /* N: the global sequence length, real tokens */
  float scale;        /* softmax scale; 0 = 1/sqrt(d) */
  bool causal;        /* also picks the layout: zigzag when causal, contiguous otherwise */
  weft_dtype_t dtype; /* of q, k, v, dout: F32, or BF16 on CUDA */
  weft_attn_sp_algo_t algo;
  int ulysses_degree; /* HYBRID: u, dividing P (0 = automatic, see weft_attn_sp_plan_create);
                         ignored by the other algorithms */
} weft_attn_sp_config_t;

/* Link and compute rates the cost model works with. */
typedef struct weft_attn_sp_machine {
  double bandwidth_Bps; /* point-to-point bytes per second, one direction */
  double latency_s;     /* per message */
  double flops_per_s;   /* attention kernel throughput of one rank */
  bool duplex;          /* both directions of a link run at full rate at once */
} weft_attn_sp_machine_t;

/* The cost model's view of one algorithm for one shape: exact bytes, predicted seconds. */
typedef struct weft_attn_sp_cost {
  weft_attn_sp_algo_t algo; /* never AUTO */
  int ulysses_degree;       /* u actually used: P for ULYSSES, 1 for RING/TOKENRING */
  uint64_t bytes_fwd_max;   /* bytes sent by the busiest rank in one forward */
  uint64_t bytes_bwd_max;   /* ... in one backward */
  double flops_fwd;         /* useful attention FLOPs of the whole forward (all ranks) */
  double flops_bwd;
  double time_fwd_s; /* predicted, per call */
  double time_bwd_s;
} weft_attn_sp_cost_t;

/* Bytes rank `rank` sends in one forward and one backward of `algo` (never AUTO) with `ranks`
 * ranks and, for HYBRID, Ulysses degree `ulysses` (ignored otherwise). Exact: the same
 * arithmetic as the communication the plan posts. */
weft_status_t weft_attn_sp_cost_bytes(const weft_attn_sp_config_t *cfg, weft_attn_sp_algo_t algo,
                                      int ranks, int ulysses, int rank, uint64_t *fwd_p,
                                      uint64_t *bwd_p);
/* Full prediction for one algorithm (bytes are the max over ranks). */
weft_status_t weft_attn_sp_cost_predict(const weft_attn_sp_config_t *cfg, weft_attn_sp_algo_t algo,
                                        int ranks, int ulysses,
                                        const weft_attn_sp_machine_t *machine,
                                        weft_attn_sp_cost_t *cost);
/* Measures bandwidth and latency between neighbouring ranks of `comm` (ping-pong of a small
 * and a large message) and the kernel's FLOP rate on `ctx` (one small block pair), and agrees
 * on the slowest rank's numbers. Collective. Takes well under a second. */
weft_status_t weft_attn_sp_machine_measure(weft_comm_t *comm, weft_kernel_ctx_t *ctx,
                                           const weft_attn_sp_config_t *cfg,
                                           weft_attn_sp_machine_t *machine);

typedef struct weft_attn_sp_plan weft_attn_sp_plan_t;

/* Creates a plan. Collective over `sp` (HYBRID splits it; AUTO measures it); every rank passes
 * the same config.
 * [in] sp: the sequence-parallel communicator; rank order is layout order. Borrowed.
 * [in] ctx: kernel context on the communicator's device. Borrowed.
 * [in] cfg: copied. HYBRID with ulysses_degree 0 picks u = the divisor of P closest to sqrt(P)
 *      (ties: the smaller).
 * Errors (WEFT_ERR_INVALID_ARG, naming the value): non-positive sizes, H not a multiple of
 * Hkv, u not dividing P, a dtype the device cannot run (BF16 on the CPU), communicator and
 * context on different devices; WEFT_ERR_NO_MEMORY; communication errors (HYBRID's split,
 * AUTO's measurement). */
weft_status_t weft_attn_sp_plan_create(weft_comm_t *sp, weft_kernel_ctx_t *ctx,
                                       const weft_attn_sp_config_t *cfg,
                                       weft_attn_sp_plan_t **plan_p);
void weft_attn_sp_plan_destroy(weft_attn_sp_plan_t *plan);

/* The algorithm running (AUTO resolved) and its Ulysses degree. */
weft_attn_sp_algo_t weft_attn_sp_plan_algo(const weft_attn_sp_plan_t *plan);
int weft_attn_sp_plan_ulysses_degree(const weft_attn_sp_plan_t *plan);
const weft_attn_sp_layout_t *weft_attn_sp_plan_layout(const weft_attn_sp_plan_t *plan);
/* The global positions of this rank's n slots (-1 = padding), in host memory. */
const int64_t *weft_attn_sp_plan_positions(const weft_attn_sp_plan_t *plan);

/* Bytes this rank sent (summed over peers and over the plan's communicators) in the most
 * recent forward and backward. */
typedef struct weft_attn_sp_stats {
  uint64_t bytes_fwd;
  uint64_t bytes_bwd;
} weft_attn_sp_stats_t;
weft_attn_sp_stats_t weft_attn_sp_plan_stats(const weft_attn_sp_plan_t *plan);

/* Forward. Collective.
 * [in]  q [B,n,H,d]; k, v [B,n,Hkv,d]: this rank's slots (dtype)
 * [out] out [B,n,H,d] f32, lse [B,H,n] f32 (natural log)
 * On return the results are complete (the context's stream has been synchronised). */
weft_status_t weft_attn_sp_forward(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                   const void *v, float *out, float *lse);

/* Backward of L = sum <dout, out>. Collective.
 * [in]  q, k, v as for forward; out, lse from the forward; dout [B,n,H,d] (dtype)
 * [out] dq [B,n,H,d], dk, dv [B,n,Hkv,d], f32, overwritten */
weft_status_t weft_attn_sp_backward(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                    const void *v, const float *out, const float *lse,
                                    const void *dout, float *dq, float *dk, float *dv);

#endif /* WEFT_ATTENTION_SP_H */
