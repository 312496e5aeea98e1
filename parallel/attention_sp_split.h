/* Private to parallel/attention_sp*.c: how heads are split over a Ulysses group and how many
 * bytes each algorithm sends. The plan posts its messages from the same functions, so the byte
 * arithmetic in attention_sp_bytes.c cannot drift from the communication. */
#ifndef WEFT_ATTENTION_SP_SPLIT_H
#define WEFT_ATTENTION_SP_SPLIT_H

#include <stdint.h>

#include "weft/attention_sp.h"

/* The heads member i of a Ulysses group of u ranks computes: query heads [q0, q0 + nq) and
 * key/value heads [kv0, kv0 + nkv), such that local query head h uses local kv head
 * h / (nq / nkv), as the kernel requires (query head h uses kv head h / (H / Hkv) globally).
 *   u <= Hkv: the kv heads are shared out evenly (the first Hkv % u members one more) and
 *             each member takes the query heads of its kv heads: nq = nkv H / Hkv. When u does
 *             not divide Hkv the query work differs by one GQA group between members.
 *   u >  Hkv: each kv head goes to a block of u / Hkv (or one more) consecutive members,
 *             which share its group's H / Hkv query heads evenly: the kv head is replicated,
 *             nkv = 1, and a member whose share is empty gets nq = nkv = 0. */
typedef struct attn_sp_heads {
  int64_t q0, nq;
  int64_t kv0, nkv;
} attn_sp_heads_t;

attn_sp_heads_t attn_sp_heads_of(int64_t heads, int64_t kv_heads, int u, int member);

/* HYBRID's default Ulysses degree: the divisor of P closest to sqrt(P), the smaller on a tie. */
int attn_sp_default_ulysses(int ranks);

/* Element size of the configured dtype (q, k, v, dout on the wire). */
int64_t attn_sp_dtype_bytes(weft_dtype_t dtype);

#endif /* WEFT_ATTENTION_SP_SPLIT_H */
