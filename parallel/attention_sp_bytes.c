/* The layout, the head split, and the exact bytes each sequence-parallel attention algorithm
 * sends (weft_attn_sp_cost_bytes). Pure arithmetic, no communication: the plan
 * (attention_sp.c, attention_sp_tokenring.c) sends exactly these messages, and the tests check
 * the communicators' counters against these numbers and against design.md's formulas.
 *
 * Notation: B batch, n slots per rank, H / Hkv heads, d head dim, b = dtype bytes of q, k, v,
 * dout; out, lse, delta and every gradient travel as f32 (4 bytes). Per rank m of a Ulysses
 * group of u with head split (nq_i, nkv_i) per member i:
 *   Ulysses fwd: sum_{i != m} B n (nq_i d b + 2 nkv_i d b)     q, k, v out to the head owners
 *              + (u - 1) B n nq_m (d + 1) 4                     out and lse back
 *   Ulysses bwd: sum_{i != m} B n (2 nq_i d b + 2 nkv_i d b + 2 nq_i 4)   q, dout, k, v, lse, delta
 *              + (u - 1) B n (nq_m + 2 nkv_m) d 4                         dq, dk, dv back
 *   Ring over R ranks holding L = u n tokens and nkv_m kv heads:
 *              fwd (R - 1) 2 B L nkv_m d b;  bwd (R - 1) 2 B L nkv_m d (b + 4)
 *   (the backward's dk, dv accumulators start on the second step and make R - 1 hops, the last
 *   one home.) TokenRing, rank r, causal (holders above r need only Q's second half; holders
 *   below r return only the second half of their partial output):
 *   fwd  B H [((P-1-r) n/2 + r n) d b + (r n/2 + (P-1-r) n)(d + 1) 4]
 *   bwd  B H [((P-1-r) n/2 + r n)(2 d b + 8) + (r n/2 + (P-1-r) n) d 4]
 *   and non-causal the same with every n/2 replaced by n. */
#include <math.h>
#include <string.h>

#include "attention_sp_split.h"
#include "weft/log.h"

static const char *const k_algo_names[] = {"ulysses", "ring", "tokenring", "hybrid", "auto"};

const char *weft_attn_sp_algo_name(weft_attn_sp_algo_t algo) {
  if ((unsigned)algo > WEFT_ATTN_SP_AUTO) return "unknown";
  return k_algo_names[algo];
}

weft_status_t weft_attn_sp_algo_parse(const char *text, weft_attn_sp_algo_t *algo_p) {
  if (text == NULL || algo_p == NULL) return WEFT_ERR_INVALID_ARG;
  for (int a = 0; a <= WEFT_ATTN_SP_AUTO; a++) {
    if (strcmp(text, k_algo_names[a]) == 0) {
      *algo_p = (weft_attn_sp_algo_t)a;
      return WEFT_OK;
    }
  }
  return WEFT_ERR_INVALID_ARG;
}

weft_status_t weft_attn_sp_layout_init(weft_attn_sp_layout_t *layout, int64_t seq_len, int ranks,
                                       bool zigzag) {
  if (layout == NULL || seq_len < 1 || ranks < 1) {
    WEFT_ERROR("attn_sp", "attention layout: need seq_len >= 1 and ranks >= 1 (got %lld, %d)",
               (long long)seq_len, ranks);
    return WEFT_ERR_INVALID_ARG;
  }
  int64_t chunks = zigzag ? 2 * (int64_t)ranks : ranks;
  layout->seq_len = seq_len;
  layout->ranks = ranks;
  layout->zigzag = zigzag;
  layout->chunk = (seq_len + chunks - 1) / chunks;
  layout->local = zigzag ? 2 * layout->chunk : layout->chunk;
  return WEFT_OK;
}

int64_t weft_attn_sp_layout_position(const weft_attn_sp_layout_t *layout, int rank, int64_t slot) {
  int64_t c = layout->chunk, pos;
  if (!layout->zigzag) {
    pos = (int64_t)rank * c + slot;
  } else if (slot < c) {
    pos = (int64_t)rank * c + slot;
  } else {
    pos = (2 * (int64_t)layout->ranks - 1 - rank) * c + (slot - c);
  }
  return pos < layout->seq_len ? pos : -1;
}

/* Even share `i` of `total` items over `parts`: the first total % parts get one more. */
static void share(int64_t total, int64_t parts, int64_t i, int64_t *first, int64_t *count) {
  int64_t base = total / parts, extra = total % parts;
  *count = base + (i < extra ? 1 : 0);
  *first = i * base + (i < extra ? i : extra);
}

attn_sp_heads_t attn_sp_heads_of(int64_t heads, int64_t kv_heads, int u, int member) {
  attn_sp_heads_t s = {0, 0, 0, 0};
  int64_t group = heads / kv_heads;
  if (u <= kv_heads) { /* whole GQA groups: the kv heads are shared out, queries follow */
    share(kv_heads, u, member, &s.kv0, &s.nkv);
    s.q0 = s.kv0 * group;
    s.nq = s.nkv * group;
    return s;
  }
  /* More members than kv heads: kv head j goes to a block of members (replicated), which
   * share its group's query heads; a member may get none (and then no kv head). */
  int64_t base = u / kv_heads, extra = u % kv_heads, j = 0, first = 0, members = 0;
  for (j = 0; j < kv_heads; j++) {
    members = base + (j < extra ? 1 : 0);
    first = j * base + (j < extra ? j : extra);
    if (member < first + members) break;
  }
  share(group, members, member - first, &s.q0, &s.nq);
  s.q0 += j * group;
  if (s.nq > 0) {
    s.kv0 = j;
    s.nkv = 1;
  }
  return s;
}

int attn_sp_default_ulysses(int ranks) {
  int best = 1;
  double root = sqrt((double)ranks);
  for (int u = 1; u <= ranks; u++) {
    if (ranks % u == 0 && fabs(u - root) < fabs(best - root)) best = u;
  }
  return best;
}

int64_t attn_sp_dtype_bytes(weft_dtype_t dtype) { return dtype == WEFT_DTYPE_BF16 ? 2 : 4; }

/* Ulysses stage of member m of a group of u, with n slots per rank. */
static void ulysses_bytes(const weft_attn_sp_config_t *cfg, int64_t n, int u, int m, uint64_t *fwd,
                          uint64_t *bwd) {
  int64_t B = cfg->batch, d = cfg->head_dim, b = attn_sp_dtype_bytes(cfg->dtype);
  attn_sp_heads_t me = attn_sp_heads_of(cfg->heads, cfg->kv_heads, u, m);
  uint64_t f = 0, g = 0;
  for (int i = 0; i < u; i++) {
    if (i == m) continue;
    attn_sp_heads_t s = attn_sp_heads_of(cfg->heads, cfg->kv_heads, u, i);
    f += (uint64_t)(B * n * (s.nq * d * b + 2 * s.nkv * d * b));
    f += (uint64_t)(B * n * me.nq * (d + 1) * 4);
    g += (uint64_t)(B * n * (2 * s.nq * d * b + 2 * s.nkv * d * b + 2 * s.nq * 4));
    g += (uint64_t)(B * n * (me.nq + 2 * me.nkv) * d * 4);
  }
  *fwd += f;
  *bwd += g;
}

weft_status_t weft_attn_sp_cost_bytes(const weft_attn_sp_config_t *cfg, weft_attn_sp_algo_t algo,
                                      int ranks, int ulysses, int rank, uint64_t *fwd_p,
                                      uint64_t *bwd_p) {
  if (cfg == NULL || fwd_p == NULL || bwd_p == NULL || ranks < 1 || rank < 0 || rank >= ranks ||
      cfg->kv_heads < 1 || cfg->heads < 1 || cfg->heads % cfg->kv_heads != 0) {
    return WEFT_ERR_INVALID_ARG;
  }
  weft_attn_sp_layout_t layout;
  weft_status_t st = weft_attn_sp_layout_init(&layout, cfg->seq_len, ranks, cfg->causal);
  if (st != WEFT_OK) return st;
  int64_t n = layout.local, B = cfg->batch, H = cfg->heads, d = cfg->head_dim;
  int64_t b = attn_sp_dtype_bytes(cfg->dtype);
  int u = algo == WEFT_ATTN_SP_ULYSSES ? ranks : algo == WEFT_ATTN_SP_HYBRID ? ulysses : 1;
  if (u < 1 || ranks % u != 0) return WEFT_ERR_INVALID_ARG;
  uint64_t fwd = 0, bwd = 0;
  switch (algo) {
  case WEFT_ATTN_SP_ULYSSES:
  case WEFT_ATTN_SP_RING:
  case WEFT_ATTN_SP_HYBRID: {
    int m = rank % u, R = ranks / u;
    if (u > 1) ulysses_bytes(cfg, n, u, m, &fwd, &bwd);
    attn_sp_heads_t me = attn_sp_heads_of(cfg->heads, cfg->kv_heads, u, m);
    uint64_t kv = (uint64_t)(2 * B * u * n * me.nkv * d);
    fwd += (uint64_t)(R - 1) * kv * (uint64_t)b;
    bwd += (uint64_t)(R - 1) * kv * (uint64_t)(b + 4);
    break;
  }
  case WEFT_ATTN_SP_TOKENRING: {
    int64_t P = ranks, r = rank, half = cfg->causal ? n / 2 : n;
    int64_t q_rows = (P - 1 - r) * half + r * n;   /* Q rows this rank sends */
    int64_t out_rows = r * half + (P - 1 - r) * n; /* partial rows this rank returns */
    fwd = (uint64_t)(B * H * (q_rows * d * b + out_rows * (d + 1) * 4));
    bwd = (uint64_t)(B * H * (q_rows * (2 * d * b + 8) + out_rows * d * 4));
    break;
  }
  default: return WEFT_ERR_INVALID_ARG;
  }
  *fwd_p = fwd;
  *bwd_p = bwd;
  return WEFT_OK;
}
