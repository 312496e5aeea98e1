/* Host-side routing of the expert-parallel MoE layer: from the router's choices and the
 * all-gathered per-expert counts to every index list the exchanges and kernels use.
 *
 * Everything here is deterministic host arithmetic, done once per forward and reused by the
 * backward. Orders are fixed so that every rank derives the same answer from the same
 * counts: messages are destination-major, a message lists its tokens in token order and a
 * token's slots in slot order; a receiver lays its expert rows out expert-major, then by
 * source rank, then in message order.
 *
 * Rejected: building the lists on the GPU with atomics (DeepEP's notify kernels). Atomics
 * make the order of rows depend on the schedule, and the counts must reach the host for MPI
 * in any case; T * k ids per forward are cheap to copy. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "moe_ep_internal.h"
#include "weft/check.h"
#include "weft/log.h"

/* Replaces *p by an uninitialised array of `count` elements of `size` bytes (old contents
 * are not kept: every list is rebuilt from scratch each forward). */
static weft_status_t realloc_array(void **p, size_t count, size_t size) {
  void *fresh = malloc((count > 0 ? count : 1) * size);
  if (!fresh) {
    WEFT_ERROR("moe", "out of host memory for %zu routing entries of %zu bytes", count, size);
    return WEFT_ERR_NO_MEMORY;
  }
  free(*p);
  *p = fresh;
  return WEFT_OK;
}

#define REALLOC(ptr, count) WEFT_CHECK(realloc_array((void **)&(ptr), (count), sizeof *(ptr)))

void moe_route_cleanup(moe_route_t *r) {
  void *arrays[] = {r->ids,        r->weights,   r->keep,       r->counts_mine, r->counts_all,
                    r->kept_all,   r->allow,     r->cursor,     r->rows_to,     r->slots_to,
                    r->send_tok,   r->send_meta, r->send_slot,  r->tok_rows,    r->rows_from,
                    r->slots_from, r->recv_meta, r->expert_off, r->expert_rows, r->perm_rows,
                    r->perm_w,     r->slot_perm, r->comb_idx,   r->comb_w};
  for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; ++i) {
    free(arrays[i]);
  }
  memset(r, 0, sizeof *r);
}

weft_status_t moe_route_begin(moe_route_t *r, const moe_dims_t *d, int64_t tokens) {
  const size_t P = (size_t)d->ranks, E = (size_t)d->experts, k = (size_t)d->k;
  const size_t El = (size_t)d->local_experts;
  if (!r->counts_mine) { /* per-rank and per-expert arrays: sized once */
    REALLOC(r->counts_mine, E);
    REALLOC(r->counts_all, P * E);
    REALLOC(r->kept_all, P * E);
    REALLOC(r->allow, E);
    REALLOC(r->cursor, El);
    REALLOC(r->rows_to, P);
    REALLOC(r->slots_to, P);
    REALLOC(r->rows_from, P);
    REALLOC(r->slots_from, P);
    REALLOC(r->expert_off, El + 1);
    REALLOC(r->expert_rows, El);
  }
  r->fan_tok = d->k < d->ranks ? d->k : d->ranks;
  r->fan_comb = (int64_t)d->k < d->local_experts ? d->k : (int)d->local_experts;
  const size_t T = (size_t)tokens;
  if (T > r->cap_tokens || !r->ids) {
    REALLOC(r->ids, T * k);
    REALLOC(r->weights, T * k);
    REALLOC(r->keep, T * k);
    REALLOC(r->tok_rows, T * k); /* fan_tok <= k */
    r->cap_tokens = T;
  }
  r->tokens = tokens;
  return WEFT_OK;
}

void moe_route_count(moe_route_t *r, const moe_dims_t *d) {
  memset(r->counts_mine, 0, (size_t)d->experts * sizeof *r->counts_mine);
  const int64_t slots = r->tokens * d->k;
  for (int64_t s = 0; s < slots; ++s) {
    int32_t e = r->ids[s];
    if (e >= 0 && e < d->experts) { /* out-of-range ids are reported by moe_route_plan_send */
      r->counts_mine[e]++;
    }
  }
}

/* kept_all[s][e] = the share of the capacity left for rank s after the ranks before it. */
static void route_capacity(moe_route_t *r, const moe_dims_t *d, double capacity_factor) {
  const int64_t E = d->experts;
  int64_t slots_total = 0;
  for (int64_t i = 0; i < (int64_t)d->ranks * E; ++i) {
    slots_total += r->counts_all[i];
  }
  const int64_t group_tokens = slots_total / d->k;
  r->capacity =
      capacity_factor > 0
          ? (int64_t)ceil(capacity_factor * (double)d->k * (double)group_tokens / (double)E)
          : 0;
  for (int64_t e = 0; e < E; ++e) {
    int64_t before = 0;
    for (int s = 0; s < d->ranks; ++s) {
      int64_t c = r->counts_all[(int64_t)s * E + e];
      int64_t kept = c;
      if (capacity_factor > 0) {
        int64_t left = r->capacity - before;
        kept = left <= 0 ? 0 : (left < c ? left : c);
      }
      r->kept_all[(int64_t)s * E + e] = kept;
      before += c;
    }
  }
}

weft_status_t moe_route_plan_send(moe_route_t *r, const moe_dims_t *d, double capacity_factor) {
  const int64_t T = r->tokens, E = d->experts, El = d->local_experts;
  const int k = d->k, P = d->ranks;
  for (int64_t s = 0; s < T * k; ++s) {
    if (r->ids[s] < 0 || r->ids[s] >= E) {
      WEFT_ERROR("moe", "router chose expert %d for token %lld slot %lld; experts are 0..%lld",
                 (int)r->ids[s], (long long)(s / k), (long long)(s % k), (long long)(E - 1));
      return WEFT_ERR_INVALID_ARG;
    }
  }
  route_capacity(r, d, capacity_factor);

  /* Keep flags: per expert, this rank's first kept_all[me][e] slots in token order. */
  for (int64_t e = 0; e < E; ++e) {
    r->allow[e] = r->kept_all[(int64_t)d->rank * E + e];
  }
  r->dropped = 0;
  for (int64_t s = 0; s < T * k; ++s) {
    int32_t e = r->ids[s];
    r->keep[s] = r->allow[e] > 0;
    if (r->keep[s]) {
      r->allow[e]--;
    } else {
      r->dropped++;
    }
  }

  /* Rows and slots per destination. A token goes to a rank once however many of its kept
   * slots that rank owns; the slots of a token are not sorted by rank, hence the scan back. */
  memset(r->rows_to, 0, (size_t)P * sizeof *r->rows_to);
  memset(r->slots_to, 0, (size_t)P * sizeof *r->slots_to);
  r->min_rows_out = 0;
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < k; ++j) {
      if (!r->keep[t * k + j]) {
        continue;
      }
      int dest = (int)(r->ids[t * k + j] / El);
      r->slots_to[dest]++;
      bool seen = false;
      for (int i = 0; i < j; ++i) {
        seen = seen || (r->keep[t * k + i] && (int)(r->ids[t * k + i] / El) == dest);
      }
      if (!seen) {
        r->rows_to[dest]++;
        r->min_rows_out += dest != d->rank;
      }
    }
  }
  int64_t S = 0, Q = 0;
  for (int p = 0; p < P; ++p) {
    S += (int64_t)r->rows_to[p];
    Q += (int64_t)r->slots_to[p];
  }
  if ((size_t)S > r->cap_send_rows || !r->send_tok) {
    REALLOC(r->send_tok, (size_t)S);
    r->cap_send_rows = (size_t)S;
  }
  if ((size_t)Q > r->cap_send_slots || !r->send_meta) {
    REALLOC(r->send_meta, (size_t)Q * MOE_META_INTS);
    REALLOC(r->send_slot, (size_t)Q);
    r->cap_send_slots = (size_t)Q;
  }
  r->rows_sent = S;
  r->slots_sent = Q;

  /* The lists: destinations in order; within one, tokens in order and slots in order. */
  for (int64_t i = 0; i < T * r->fan_tok; ++i) {
    r->tok_rows[i] = -1;
  }
  int64_t row = 0, slot = 0;
  for (int p = 0; p < P; ++p) {
    int32_t row_in_msg = 0;
    for (int64_t t = 0; t < T; ++t) {
      bool has = false;
      for (int j = 0; j < k; ++j) {
        const int64_t s = t * k + j;
        if (!r->keep[s] || (int)(r->ids[s] / El) != p) {
          continue;
        }
        int32_t *m = r->send_meta + slot * MOE_META_INTS;
        m[MOE_META_ROW] = row_in_msg;
        m[MOE_META_EXPERT] = (int32_t)(r->ids[s] - (int64_t)p * El);
        memcpy(&m[MOE_META_WEIGHT], &r->weights[s], sizeof(float));
        r->send_slot[slot++] = (int32_t)s;
        has = true;
      }
      if (has) {
        r->send_tok[row] = (int32_t)t;
        int32_t *back = r->tok_rows + t * r->fan_tok; /* ranks ascend: fill the next free */
        int n = 0;
        while (back[n] >= 0) {
          n++;
        }
        back[n] = (int32_t)row;
        row++;
        row_in_msg++;
      }
    }
  }

  /* What this rank will receive: every source's kept slots for this rank's experts. */
  int64_t Qr = 0;
  for (int s = 0; s < P; ++s) {
    int64_t n = 0;
    for (int64_t e = 0; e < El; ++e) {
      n += r->kept_all[(int64_t)s * E + (int64_t)d->rank * El + e];
    }
    r->slots_from[s] = (size_t)n;
    Qr += n;
  }
  if ((size_t)Qr > r->cap_recv_slots || !r->recv_meta) {
    REALLOC(r->recv_meta, (size_t)Qr * MOE_META_INTS);
    REALLOC(r->perm_rows, (size_t)Qr);
    REALLOC(r->perm_w, (size_t)Qr);
    REALLOC(r->slot_perm, (size_t)Qr);
    r->cap_recv_slots = (size_t)Qr;
  }
  r->slots_recv = Qr;
  return WEFT_OK;
}

/* Places received slot q (message order) of source row `recv_row` into expert e's rows and
 * into its row's combine list. */
static weft_status_t route_place(moe_route_t *r, int64_t q, int64_t recv_row, int32_t e, float w) {
  const int64_t er = r->cursor[e]++;
  r->perm_rows[er] = (int32_t)recv_row;
  r->perm_w[er] = w;
  r->slot_perm[q] = (int32_t)er;
  int32_t *ci = r->comb_idx + recv_row * r->fan_comb;
  float *cw = r->comb_w + recv_row * r->fan_comb;
  int c = 0;
  while (c < r->fan_comb && ci[c] >= 0) {
    c++;
  }
  if (c == r->fan_comb) {
    WEFT_ERROR("moe", "received row %lld carries more than %d slots for this rank",
               (long long)recv_row, r->fan_comb);
    return WEFT_ERR_CORRUPT;
  }
  ci[c] = (int32_t)er;
  cw[c] = w;
  return WEFT_OK;
}

weft_status_t moe_route_plan_recv(moe_route_t *r, const moe_dims_t *d) {
  const int64_t E = d->experts, El = d->local_experts;
  const int P = d->ranks;
  /* Rows per source: the last slot of a message names its last row. */
  int64_t R = 0, q = 0;
  for (int s = 0; s < P; ++s) {
    const int64_t n = (int64_t)r->slots_from[s];
    r->rows_from[s] =
        n > 0 ? (size_t)r->recv_meta[(q + n - 1) * MOE_META_INTS + MOE_META_ROW] + 1 : 0;
    R += (int64_t)r->rows_from[s];
    q += n;
  }
  r->rows_recv = R;
  r->min_rows_in = R - (int64_t)r->rows_from[d->rank];
  if ((size_t)R > r->cap_recv_rows || !r->comb_idx) {
    REALLOC(r->comb_idx, (size_t)R * (size_t)r->fan_comb);
    REALLOC(r->comb_w, (size_t)R * (size_t)r->fan_comb);
    r->cap_recv_rows = (size_t)R;
  }
  for (int64_t i = 0; i < R * r->fan_comb; ++i) {
    r->comb_idx[i] = -1;
    r->comb_w[i] = 0.0f;
  }

  /* Expert-major offsets from the counts every rank agrees on. */
  r->expert_off[0] = 0;
  for (int64_t e = 0; e < El; ++e) {
    int64_t n = 0;
    for (int s = 0; s < P; ++s) {
      n += r->kept_all[(int64_t)s * E + (int64_t)d->rank * El + e];
    }
    r->expert_rows[e] = n;
    r->expert_off[e + 1] = r->expert_off[e] + n;
    r->cursor[e] = r->expert_off[e];
  }

  /* Sources in rank order, each message in order: expert e's rows come out by source, then
   * by token. Anything that contradicts the all-gathered counts is refused. */
  int64_t row_base = 0;
  q = 0;
  for (int s = 0; s < P; ++s) {
    const int64_t n = (int64_t)r->slots_from[s];
    int32_t prev_row = 0;
    for (int64_t i = 0; i < n; ++i, ++q) {
      const int32_t *m = r->recv_meta + q * MOE_META_INTS;
      const int32_t row = m[MOE_META_ROW], e = m[MOE_META_EXPERT];
      float w;
      memcpy(&w, &m[MOE_META_WEIGHT], sizeof w);
      const bool row_ok = i == 0 ? row == 0 : (row == prev_row || row == prev_row + 1);
      if (!row_ok || e < 0 || e >= El || r->cursor[e] >= r->expert_off[e + 1]) {
        WEFT_ERROR("moe",
                   "routing metadata from rank %d is inconsistent (slot %lld: row %d, local "
                   "expert %d): the ranks disagree about the routing",
                   s, (long long)i, (int)row, (int)e);
        return WEFT_ERR_CORRUPT;
      }
      prev_row = row;
      WEFT_CHECK(route_place(r, q, row_base + row, e, w));
    }
    row_base += (int64_t)r->rows_from[s];
  }
  return WEFT_OK;
}
