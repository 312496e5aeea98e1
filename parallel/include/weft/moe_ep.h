/* Expert-parallel Mixture-of-Experts layer (design.md section 6; docs/expert-parallel.md).
 *
 * The E experts are sharded over the ranks of an ep communicator in contiguous blocks of
 * E_l = E / P_ep (rank r owns experts [r E_l, (r+1) E_l)); every rank holds its own tokens and
 * a copy of the router. One forward:
 *   1. router on the rank's tokens: logits = x W_r, softmax, top-k (weft_moe_router_topk);
 *   2. counts: one all-gather over ep of every rank's per-expert counts [E] (int64). From it
 *      every rank knows how many (token, slot) pairs each rank routes to each expert, so the
 *      capacity rule and the receive sizes need no further exchange;
 *   3. dispatch: a small all-to-all-v of the routing (per kept slot: its row in the message,
 *      local expert id and weight), then one all-to-all-v of the token rows in which a token
 *      goes ONCE to each rank that owns any of its chosen experts (de-duplicated);
 *   4. the receiving rank permutes rows into expert-major order and runs its experts grouped
 *      (weft_moe_experts_forward: three GEMMs per expert);
 *   5. combine: the rank sums the weighted outputs of its local experts per received token
 *      and sends one row back per (token, rank); the owner sums the rows it gets back.
 * Backward reuses the forward's index lists: output gradients travel like the token rows
 * (once per (token, rank)), each expert rank returns one pre-summed dx row per (token, rank)
 * and the gradient of each routing weight; the router backward then adds its part to dx.
 *
 * Capacity (capacity_factor > 0): each expert takes at most C = ceil(cf * k * T_group / E)
 * (token, slot) pairs per micro-batch, T_group being the tokens of the whole ep group. Slots
 * are kept in global token order (rank order, then token order within a rank): rank r keeps
 * its first max(0, C - (slots of ranks < r)) slots for that expert. The rule is computed from
 * the all-gathered counts on every rank, so it costs no communication and does not depend on
 * the number of ranks. A dropped slot contributes nothing to y (its weight is not
 * renormalised away) and gets a zero weight gradient. Dropless (cf = 0) is the default.
 *
 * Load balancing (arXiv 2501.11873, global batch): LBL = E * sum_i f_i * P_i with
 * f_i = c_i / (k T) from the counts of the whole global batch (before dropping) and
 * P_i = (1/T) sum_t p_t,i (full softmax). The counts come from step 2 plus one all-reduce of
 * [E] int64 over `replicas` (the ranks that hold other tokens for the same experts, NULL when
 * the ep group holds all tokens). f is a constant for the gradient: dLBL/dp_t,i = E f_i / T,
 * a per-expert coefficient applied locally, so the gradient needs no communication. Within a
 * step opened by weft_moe_step_begin the counts accumulate over micro-batches: micro-batch m
 * uses f from micro-batches 1..m (the whole global batch at the last one, and exactly the
 * global-batch f when a step has one micro-batch). The optional router z-loss is
 * z_weight * (1/T) sum_t lse_t^2.
 *
 * Bytes (per rank, per call, from the communicator's counters): the token payload of
 * dispatch + combine (and of the two backward exchanges) equals the de-duplicated minimum,
 * h * 4 bytes per (own token, distinct remote rank owning one of its kept experts) for the
 * rows going out, plus h * 4 per (remote token, this rank) pair for the combined rows going
 * back; the routing metadata (12 bytes per kept remote slot forward, 4 backward) and the
 * counts (8 E bytes per peer) are reported separately. Asserted by the tests.
 *
 * Memory: x, y, dy, dx, weights and gradients are f32 in the memory of the kernel context's
 * device. Routing is decided on the host (ids and weights are copied there: T * k * 8 bytes),
 * because the MPI all-to-all-v needs the counts on the host; index lists go back to the
 * device for the gather kernels. Buffers grow to the largest call seen and are then reused:
 * dropless routing makes the receive size data-dependent (up to P * T * k rows on one rank),
 * so sizing for the worst case at creation would reserve P times the typical memory.
 *
 * State: the forward keeps what the backward needs (routing, index lists, expert
 * activations) in the plan; weft_moe_backward applies to the most recent forward and must be
 * given the same x and weights. One plan per MoE layer. */
#ifndef WEFT_MOE_EP_H
#define WEFT_MOE_EP_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/comm.h"
#include "weft/kernel_ctx.h"
#include "weft/status.h"

typedef struct weft_moe_config {
  int64_t hidden;         /* h */
  int64_t ffn;            /* f: expert hidden width */
  int64_t experts;        /* E: divisible by the ep size */
  int topk;               /* k: 1..E */
  bool normalize;         /* renormalise the k weights to sum 1 */
  double capacity_factor; /* 0 = dropless; > 0: C = ceil(cf * k * T_group / E) */
  double aux_weight;      /* weight of LBL in the loss (its gradient in backward); >= 0 */
  double z_weight;        /* weight of the router z-loss; >= 0 */
} weft_moe_config_t;

/* Weights as seen by one rank: the replicated router and the rank's E_l local experts. */
typedef struct weft_moe_weights {
  const float *router; /* [h, E] */
  const float *w1;     /* [E_l, h, f] */
  const float *w3;     /* [E_l, h, f] */
  const float *w2;     /* [E_l, f, h] */
} weft_moe_weights_t;

/* Gradient buffers, same shapes as the weights. The backward ADDS to them. */
typedef struct weft_moe_grads {
  float *router;
  float *w1;
  float *w3;
  float *w2;
} weft_moe_grads_t;

/* Bytes one rank sent in one pass (forward or backward), from the communicator's counters
 * (self excluded). */
typedef struct weft_moe_pass_bytes {
  uint64_t payload; /* token rows: dispatch + combine (forward), dy + dx (backward) */
  uint64_t meta;    /* counts all-gather + routing metadata (forward), weight grads (backward) */
  /* de-duplicated payload minimum: h * 4 * ((own token, remote rank) pairs + (remote token,
   * this rank) pairs) */
  uint64_t minimum;
} weft_moe_pass_bytes_t;

/* Where one pass's wall time went on this rank (seconds). Each pass starts its communication
 * with a barrier over ep (and replicas), and the return exchange after the experts with
 * another over ep: wait_s is the time spent in them, waiting for the slowest rank to arrive
 * (load imbalance: other ranks' attention or experts still computing; one message latency
 * otherwise). exchange_s covers every communication call but those (counts, metadata,
 * payload); experts_s the grouped expert kernels (synchronised). */
typedef struct weft_moe_pass_time {
  double total_s;
  double wait_s;
  double exchange_s;
  double payload_s; /* the token-row all-to-all-vs alone (part of exchange_s) */
  double experts_s;
} weft_moe_pass_time_t;

/* What the most recent forward (and backward) saw on this rank. Arrays are owned by the plan
 * and valid until the next forward or the plan's destruction. */
typedef struct weft_moe_stats {
  int64_t tokens;             /* this rank's tokens */
  int64_t tokens_micro;       /* tokens of this micro-batch over the ep group and replicas */
  int64_t tokens_step;        /* tokens of the step's micro-batches so far */
  int64_t global_tokens;      /* T normalising P_i: weft_moe_step_begin's, or tokens_step */
  const int64_t *counts;      /* [E] c_i of this micro-batch, whole ep group and replicas */
  const int64_t *counts_step; /* [E] accumulated over the step's micro-batches */
  const int64_t *expert_rows; /* [E_l] slots each local expert processed (after dropping) */
  int64_t capacity;           /* C per expert (0 when dropless) */
  int64_t dropped;            /* slots of this rank's tokens dropped by the capacity rule */
  int64_t rows_sent;          /* token rows dispatched, self included */
  int64_t rows_received;      /* token rows received, self included */
  /* This rank's share of the losses: the sums over every rank of the ep group and replicas
   * are the global LBL (unweighted) and z-loss (unweighted). */
  double aux_loss_partial;
  double z_loss_partial;
  weft_moe_pass_bytes_t fwd;
  weft_moe_pass_bytes_t bwd;
  weft_moe_pass_time_t fwd_time;
  weft_moe_pass_time_t bwd_time;
} weft_moe_stats_t;

typedef struct weft_moe_plan weft_moe_plan_t;

/* Creates a plan. Collective over `ep` (and `replicas`): the configurations are compared and
 * a mismatch is an error on every rank.
 * [in] ep: the expert-parallel communicator (rank order = expert block order). Borrowed.
 * [in] replicas: ranks holding the same experts for other tokens (the counts are summed over
 *      it), or NULL. Borrowed.
 * [in] ctx: kernel context on the communicator's device. Borrowed.
 * [in] config: copied.
 * Errors: WEFT_ERR_INVALID_ARG (E not divisible by the ep size, k outside 1..E, non-positive
 * h / f, negative or non-finite factors, configurations that differ between ranks),
 * WEFT_ERR_NO_MEMORY, WEFT_ERR_COMM. */
weft_status_t weft_moe_plan_create(weft_comm_t *ep, weft_comm_t *replicas, weft_kernel_ctx_t *ctx,
                                   const weft_moe_config_t *config, weft_moe_plan_t **plan_p);
void weft_moe_plan_destroy(weft_moe_plan_t *plan);

const weft_moe_config_t *weft_moe_plan_config(const weft_moe_plan_t *plan);
int64_t weft_moe_plan_local_experts(const weft_moe_plan_t *plan); /* E_l */
int64_t weft_moe_plan_first_expert(const weft_moe_plan_t *plan);  /* r * E_l */
const weft_moe_stats_t *weft_moe_plan_stats(const weft_moe_plan_t *plan);

/* Opens a training step of several micro-batches: the load-balancing counts accumulate over
 * the forwards that follow until the next call. global_tokens: tokens of the whole global
 * batch (every micro-batch, every rank), the T normalising P_i; 0 = the tokens seen so far.
 * Without any call, every forward is a step of its own. */
void weft_moe_step_begin(weft_moe_plan_t *plan, int64_t global_tokens);

/* Forward. Collective over ep (and replicas).
 * [in]  tokens: this rank's tokens T_l (>= 0; ranks may differ)
 * [in]  x [T_l, h]; weights as above
 * [out] y [T_l, h] */
weft_status_t weft_moe_forward(weft_moe_plan_t *plan, int64_t tokens, const float *x,
                               const weft_moe_weights_t *weights, float *y);

/* Backward of  sum(y * dy) + aux_weight * LBL + z_weight * z  for the most recent forward.
 * Collective over ep.
 * [in]  x, weights: as given to that forward; dy [T_l, h]
 * [out] dx [T_l, h] (overwritten)
 * [in,out] grads: gradients added (router: this rank's tokens' share; sum it over the ranks
 *       that hold the router). */
weft_status_t weft_moe_backward(weft_moe_plan_t *plan, const float *x,
                                const weft_moe_weights_t *weights, const float *dy, float *dx,
                                const weft_moe_grads_t *grads);

#endif /* WEFT_MOE_EP_H */
