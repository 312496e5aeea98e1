/* Private to parallel/linear_sp*.c: the plan and the helpers its source files share.
 * linear_sp.c holds the plan's life cycle and the one-after-another passes of every
 * algorithm; linear_sp_overlap.c the ZeCO passes whose All-Scan runs behind the compute;
 * linear_sp_zigzag.c the passes of zigzag plans (two pieces per rank). */
#ifndef WEFT_LINEAR_SP_INTERNAL_H
#define WEFT_LINEAR_SP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "weft/linear_sp.h"

/* Tag of the ring algorithm's messages; All-Scan and the collectives use their own. */
#define LINEAR_SP_RING_TAG 4101

/* A run of (batch, head) pairs whose states are consecutive in the [B,H,dk,dv] buffer:
 * `batch` whole batch elements from b0 (heads == H, h0 == 0), or `heads` heads from h0 of
 * the one batch element b0 (batch == 1). The overlapped passes scan unit by unit. */
typedef struct linear_sp_unit {
  int64_t b0, batch, h0, heads;
  size_t state_off, gamma_off; /* elements into the state and decay buffers */
  size_t state_count;          /* batch * heads * dk * dv */
} linear_sp_unit_t;

struct weft_linear_sp_plan {
  weft_comm_t *comm;
  weft_kernel_ctx_t *ctx;
  const weft_device_t *dev;
  weft_gla_shape_t shape;  /* as created: [B, n] per rank */
  weft_gla_shape_t kshape; /* what the kernels run on: shape, or [2B, n/2] for zigzag */
  bool zigzag;             /* two pieces per rank (weft_linear_sp_plan_create_zigzag) */
  weft_linear_sp_algo_t algo;
  size_t blocks;
  int rank, size;
  size_t state_count; /* B*H*dk*dv (zigzag: 2*B*H*dk*dv, both pieces) */
  size_t gamma_count; /* B*H*dk (zigzag: 2*B*H*dk) */
  bool staged;        /* CUDA: states go through pinned host buffers */
  bool overlap;       /* zeco: scan behind the compute (weft_linear_sp_plan_set_overlap) */
  bool can_overlap;   /* several units and ranks, and MPI lets a progress thread communicate */
  int units;
  linear_sp_unit_t *unit; /* [units] */
  weft_linear_sp_stats_t stats;

  /* Device memory (host memory on the CPU device). */
  float *d_state;     /* [B,H,dk,dv] S_local (forward) or dS_local (backward) */
  float *d_log_gamma; /* [B,H,dk] */
  float *d_ds_out;    /* [B,H,dk,dv] backward: gradient of the state leaving this rank */
  float *d_ones;      /* [n] ones: log_gamma = ones^T g, a batched GEMM */

  /* Host views. Staged or zigzag: pinned buffers; CPU contiguous: h_local and h_log_gamma
   * alias d_state and d_log_gamma, and h_result is NULL (the scan writes the caller's buffer
   * directly). Zigzag plans hold them piece-major, [2,B,...] (linear_sp_zigzag.c). */
  float *h_local;     /* [B,H,dk,dv] */
  float *h_log_gamma; /* [B,H,dk] */
  float *h_result;    /* [B,H,dk,dv] staged or zigzag only */
  float *h_carry;     /* zigzag: [B,H,dk,dv] what rank P-1 hands from one piece to the other */
  float *h_gamma;     /* [B,H,dk] exp(log_gamma) of this rank */
  float *h_pack;      /* lasp2: [state_count + gamma_count] this rank's (x_p, log_gamma) */
  float *h_all;       /* lasp2: [P, state_count + gamma_count] every rank's */
};

/* The row decays of a run of states, for the All-Scan combine: element e of the run decays
 * by gamma[e / dv]. */
typedef struct linear_sp_rows {
  const float *gamma;
  size_t dv;
} linear_sp_rows_t;

/* dst[i] = gamma[(offset + i) / dv] * in[i] + local[i], i in [0, len); dst may alias local. */
void linear_sp_combine_rows(const linear_sp_rows_t *rows, size_t offset, size_t len,
                            const float *in, const float *local, float *dst);

/* weft_allscan_combine_fn over linear_sp_combine_rows; user is a linear_sp_rows_t. */
weft_status_t linear_sp_allscan_combine(void *user, size_t offset, size_t len, const void *incoming,
                                        const void *local, void *result);

/* The hop-by-hop exclusive scan of `count` host elements (RING): receive from the
 * predecessor, combine, send on. Overwrites local on middle ranks; on the first rank of the
 * scan result may alias local (its zero result is written after the send). */
weft_status_t linear_sp_ring_scan(weft_linear_sp_plan_t *plan, bool forward, size_t count,
                                  const linear_sp_rows_t *rows, float *local, float *result);

/* Device <-> host copies of plan buffers; no-ops where the two alias (the CPU device). */
weft_status_t linear_sp_stage_down(weft_linear_sp_plan_t *plan, float *host, const float *dev,
                                   size_t count);
weft_status_t linear_sp_stage_up(weft_linear_sp_plan_t *plan, float *dev, const float *host,
                                 size_t count);

/* After a local kernel filled [off, off + count) of d_state and [goff, goff + gcount) of
 * d_log_gamma: waits for the kernel, brings both slices to the host, exps the decay. */
weft_status_t linear_sp_stage_contribution(weft_linear_sp_plan_t *plan, size_t off, size_t count,
                                           size_t goff, size_t gcount);

/* d_log_gamma = the sum of g over the tokens of each kernel batch entry (kshape: for zigzag
 * each piece separately), one batched GEMM. */
weft_status_t linear_sp_recompute_log_gamma(weft_linear_sp_plan_t *plan, const float *g);

/* true when a zeco pass should use the overlapped path: asked for (plan->overlap) and
 * possible (plan->can_overlap). */
bool linear_sp_use_overlap(const weft_linear_sp_plan_t *plan);

/* linear_sp_overlap.c: the ZeCO passes with the All-Scan behind the compute; arguments as
 * weft_linear_sp_forward / _backward, already checked. */
weft_status_t linear_sp_forward_overlapped(weft_linear_sp_plan_t *plan, const float *q,
                                           const float *k, const float *v, const float *g,
                                           float *out, float *s_in, float *final_state);
weft_status_t linear_sp_backward_overlapped(weft_linear_sp_plan_t *plan, const float *q,
                                            const float *k, const float *v, const float *g,
                                            const float *dout, const float *s_in, float *dq,
                                            float *dk, float *dv, float *dg);

/* linear_sp_zigzag.c: the passes of a zigzag plan; arguments as weft_linear_sp_forward /
 * _backward, already checked. */
weft_status_t linear_sp_zigzag_forward(weft_linear_sp_plan_t *plan, const float *q, const float *k,
                                       const float *v, const float *g, float *out, float *s_in,
                                       float *final_state);
weft_status_t linear_sp_zigzag_backward(weft_linear_sp_plan_t *plan, const float *q, const float *k,
                                        const float *v, const float *g, const float *dout,
                                        const float *s_in, float *dq, float *dk, float *dv,
                                        float *dg);

#endif /* WEFT_LINEAR_SP_INTERNAL_H */
