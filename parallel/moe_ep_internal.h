/* Private to parallel/moe_ep*.c: the plan and the host-side routing shared by its files.
 * moe_ep_route.c turns router choices and the all-gathered counts into index lists (pure
 * host arithmetic, no communication); moe_ep.c owns the plan, the exchanges and the kernels. */
#ifndef WEFT_MOE_EP_INTERNAL_H
#define WEFT_MOE_EP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "weft/moe_ep.h"

/* One kept slot as it travels in the routing metadata (three int32 on the wire). */
enum { MOE_META_ROW = 0, MOE_META_EXPERT = 1, MOE_META_WEIGHT = 2, MOE_META_INTS = 3 };

/* Host routing of one forward; every array grows to the largest call and is reused.
 * T tokens, k slots, P ranks, E experts, E_l local experts; S rows sent, R received,
 * Q_s kept slots sent, Q_r received, M = Q_r expert rows. */
typedef struct moe_route {
  int64_t tokens, capacity, dropped;
  int fan_tok;          /* min(k, P): rows a token can get back */
  int fan_comb;         /* min(k, E_l): slots a received row can carry */
  int32_t *ids;         /* [T, k] expert ids (host copy) */
  float *weights;       /* [T, k] routing weights (host copy) */
  unsigned char *keep;  /* [T, k] 1 = slot kept by the capacity rule */
  int64_t *counts_mine; /* [E] this rank's slots per expert, before dropping */
  int64_t *counts_all;  /* [P, E] every rank's, from the all-gather */
  int64_t *kept_all;    /* [P, E] kept slots per (rank, expert) */
  int64_t *allow;       /* [E] scratch: slots this rank may still keep per expert */
  int64_t *cursor;      /* [E_l] scratch: next expert row per local expert */

  /* Send side (this rank's tokens), destination-major. */
  size_t *rows_to;    /* [P] rows sent to each rank */
  size_t *slots_to;   /* [P] kept slots sent to each rank */
  int32_t *send_tok;  /* [S] token of each sent row */
  int32_t *send_meta; /* [Q_s, 3] (row in the message, local expert, weight bits) */
  int32_t *send_slot; /* [Q_s] t * k + j of each sent slot */
  int32_t *tok_rows;  /* [T, fan_tok] sent-row index per token, by rank, -1 padded */
  int64_t rows_sent, slots_sent;

  /* Receive side (this rank's experts). */
  size_t *rows_from;    /* [P] rows received from each rank */
  size_t *slots_from;   /* [P] kept slots received from each rank */
  int32_t *recv_meta;   /* [Q_r, 3] */
  int64_t *expert_off;  /* [E_l + 1] expert-major offsets of the M expert rows */
  int64_t *expert_rows; /* [E_l] */
  int32_t *perm_rows;   /* [M] received row of each expert row */
  float *perm_w;        /* [M] its routing weight */
  int32_t *slot_perm;   /* [Q_r] expert row of each received slot (message order) */
  int32_t *comb_idx;    /* [R, fan_comb] expert rows of each received row, -1 padded */
  float *comb_w;        /* [R, fan_comb] their weights */
  int64_t rows_recv, slots_recv;
  int64_t min_rows_out; /* (own token, distinct remote rank owning a kept expert) pairs */
  int64_t min_rows_in;  /* (remote token, this rank) pairs: rows this rank combines back */

  size_t cap_tokens, cap_send_rows, cap_send_slots, cap_recv_rows, cap_recv_slots;
} moe_route_t;

/* Dimensions the routing needs. */
typedef struct moe_dims {
  int64_t experts, local_experts;
  int k, ranks, rank;
} moe_dims_t;

void moe_route_cleanup(moe_route_t *route);

/* Makes room for T tokens (ids, weights, keep, tok_rows) and the per-rank/per-expert arrays.
 * Counts every chosen expert of this rank's tokens into counts_mine. */
weft_status_t moe_route_begin(moe_route_t *route, const moe_dims_t *dims, int64_t tokens);
void moe_route_count(moe_route_t *route, const moe_dims_t *dims);

/* After the all-gather of counts: the capacity (0 = dropless; C from cf and the group's
 * tokens), kept_all, the keep flags of this rank's slots, the send lists and the slots this
 * rank will receive. Returns WEFT_ERR_INVALID_ARG if an id is out of range. */
weft_status_t moe_route_plan_send(moe_route_t *route, const moe_dims_t *dims,
                                  double capacity_factor);

/* After the metadata exchange: rows per source, the expert-major permutation and the
 * combine lists. Checks the metadata against kept_all (WEFT_ERR_CORRUPT on a mismatch, which
 * means the ranks disagree about the routing). */
weft_status_t moe_route_plan_recv(moe_route_t *route, const moe_dims_t *dims);

struct weft_moe_plan {
  weft_comm_t *ep;
  weft_comm_t *replicas;
  weft_kernel_ctx_t *ctx;
  const weft_device_t *dev;
  weft_moe_config_t cfg;
  moe_dims_t dims;
  bool on_device; /* CUDA: index lists and routing are copied between host and device */
  bool have_forward;

  /* Load-balancing step state. */
  bool step_open;
  int64_t step_global_tokens;
  int64_t *counts_micro; /* [E] */
  int64_t *counts_step;  /* [E] */
  float *psum_host;      /* [E] this rank's sum over tokens of p_t,i */
  float *coef_host;      /* [E] per-expert dp coefficient of the LBL */

  size_t *scount, *sdispl, *rcount, *rdispl; /* [P] each: the current all-to-all-v layout */
  moe_route_t route;
  weft_moe_stats_t stats;

  /* Device buffers (host memory on the CPU device), grown on demand; see moe_ep.c. */
  struct moe_dev_buf {
    void *ptr;
    size_t cap;
  } logits, probs, lse, ids, weights, ones, psum, scalar, coef, dweights, dlogits, send_rows,
      back_rows, recv_rows, out_rows, x_perm, a, b, act, y_perm, dy_perm, dx_perm, work, dw_perm,
      send_tok, tok_rows, perm_rows, perm_w, comb_idx, comb_w;
  /* The forward's index lists as the kernels see them (the host arrays on the CPU device, the
   * device copies on CUDA), kept for the backward. */
  struct moe_index_views {
    const void *send_tok, *tok_rows, *perm_rows, *perm_w, *comb_idx, *comb_w;
  } view;
  float *dw_host;       /* [M] weight gradients per expert row (host) */
  float *dw_slots_recv; /* [Q_r] in message order, to send back */
  float *dw_slots_sent; /* [Q_s] received back */
  float *dweights_host; /* [T, k] */
  size_t cap_dw_host, cap_dw_recv, cap_dw_sent, cap_dweights;
};

#endif /* WEFT_MOE_EP_INTERNAL_H */
