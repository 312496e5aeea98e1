/* TokenRing (attention_sp.h): K,V stay put; queries visit them and the partial results go
 * straight back.
 *
 * Step s = 1 .. P-1 of rank r: r sends the rows of its queries that have work to rank
 * r + s, receives rank (r - s)'s, attends them to its own K,V, and sends the partial result
 * back to rank r - s while rank r + s's partial of r's rows comes in. Queries and partials
 * cross in opposite directions, so both directions of every link carry data at once. The next
 * step's queries are posted before the current step computes, and the partial of step s is
 * merged (forward) or added (backward) while step s + 1 computes.
 *
 * Causal, zigzag layout (rank r holds chunks r and 2P-1-r): rank j > r needs only the second
 * half of r's queries (chunk r lies before all of j's keys), while rank j < r needs all of
 * them against its first chunk only (the kernel skips the masked tiles). So a query message
 * to a higher rank, and a partial from a higher rank, carry n/2 rows.
 *
 * Backward: the owner's [q | dout | lse | delta] rows travel the same way; the holder adds
 * the block's contribution into its own dk, dv (which never move) and returns the partial dq
 * of those rows. */
#include <math.h>
#include <stdlib.h>

#include "attention_sp_internal.h"
#include "weft/check.h"
#include "weft/elementwise.h"
#include "weft/log.h"

/* Rows of rank `owner`'s queries that rank `holder` works on: [first, n). */
static int64_t first_row(const weft_attn_sp_plan_t *plan, int owner, int holder) {
  return plan->cfg.causal && holder > owner ? plan->n / 2 : 0;
}

/* Bytes of a Q side of `rows` rows: forward q; backward q, dout (dtype) and lse, delta (f32). */
static size_t qside_bytes(const weft_attn_sp_plan_t *plan, int64_t rows, bool backward) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  size_t q = (size_t)(c->batch * rows * c->heads * c->head_dim) * plan->esz;
  size_t r = (size_t)(c->batch * c->heads * rows) * sizeof(float);
  return backward ? 2 * q + 2 * r : q;
}

/* Elements of a partial of `rows` rows: forward [out | lse], backward dq (f32). */
static size_t partial_count(const weft_attn_sp_plan_t *plan, int64_t rows, bool backward) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  size_t o = (size_t)(c->batch * rows * c->heads * c->head_dim);
  return backward ? o : o + (size_t)(c->batch * c->heads * rows);
}

weft_status_t attn_sp_tokenring_alloc(weft_attn_sp_plan_t *plan) {
  if (plan->size == 1) return WEFT_OK;
  const weft_attn_sp_config_t *c = &plan->cfg;
  int64_t n = plan->n;
  size_t qside = qside_bytes(plan, n, true);
  size_t part = partial_count(plan, n, false) * sizeof(float);
  WEFT_CHECK(attn_sp_alloc(plan, qside, &plan->tr_qside_full));
  if (c->causal)
    WEFT_CHECK(attn_sp_alloc(plan, qside_bytes(plan, n / 2, true), &plan->tr_qside_half));
  for (int i = 0; i < 2; i++) {
    WEFT_CHECK(attn_sp_alloc(plan, qside, &plan->tr_qrecv[i]));
    WEFT_CHECK(attn_sp_alloc(plan, part, (void **)&plan->tr_part_send[i]));
    WEFT_CHECK(attn_sp_alloc(plan, part, (void **)&plan->tr_part_recv[i]));
  }
  if (c->causal) {
    WEFT_CHECK(attn_sp_alloc(plan, (size_t)(c->batch * n * c->heads * c->head_dim) * sizeof(float),
                             (void **)&plan->tr_full_out));
    WEFT_CHECK(attn_sp_alloc(plan, (size_t)(c->batch * c->heads * n) * sizeof(float),
                             (void **)&plan->tr_full_lse));
  }
  return WEFT_OK;
}

/* Rows [first, n) of a [B,n,H,d] tensor (element size es) <-> a [B,n-first,H,d] block. */
static weft_status_t token_rows(weft_attn_sp_plan_t *plan, void *full, void *block, int64_t first,
                                size_t es, bool to_block) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  size_t tok = (size_t)(c->heads * c->head_dim) * es;
  size_t w = (size_t)(plan->n - first) * tok, pitch = (size_t)plan->n * tok;
  char *f = (char *)full + (size_t)first * tok;
  return to_block ? attn_sp_copy2d(plan, block, w, f, pitch, w, (size_t)c->batch)
                  : attn_sp_copy2d(plan, f, pitch, block, w, w, (size_t)c->batch);
}

/* Rows [first, n) of a [B,H,n] row tensor <-> a [B,H,n-first] block. */
static weft_status_t head_rows(weft_attn_sp_plan_t *plan, float *full, float *block, int64_t first,
                               bool to_block) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  size_t w = (size_t)(plan->n - first) * sizeof(float), pitch = (size_t)plan->n * sizeof(float);
  size_t rows = (size_t)(c->batch * c->heads);
  return to_block ? attn_sp_copy2d(plan, block, w, full + first, pitch, w, rows)
                  : attn_sp_copy2d(plan, full + first, pitch, block, w, w, rows);
}

/* Packs this rank's Q side from row `first`: backward [q | dout | lse | delta]. */
static weft_status_t pack_qside(weft_attn_sp_plan_t *plan, void *dst, int64_t first, const void *q,
                                const void *dout, const float *lse, const float *delta) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  int64_t rows = plan->n - first;
  size_t qb = (size_t)(c->batch * rows * c->heads * c->head_dim) * plan->esz;
  size_t rb = (size_t)(c->batch * c->heads * rows) * sizeof(float);
  char *p = dst;
  WEFT_CHECK(token_rows(plan, (void *)q, p, first, plan->esz, true));
  if (!dout) return WEFT_OK;
  WEFT_CHECK(token_rows(plan, (void *)dout, p + qb, first, plan->esz, true));
  WEFT_CHECK(head_rows(plan, (float *)lse, (float *)(p + 2 * qb), first, true));
  return head_rows(plan, (float *)delta, (float *)(p + 2 * qb + rb), first, true);
}

/* The Q-side transfers of step s: this rank's rows to r + s, rank r - s's rows in. */
static weft_status_t post_qside(weft_attn_sp_plan_t *plan, int s, const void *full,
                                const void *half, bool backward, weft_comm_req_t req[2]) {
  int P = plan->size, r = plan->rank, dest = (r + s) % P, src = (r + P - s) % P;
  int64_t send_first = first_row(plan, r, dest), recv_first = first_row(plan, src, r);
  size_t unit = attn_sp_wire_unit(plan);
  size_t send = qside_bytes(plan, plan->n - send_first, backward) / unit;
  size_t recv = qside_bytes(plan, plan->n - recv_first, backward) / unit;
  WEFT_CHECK(weft_comm_irecv(plan->sp, plan->tr_qrecv[s % 2], recv, attn_sp_wire_dtype(plan), src,
                             ATTN_SP_TAG_Q, WEFT_MEM_DEVICE, &req[0]));
  return weft_comm_isend(plan->sp, send_first ? half : full, send, attn_sp_wire_dtype(plan), dest,
                         ATTN_SP_TAG_Q, WEFT_MEM_DEVICE, &req[1]);
}

/* Merges rank r + s's partial [out | lse] of this rank's rows [first, n) into out, lse. */
static weft_status_t merge_partial(weft_attn_sp_plan_t *plan, const float *part, int64_t first,
                                   float *out, float *lse) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  weft_attn_shape_t shape = attn_sp_shape(plan, c->heads, c->kv_heads, plan->n, 0);
  int64_t rows = plan->n - first;
  const float *part_lse = part + c->batch * rows * c->heads * c->head_dim;
  if (first == 0) return weft_attn_merge(plan->ctx, &shape, out, lse, part, part_lse);
  /* Widen to all n rows: lse -inf on the rows without work, which the merge skips (their
   * out rows are never read). */
  WEFT_CHECK(weft_elementwise_fill(plan->ctx, WEFT_DTYPE_F32, c->batch * c->heads * plan->n,
                                   -INFINITY, plan->tr_full_lse));
  WEFT_CHECK(token_rows(plan, plan->tr_full_out, (void *)part, first, sizeof(float), false));
  WEFT_CHECK(head_rows(plan, plan->tr_full_lse, (float *)part_lse, first, false));
  return weft_attn_merge(plan->ctx, &shape, out, lse, plan->tr_full_out, plan->tr_full_lse);
}

/* Adds a partial dq of this rank's rows [first, n) into dq: per batch entry the rows are
 * contiguous. */
static weft_status_t add_partial_dq(weft_attn_sp_plan_t *plan, const float *part, int64_t first,
                                    float *dq) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  int64_t tok = c->heads * c->head_dim, rows = plan->n - first;
  for (int64_t b = 0; b < c->batch; b++) {
    float *dst = dq + (b * plan->n + first) * tok;
    WEFT_CHECK(weft_elementwise_add(plan->ctx, WEFT_DTYPE_F32, rows * tok, dst,
                                    part + b * rows * tok, dst));
  }
  return WEFT_OK;
}

/* What differs between the two passes that share run_steps' schedule. */
typedef struct tr_pass {
  bool backward;
  const void *k, *v;
  float *out, *lse;    /* forward: the owner's running result */
  float *dq, *dk, *dv; /* backward */
} tr_pass_t;

/* Runs the holder's block for step s on the received Q side of rank `src`, writing the partial
 * into `part`. */
static weft_status_t holder_work(weft_attn_sp_plan_t *plan, const tr_pass_t *pass, int src,
                                 const void *qside, float *part) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  int64_t first = first_row(plan, src, plan->rank), rows = plan->n - first;
  weft_attn_shape_t shape = attn_sp_shape(plan, c->heads, c->kv_heads, rows, plan->n);
  const int64_t *qpos = plan->d_ring_pos + (int64_t)src * plan->n + first;
  const int64_t *kpos = plan->d_ring_pos + (int64_t)plan->rank * plan->n;
  if (!pass->backward) {
    float *part_lse = part + c->batch * rows * c->heads * c->head_dim;
    return weft_attn_block_forward(plan->ctx, &shape, qside, pass->k, pass->v, qpos, kpos, part,
                                   part_lse);
  }
  size_t qb = (size_t)(c->batch * rows * c->heads * c->head_dim) * plan->esz;
  size_t rb = (size_t)(c->batch * c->heads * rows) * sizeof(float);
  const char *p = qside;
  WEFT_CHECK(weft_elementwise_fill(plan->ctx, WEFT_DTYPE_F32,
                                   c->batch * rows * c->heads * c->head_dim, 0.0f, part));
  return weft_attn_block_backward(plan->ctx, &shape, p, pass->k, pass->v, qpos, kpos, p + qb,
                                  (const float *)(p + 2 * qb), (const float *)(p + 2 * qb + rb),
                                  part, pass->dk, pass->dv);
}

/* Folds a partial returned by `holder` into this rank's result: merge (forward) or add (dq). */
static weft_status_t owner_absorb(weft_attn_sp_plan_t *plan, const tr_pass_t *pass, int holder,
                                  const float *part) {
  int64_t first = first_row(plan, plan->rank, holder);
  return pass->backward ? add_partial_dq(plan, part, first, pass->dq)
                        : merge_partial(plan, part, first, pass->out, pass->lse);
}

/* Steps 1 .. P-1 of either pass (file comment). `full`, `half`: this rank's Q sides, all rows
 * and (causal) the second half's. Per step the holder runs holder_work on the received rows and
 * the owner folds in the partial of the previous step with owner_absorb. */
static weft_status_t run_steps(weft_attn_sp_plan_t *plan, const tr_pass_t *pass, const void *full,
                               const void *half) {
  int P = plan->size, r = plan->rank;
  weft_comm_req_t qreq[2], psend[2], precv[2];
  int psend_active[2] = {0, 0};
  WEFT_CHECK(weft_kernel_ctx_synchronize(plan->ctx)); /* packed Q sides ready for MPI */
  WEFT_CHECK(post_qside(plan, 1, full, half, pass->backward, qreq));
  for (int s = 1; s < P; s++) {
    int dest = (r + s) % P, src = (r + P - s) % P, slot = s % 2;
    /* The partial of this rank's rows computed by rank r + s at its step s. */
    size_t back = partial_count(plan, plan->n - first_row(plan, r, dest), pass->backward);
    WEFT_CHECK(weft_comm_irecv(plan->sp, plan->tr_part_recv[slot], back, WEFT_DTYPE_F32, dest,
                               ATTN_SP_TAG_PARTIAL, WEFT_MEM_DEVICE, &precv[slot]));
    WEFT_CHECK(weft_comm_waitall(qreq, 2));
    if (s + 1 < P) WEFT_CHECK(post_qside(plan, s + 1, full, half, pass->backward, qreq));
    if (psend_active[slot]) WEFT_CHECK(weft_comm_wait(&psend[slot]));
    psend_active[slot] = 0;
    float *part = plan->tr_part_send[slot];
    WEFT_CHECK(holder_work(plan, pass, src, plan->tr_qrecv[slot], part));
    WEFT_CHECK(weft_kernel_ctx_synchronize(plan->ctx));
    size_t rows = (size_t)(plan->n - first_row(plan, src, r));
    WEFT_CHECK(weft_comm_isend(plan->sp, part, partial_count(plan, (int64_t)rows, pass->backward),
                               WEFT_DTYPE_F32, src, ATTN_SP_TAG_PARTIAL, WEFT_MEM_DEVICE,
                               &psend[slot]));
    psend_active[slot] = 1;
    if (s > 1) { /* step s-1's partial, merged while the peers work on step s */
      WEFT_CHECK(weft_comm_wait(&precv[1 - slot]));
      WEFT_CHECK(owner_absorb(plan, pass, (r + s - 1) % P, plan->tr_part_recv[1 - slot]));
    }
  }
  if (P > 1) {
    int last = (P - 1) % 2;
    WEFT_CHECK(weft_comm_wait(&precv[last]));
    WEFT_CHECK(owner_absorb(plan, pass, (r + P - 1) % P, plan->tr_part_recv[last]));
  }
  for (int i = 0; i < 2; i++)
    if (psend_active[i]) WEFT_CHECK(weft_comm_wait(&psend[i]));
  return WEFT_OK;
}

weft_status_t attn_sp_tokenring_forward(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                        const void *v, float *out, float *lse) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  weft_attn_shape_t shape = attn_sp_shape(plan, c->heads, c->kv_heads, plan->n, plan->n);
  const int64_t *pos = plan->d_ring_pos + (int64_t)plan->rank * plan->n;
  if (plan->size > 1 && c->causal)
    WEFT_CHECK(pack_qside(plan, plan->tr_qside_half, plan->n / 2, q, NULL, NULL, NULL));
  tr_pass_t pass = {.backward = false, .k = k, .v = v, .out = out, .lse = lse};
  /* The local block first: out and lse start from it, the partials merge into it. */
  WEFT_CHECK(weft_attn_block_forward(plan->ctx, &shape, q, k, v, pos, pos, out, lse));
  if (plan->size == 1) return WEFT_OK;
  return run_steps(plan, &pass, q, plan->tr_qside_half);
}

weft_status_t attn_sp_tokenring_backward(weft_attn_sp_plan_t *plan, const void *q, const void *k,
                                         const void *v, const float *lse, const float *delta,
                                         const void *dout, float *dq, float *dk, float *dv) {
  const weft_attn_sp_config_t *c = &plan->cfg;
  weft_attn_shape_t shape = attn_sp_shape(plan, c->heads, c->kv_heads, plan->n, plan->n);
  const int64_t *pos = plan->d_ring_pos + (int64_t)plan->rank * plan->n;
  int64_t kv_count = c->batch * plan->n * c->kv_heads * c->head_dim;
  WEFT_CHECK(weft_elementwise_fill(plan->ctx, WEFT_DTYPE_F32,
                                   c->batch * plan->n * c->heads * c->head_dim, 0.0f, dq));
  WEFT_CHECK(attn_sp_zero(plan, dk, kv_count));
  WEFT_CHECK(attn_sp_zero(plan, dv, kv_count));
  if (plan->size > 1) {
    WEFT_CHECK(pack_qside(plan, plan->tr_qside_full, 0, q, dout, lse, delta));
    if (c->causal)
      WEFT_CHECK(pack_qside(plan, plan->tr_qside_half, plan->n / 2, q, dout, lse, delta));
  }
  tr_pass_t pass = {.backward = true, .k = k, .v = v, .dq = dq, .dk = dk, .dv = dv};
  WEFT_CHECK(
      weft_attn_block_backward(plan->ctx, &shape, q, k, v, pos, pos, dout, lse, delta, dq, dk, dv));
  if (plan->size == 1) return WEFT_OK;
  return run_steps(plan, &pass, plan->tr_qside_full, plan->tr_qside_half);
}
