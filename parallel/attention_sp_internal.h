/* Private to parallel/attention_sp*.c: the plan and what its source files share.
 * attention_sp.c holds the life cycle, the Ulysses stage and the ring core (Ulysses, ring and
 * hybrid are one pipeline: Ulysses stage over u ranks, ring over P/u); attention_sp_tokenring.c
 * holds TokenRing. */
#ifndef WEFT_ATTENTION_SP_INTERNAL_H
#define WEFT_ATTENTION_SP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attention_sp_split.h"
#include "weft/attention.h"
#include "weft/attention_sp.h"

/* Message tags, one per stream of messages between a pair of ranks. */
enum {
  ATTN_SP_TAG_K = 4201,
  ATTN_SP_TAG_V,
  ATTN_SP_TAG_ACC,     /* ring backward: the travelling [dk | dv] accumulator */
  ATTN_SP_TAG_Q,       /* tokenring: the Q-side rows (forward q; backward q, dout, lse, delta) */
  ATTN_SP_TAG_PARTIAL, /* tokenring: partial (out, lse) forward, partial dq backward */
};

#define ATTN_SP_MAX_BUFFERS 32

struct weft_attn_sp_plan {
  weft_comm_t *sp;        /* borrowed */
  weft_comm_t *uly_comm;  /* Ulysses group: sp itself (u == P), owned (1 < u < P) or NULL */
  weft_comm_t *ring_comm; /* ring: sp itself (u == 1), owned (1 < u < P) or NULL (u == P) */
  weft_kernel_ctx_t *ctx;
  const weft_device_t *dev;
  weft_stream_t *stream;
  weft_copy_kind_t d2d; /* device-to-device copy kind of this device */

  weft_attn_sp_config_t cfg; /* algo resolved, scale filled in */
  weft_attn_sp_layout_t layout;
  int rank, size;
  int u, ring_size, member, ring_index; /* Ulysses degree, ring degree, indices */
  int64_t n;                            /* slots per rank */
  int64_t L;                            /* tokens per ring rank: u * n */
  size_t esz;                           /* bytes of the dtype */
  attn_sp_heads_t *split;               /* [u] heads of each Ulysses member */
  attn_sp_heads_t heads;                /* this rank's: split[member] */
  bool kv_replicated;                   /* some kv head is held by two members */

  int64_t *h_pos;      /* [n] this rank's slot positions (host) */
  int64_t *h_ring_pos; /* [ring_size, L] tokens of every ring rank (host) */
  int64_t *d_ring_pos; /* the same in device memory (aliases h_ring_pos on the CPU) */

  /* Ulysses stage (u > 1), device memory. */
  void *u_send, *u_recv;       /* packed all-to-all buffers */
  size_t *cnt_send, *dsp_send; /* [u] per-peer counts/displacements (wire units) */
  size_t *cnt_recv, *dsp_recv;
  void *hq, *hk, *hv, *hdout;  /* head shards [B,L,nq,d] / [B,L,nkv,d] (dtype) */
  float *hout, *hlse, *hdelta; /* [B,L,nq,d], [B,nq,L], [B,nq,L] */
  float *hdq, *hdk, *hdv;      /* [B,L,nq,d], [B,L,nkv,d] */
  float *s_delta;              /* [B,H,n] delta in the sequence layout */
  float *kv_tmp;               /* [B,n,Hkv,d] replicated kv gradients, one member's */

  /* Ring core (ring_size > 1), device memory. */
  void *kv_buf[2];   /* each [k | v], 2 x [B,L,nkv,d] (dtype) */
  float *acc_buf[2]; /* each [dk | dv], 2 x [B,L,nkv,d] f32 */
  float *blk_out;    /* [B,L,nq,d] one block's partial output */
  float *blk_lse;    /* [B,nq,L] */

  /* TokenRing (attention_sp_tokenring.c), device memory. A "Q side" message carries rows of
   * the owner's queries: forward q; backward [q | dout | lse | delta]. */
  void *tr_qside_full;    /* backward: all n rows packed (forward sends the caller's q) */
  void *tr_qside_half;    /* causal: the second half's rows packed */
  void *tr_qrecv[2];      /* incoming Q sides, double-buffered */
  float *tr_part_send[2]; /* partial [out | lse] (forward) or dq (backward) going back */
  float *tr_part_recv[2]; /* partials of this rank's rows coming back */
  float *tr_full_out;     /* [B,n,H,d] a half-row partial widened for the merge */
  float *tr_full_lse;     /* [B,H,n] */

  void *buffers[ATTN_SP_MAX_BUFFERS]; /* every device allocation, for destroy */
  int nbuffers;

  weft_attn_sp_stats_t stats;
};

/* Allocates `bytes` of device memory owned by the plan (freed by destroy); NULL when 0. */
weft_status_t attn_sp_alloc(weft_attn_sp_plan_t *plan, size_t bytes, void **ptr_p);

/* Bytes this rank has sent on the plan's communicators so far (for the stats). */
uint64_t attn_sp_bytes_sent(const weft_attn_sp_plan_t *plan);

/* The kernel shape of nq query rows against nk keys with `heads` / `kv_heads`. */
weft_attn_shape_t attn_sp_shape(const weft_attn_sp_plan_t *plan, int64_t heads, int64_t kv_heads,
                                int64_t nq, int64_t nk);

/* Strided copy ordered on the plan's stream (weft_device_copy_2d_async). */
weft_status_t attn_sp_copy2d(weft_attn_sp_plan_t *plan, void *dst, size_t dst_pitch,
                             const void *src, size_t src_pitch, size_t width, size_t rows);
/* x[0, count) = 0 on the plan's stream. */
weft_status_t attn_sp_zero(weft_attn_sp_plan_t *plan, float *x, int64_t count);

/* A message mixing the dtype's tensors with f32 ones is counted in wire units: 2 bytes when
 * the dtype is bf16 (an f32 element is 2 units), 4 otherwise; wire dtype to match. */
size_t attn_sp_wire_unit(const weft_attn_sp_plan_t *plan);
weft_dtype_t attn_sp_wire_dtype(const weft_attn_sp_plan_t *plan);

/* TokenRing (attention_sp_tokenring.c). */
weft_status_t attn_sp_tokenring_alloc(weft_attn_sp_plan_t *plan);
weft_status_t attn_sp_tokenring_forward(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                        const void *v, float *out, float *lse);
weft_status_t attn_sp_tokenring_backward(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                         const void *v, const float *lse, const float *delta,
                                         const void *dout, float *dq, float *dk, float *dv);

#endif /* WEFT_ATTENTION_SP_INTERNAL_H */
