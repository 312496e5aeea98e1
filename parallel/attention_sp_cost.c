/* The cost model of sequence-parallel softmax attention (weft_attn_sp_cost_predict) and the
 * measurement of the three rates it uses (weft_attn_sp_machine_measure). AUTO predicts every
 * candidate with these at plan creation and keeps the fastest; `weft bench attention` prints
 * the prediction next to the measured time, so the model can be checked by hand.
 *
 * The model, per call (forward or backward), with P ranks, Ulysses groups of u, R = P/u ring
 * members and L = u n tokens per group (ULYSSES: u = P, R = 1; RING, TOKENRING: u = 1, R = P):
 *   FLOPs    useful FLOPs of the whole call: forward 4 B H d * pairs (QK^T and PV, 2 FLOPs per
 *            multiply-add), pairs = N(N+1)/2 causal, N^2 otherwise; backward 2.5x forward, the
 *            flash-attention convention (dV, dP, dQ, dK GEMMs = 2x forward, plus recomputing
 *            QK^T = 0.5x). Kernels that recompute more (weft's CPU backward: about 3x forward)
 *            run above the prediction by that much.
 *   compute  a rank's share W = FLOPs * (query heads of the busiest Ulysses member / H) / R /
 *            flops_per_s, done in R equal steps of W/R: zigzag gives every ring step the same
 *            causal work; padding and the partly masked diagonal tiles are neglected.
 *   link     x(send, recv) = max(send, recv) / bandwidth when duplex, (send + recv) / bandwidth
 *            otherwise, plus latency per message, counting the messages the plan posts
 *            (attention_sp.c, attention_sp_tokenring.c). Bytes are the exact per-rank bytes of
 *            weft_attn_sp_cost_bytes, split into the steps that carry them.
 *   all-to-all (ULYSSES, HYBRID)  not overlapped: x(a, a) of the busiest member (a = its
 *            all-to-all bytes; what it receives is taken equal to what it sends) plus 2 (u - 1)
 *            latencies: one packed message per peer there (q, k, v [, dout, lse, delta]) and
 *            one back (out, lse or dq, dk, dv).
 *   ring     R steps; step s computes W/R while the next step's K,V hop (2 messages) travels:
 *            t = sum_s max(W/R, x_s). Backward: the [dk | dv] accumulator (f32, 1 message) hops
 *            one step behind (during steps 2..R-1) and its last hop home comes after the last
 *            step, exposed.
 *   TOKENRING  P steps of W/P; during step s the Q for step s+1 (and, backward, dout, lse,
 *            delta; 1 message) goes out while the partial out, lse (backward: dq; 1 message)
 *            of step s-1 comes back:
 *            t = sum_s max(W/P, max over ranks of x_s(rank)), plus the last return, exposed.
 *            Per rank and step, send and receive volumes differ on the causal layout (half a
 *            Q travels upwards, half an output returns downwards); both are counted.
 *
 * Measurement: ring neighbours exchange an 8 B and a 4 MiB message (send to r+1, receive from
 * r-1, every link busy at once, as in a ring step) in the comm's device memory, best of a few;
 * latency = the small exchange, bandwidth = the extra bytes over the extra time. The FLOP rate
 * is one non-causal block pair (full tiles: the bulk of a long sequence's work) of the cfg's
 * head dim and dtype, all ranks at once (they share the node as in a real call), repeated
 * after a warm-up for MEASURE_SPAN_S of wall time: total FLOPs / elapsed. A fixed span and not
 * the best single call, because a rank that shares its core (more ranks than cores) gets the
 * whole core for a few ms at a time: the best 1-2 ms call measured 2x its real rate at 4 ranks
 * on 2 cores. The slowest rank's numbers (min bandwidth, max latency, min FLOP rate) win.
 * Rejected: a bandwidth sweep (costs seconds; AUTO runs at every plan creation) and a
 * backward rate of its own (the machine description has one FLOP rate; see above). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention_sp_split.h"
#include "weft/attention.h"
#include "weft/bf16.h"
#include "weft/check.h"
#include "weft/log.h"
#include "weft/timer.h"

#define BWD_FLOP_FACTOR     2.5        /* flash-attention convention, see above */
#define MEASURE_SMALL       8          /* bytes: latency message */
#define MEASURE_LARGE       (4u << 20) /* bytes: big enough that latency is < 1 % */
#define MEASURE_REPS        5          /* exchanges per size; the minimum is kept */
#define MEASURE_TOKENS_CPU  256        /* block pair on the CPU: ~1-2 ms at 1 thread */
#define MEASURE_TOKENS_CUDA 2048       /* a GPU needs a bigger block to leave launch cost */
#define MEASURE_HEADS_MAX   8
#define MEASURE_SPAN_S      0.05 /* > a few scheduler time slices (CFS: ~3-24 ms) */
#define P1_BANDWIDTH        1e15 /* P = 1: nothing moves; "infinite" but finite */

/* Link time of one step in which a rank sends `send` and receives `recv` bytes in `msgs`
 * messages. */
static double link_s(const weft_attn_sp_machine_t *m, double send, double recv, int msgs) {
  double bytes = m->duplex ? fmax(send, recv) : send + recv;
  return bytes / m->bandwidth_Bps + msgs * m->latency_s;
}

/* Ring over R members with per-step compute c and per-hop K,V bytes kv; acc > 0 adds the
 * backward's dk,dv accumulators (acc bytes per hop, one step behind, last hop exposed). */
static double ring_s(const weft_attn_sp_machine_t *m, int R, double c, double kv, double acc) {
  double t = 0;
  for (int s = 0; s < R; s++) {
    double send = (s < R - 1 ? kv : 0) + (s >= 2 ? acc : 0);
    int msgs = (s < R - 1 ? 2 : 0) + (s >= 2 && acc > 0 ? 1 : 0);
    t += fmax(c, send > 0 ? link_s(m, send, send, msgs) : 0);
  }
  if (R > 1 && acc > 0) t += link_s(m, acc, acc, 1);
  return t;
}

/* TokenRing: rows of Q rank r sends to its step-s holder, and partial rows it returns. */
static int64_t tr_q_rows(int P, int r, int s, int64_t n, int64_t half) {
  return (r + s) % P > r ? half : n;
}
static int64_t tr_out_rows(int P, int r, int s, int64_t n, int64_t half) {
  return (r - s + P) % P < r ? half : n;
}

static double tokenring_s(const weft_attn_sp_config_t *cfg, int P, int64_t n, double c,
                          const weft_attn_sp_machine_t *m, bool bwd) {
  int64_t half = cfg->causal ? n / 2 : n;
  double B = (double)cfg->batch, H = (double)cfg->heads, d = (double)cfg->head_dim;
  double b = (double)attn_sp_dtype_bytes(cfg->dtype);
  double q_row = bwd ? B * H * (2 * d * b + 8) : B * H * d * b; /* q (, dout, lse, delta) */
  double o_row = bwd ? B * H * d * 4 : B * H * (d + 1) * 4;     /* out, lse (dq) */
  double t = 0, last = 0;
  for (int s = 0; s < P; s++) {
    double worst = c; /* step s: Q of step s+1 out, partials of step s-1 back */
    for (int r = 0; r < P; r++) {
      double send = 0, recv = 0;
      int msgs = 0;
      if (s + 1 < P) { /* to holder r+s+1; from owner r-s-1 */
        send += q_row * (double)tr_q_rows(P, r, s + 1, n, half);
        recv += q_row * (double)tr_q_rows(P, (r - s - 1 + P) % P, s + 1, n, half);
        msgs++;
      }
      if (s >= 2) { /* to owner r-s+1; from holder r+s-1 */
        send += o_row * (double)tr_out_rows(P, r, s - 1, n, half);
        recv += o_row * (double)tr_out_rows(P, (r + s - 1) % P, s - 1, n, half);
        msgs++;
      }
      if (msgs > 0) worst = fmax(worst, link_s(m, send, recv, msgs));
    }
    t += worst;
  }
  for (int r = 0; P > 1 && r < P; r++) { /* the last step's partials go home after it */
    double send = o_row * (double)tr_out_rows(P, r, P - 1, n, half);
    double recv = o_row * (double)tr_out_rows(P, (r + P - 1) % P, P - 1, n, half);
    last = fmax(last, link_s(m, send, recv, 1));
  }
  return t + last;
}

weft_status_t weft_attn_sp_cost_predict(const weft_attn_sp_config_t *cfg, weft_attn_sp_algo_t algo,
                                        int ranks, int ulysses,
                                        const weft_attn_sp_machine_t *machine,
                                        weft_attn_sp_cost_t *cost) {
  if (cfg == NULL || machine == NULL || cost == NULL || ranks < 1 || algo == WEFT_ATTN_SP_AUTO ||
      !(machine->bandwidth_Bps > 0) || !(machine->flops_per_s > 0) || !(machine->latency_s >= 0)) {
    WEFT_ERROR("attn_sp",
               "cost model: invalid arguments (algo %d, ranks %d, bandwidth %g B/s, "
               "latency %g s, %g FLOP/s)",
               (int)algo, ranks, machine ? machine->bandwidth_Bps : 0,
               machine ? machine->latency_s : 0, machine ? machine->flops_per_s : 0);
    return WEFT_ERR_INVALID_ARG;
  }
  int u = algo == WEFT_ATTN_SP_ULYSSES  ? ranks
          : algo == WEFT_ATTN_SP_HYBRID ? (ulysses == 0 ? attn_sp_default_ulysses(ranks) : ulysses)
                                        : 1;
  if (u < 1 || ranks % u != 0) {
    WEFT_ERROR("attn_sp", "cost model: Ulysses degree %d does not divide %d ranks", u, ranks);
    return WEFT_ERR_INVALID_ARG;
  }
  memset(cost, 0, sizeof *cost);
  cost->algo = algo;
  cost->ulysses_degree = u;
  /* Exact bytes, and the all-to-all part of the busiest member (total minus its ring part). */
  weft_attn_sp_layout_t layout;
  WEFT_CHECK(weft_attn_sp_layout_init(&layout, cfg->seq_len, ranks, cfg->causal));
  int64_t n = layout.local, d = cfg->head_dim, B = cfg->batch;
  int64_t b = attn_sp_dtype_bytes(cfg->dtype);
  int R = ranks / u;
  double a2a_fwd = 0, a2a_bwd = 0, kv_hop = 0, acc_hop = 0, max_nq = 0;
  for (int r = 0; r < ranks; r++) {
    uint64_t fwd = 0, bwd = 0;
    WEFT_CHECK(weft_attn_sp_cost_bytes(cfg, algo, ranks, u, r, &fwd, &bwd));
    if (fwd > cost->bytes_fwd_max) cost->bytes_fwd_max = fwd;
    if (bwd > cost->bytes_bwd_max) cost->bytes_bwd_max = bwd;
    if (algo == WEFT_ATTN_SP_TOKENRING) continue;
    attn_sp_heads_t me = attn_sp_heads_of(cfg->heads, cfg->kv_heads, u, r % u);
    double hop = 2.0 * (double)(B * u * n * me.nkv * d); /* K and V elements */
    kv_hop = fmax(kv_hop, hop * (double)b);
    acc_hop = fmax(acc_hop, hop * 4);
    a2a_fwd = fmax(a2a_fwd, (double)fwd - (R - 1) * hop * (double)b);
    a2a_bwd = fmax(a2a_bwd, (double)bwd - (R - 1) * hop * (double)(b + 4));
    max_nq = fmax(max_nq, (double)me.nq);
  }
  double N = (double)cfg->seq_len;
  double pairs = cfg->causal ? N * (N + 1) / 2 : N * N;
  cost->flops_fwd = 4.0 * (double)(B * cfg->heads * d) * pairs;
  cost->flops_bwd = BWD_FLOP_FACTOR * cost->flops_fwd;
  const weft_attn_sp_machine_t *m = machine;
  if (algo == WEFT_ATTN_SP_TOKENRING) {
    double step = 1.0 / ranks / ranks / m->flops_per_s; /* a step: 1/P of a rank's 1/P */
    cost->time_fwd_s = tokenring_s(cfg, ranks, n, cost->flops_fwd * step, m, false);
    cost->time_bwd_s = tokenring_s(cfg, ranks, n, cost->flops_bwd * step, m, true);
    return WEFT_OK;
  }
  /* Ulysses (R = 1), ring (u = 1) and hybrid: all-to-all, then the ring over R members. */
  double share = max_nq / (double)cfg->heads / R / m->flops_per_s;
  double step_fwd = cost->flops_fwd * share / R, step_bwd = cost->flops_bwd * share / R;
  int a2a_msgs = 2 * (u - 1);
  cost->time_fwd_s =
      (u > 1 ? link_s(m, a2a_fwd, a2a_fwd, a2a_msgs) : 0) + ring_s(m, R, step_fwd, kv_hop, 0);
  cost->time_bwd_s =
      (u > 1 ? link_s(m, a2a_bwd, a2a_bwd, a2a_msgs) : 0) + ring_s(m, R, step_bwd, kv_hop, acc_hop);
  return WEFT_OK;
}

/* ---- measurement ---------------------------------------------------------------------- */

/* Best time of MEASURE_REPS ring exchanges of `bytes` (send to r+1, receive from r-1). */
static weft_status_t exchange_s(weft_comm_t *comm, void *send, void *recv, size_t bytes,
                                double *best_p) {
  int P = weft_comm_size(comm), r = weft_comm_rank(comm);
  *best_p = INFINITY;
  WEFT_CHECK(weft_comm_barrier(comm));
  for (int i = 0; i <= MEASURE_REPS; i++) { /* i = 0: warm-up (connection set-up, faults) */
    double t0 = weft_time_now();
    WEFT_CHECK(weft_comm_sendrecv(comm, send, bytes / 4, (r + 1) % P, recv, bytes / 4,
                                  (r - 1 + P) % P, WEFT_DTYPE_F32, WEFT_MEM_DEVICE));
    double t = weft_time_now() - t0;
    if (i > 0 && t < *best_p) *best_p = t;
  }
  return WEFT_OK;
}

/* Link latency and bandwidth between ring neighbours, in the comm's device memory. */
static weft_status_t measure_link(weft_comm_t *comm, double *bandwidth_p, double *latency_p) {
  const weft_device_t *dev = weft_comm_device(comm);
  void *send = NULL, *recv = NULL;
  double small = 0, large = 0;
  weft_status_t st;
  WEFT_CHECK_GOTO(weft_device_alloc(dev, MEASURE_LARGE, &send), st, done);
  WEFT_CHECK_GOTO(weft_device_alloc(dev, MEASURE_LARGE, &recv), st, done);
  WEFT_CHECK_GOTO(weft_device_memset(dev, send, 0, MEASURE_LARGE), st, done);
  WEFT_CHECK_GOTO(exchange_s(comm, send, recv, MEASURE_SMALL, &small), st, done);
  WEFT_CHECK_GOTO(exchange_s(comm, send, recv, MEASURE_LARGE, &large), st, done);
  *latency_p = small;
  /* The extra bytes over the extra time; a clock too coarse to see the difference falls back
   * to the large message alone. */
  *bandwidth_p = large > small ? (MEASURE_LARGE - MEASURE_SMALL) / (large - small)
                               : MEASURE_LARGE / fmax(large, 1e-9);
done:
  weft_device_free(dev, recv);
  weft_device_free(dev, send);
  return st;
}

/* Useful FLOP/s of one non-causal [T x T] block pair forward with the cfg's head dim and dtype
 * (at most MEASURE_HEADS_MAX query heads, the cfg's GQA ratio where it fits). */
static weft_status_t measure_flops(weft_kernel_ctx_t *ctx, const weft_attn_sp_config_t *cfg,
                                   double *flops_p) {
  const weft_device_t *dev = weft_kernel_ctx_device(ctx);
  int64_t T = dev->kind == WEFT_DEVICE_CUDA ? MEASURE_TOKENS_CUDA : MEASURE_TOKENS_CPU;
  int64_t h = cfg->heads < MEASURE_HEADS_MAX ? cfg->heads : MEASURE_HEADS_MAX;
  int64_t group = cfg->heads / cfg->kv_heads, kv = h % group == 0 ? h / group : 1;
  int64_t d = cfg->head_dim, esize = attn_sp_dtype_bytes(cfg->dtype);
  weft_attn_shape_t shape = {.batch = 1,
                             .heads = h,
                             .kv_heads = kv,
                             .head_dim = d,
                             .q_len = T,
                             .kv_len = T,
                             .scale = 1.0f / sqrtf((float)d),
                             .causal = false,
                             .dtype = cfg->dtype};
  size_t nq = (size_t)(T * h * d), nk = (size_t)(T * kv * d);
  /* Device buffers: q, k, v (dtype), out, lse (f32), positions; host staging. */
  void *q = NULL, *k = NULL, *v = NULL, *out = NULL, *lse = NULL, *pos = NULL;
  unsigned char *host = malloc(nq * 4 + (size_t)T * sizeof(int64_t));
  weft_status_t st = WEFT_OK;
  if (host == NULL) {
    WEFT_ERROR("attn_sp", "machine measure: cannot allocate %zu host bytes", nq * 4);
    st = WEFT_ERR_NO_MEMORY;
    goto done;
  }
  WEFT_CHECK_GOTO(weft_device_alloc(dev, nq * (size_t)esize, &q), st, done);
  WEFT_CHECK_GOTO(weft_device_alloc(dev, nk * (size_t)esize, &k), st, done);
  WEFT_CHECK_GOTO(weft_device_alloc(dev, nk * (size_t)esize, &v), st, done);
  WEFT_CHECK_GOTO(weft_device_alloc(dev, nq * 4, &out), st, done);
  WEFT_CHECK_GOTO(weft_device_alloc(dev, (size_t)(h * T) * 4, &lse), st, done);
  WEFT_CHECK_GOTO(weft_device_alloc(dev, (size_t)T * sizeof(int64_t), &pos), st, done);
  /* Inputs in [-1, 1) from a fixed linear congruential sequence: the rate does not depend on
   * the values, only on them being finite and not all equal. */
  uint32_t x = 12345;
  for (size_t i = 0; i < nq; i++) {
    x = x * 1664525u + 1013904223u;
    float f = (float)(x >> 8) / 8388608.0f - 1.0f;
    if (esize == 4) {
      memcpy(host + 4 * i, &f, 4);
    } else {
      weft_bf16_t hb = weft_f32_to_bf16(f);
      memcpy(host + 2 * i, &hb, 2);
    }
  }
  WEFT_CHECK_GOTO(weft_device_copy(dev, q, host, nq * esize, WEFT_COPY_HOST_TO_DEVICE), st, done);
  WEFT_CHECK_GOTO(weft_device_copy(dev, k, host, nk * esize, WEFT_COPY_HOST_TO_DEVICE), st, done);
  WEFT_CHECK_GOTO(weft_device_copy(dev, v, host, nk * esize, WEFT_COPY_HOST_TO_DEVICE), st, done);
  int64_t *host_pos = (int64_t *)(host + nq * 4);
  for (int64_t i = 0; i < T; i++) host_pos[i] = i;
  WEFT_CHECK_GOTO(
      weft_device_copy(dev, pos, host_pos, (size_t)T * sizeof(int64_t), WEFT_COPY_HOST_TO_DEVICE),
      st, done);
  /* One untimed call (workspace growth, page faults), then calls until the span is over. */
  WEFT_CHECK_GOTO(weft_attn_block_forward(ctx, &shape, q, k, v, pos, pos, out, lse), st, done);
  WEFT_CHECK_GOTO(weft_kernel_ctx_synchronize(ctx), st, done);
  double t0 = weft_time_now(), elapsed = 0;
  long calls = 0;
  while (calls < 2 || elapsed < MEASURE_SPAN_S) {
    WEFT_CHECK_GOTO(weft_attn_block_forward(ctx, &shape, q, k, v, pos, pos, out, lse), st, done);
    WEFT_CHECK_GOTO(weft_kernel_ctx_synchronize(ctx), st, done);
    calls++;
    elapsed = weft_time_now() - t0;
  }
  *flops_p = 4.0 * (double)(h * d) * (double)T * (double)T * (double)calls / elapsed;
done:
  weft_device_free(dev, pos);
  weft_device_free(dev, lse);
  weft_device_free(dev, out);
  weft_device_free(dev, v);
  weft_device_free(dev, k);
  weft_device_free(dev, q);
  free(host);
  return st;
}

weft_status_t weft_attn_sp_machine_measure(weft_comm_t *comm, weft_kernel_ctx_t *ctx,
                                           const weft_attn_sp_config_t *cfg,
                                           weft_attn_sp_machine_t *machine) {
  if (comm == NULL || ctx == NULL || cfg == NULL || machine == NULL || cfg->heads < 1 ||
      cfg->kv_heads < 1 || cfg->heads % cfg->kv_heads != 0 || cfg->head_dim < 1) {
    WEFT_ERROR("attn_sp", "machine measure: invalid arguments (comm %p, ctx %p, cfg %p)",
               (void *)comm, (void *)ctx, (const void *)cfg);
    return WEFT_ERR_INVALID_ARG;
  }
  int P = weft_comm_size(comm);
  /* [bandwidth, latency, flops] of this rank; P = 1: nothing crosses a link. */
  double mine[3] = {P1_BANDWIDTH, 0, 0};
  if (P > 1) WEFT_CHECK(measure_link(comm, &mine[0], &mine[1]));
  WEFT_CHECK(weft_comm_barrier(comm)); /* every rank computes at once, as in a real call */
  WEFT_CHECK(measure_flops(ctx, cfg, &mine[2]));
  /* The slowest rank's numbers: doubles travel as raw 64-bit words (weft_comm has no f64). */
  int64_t *all = malloc((size_t)P * sizeof mine);
  if (all == NULL) return WEFT_ERR_NO_MEMORY;
  int64_t words[3];
  memcpy(words, mine, sizeof mine);
  weft_status_t st = weft_comm_allgather(comm, words, all, 3, WEFT_DTYPE_I64, WEFT_MEM_HOST);
  for (int r = 0; st == WEFT_OK && r < P; r++) {
    double theirs[3];
    memcpy(theirs, all + 3 * r, sizeof theirs);
    mine[0] = fmin(mine[0], theirs[0]);
    mine[1] = fmax(mine[1], theirs[1]);
    mine[2] = fmin(mine[2], theirs[2]);
  }
  free(all);
  if (st != WEFT_OK) return st;
  machine->bandwidth_Bps = mine[0];
  machine->latency_s = mine[1];
  machine->flops_per_s = mine[2];
  machine->duplex = true;
  WEFT_INFO("attn_sp", "machine: %.3g GB/s, %.3g us per message, %.3g GFLOP/s per rank (P = %d)",
            mine[0] * 1e-9, mine[1] * 1e6, mine[2] * 1e-9, P);
  return WEFT_OK;
}
