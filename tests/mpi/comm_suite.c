/* Operation checks shared by the comm tests; see comm_suite.h for what is checked and why.
 *
 * Data: movement operations (bcast, allgather(v), alltoall(v), sendrecv, isend/irecv) carry
 * a hash of (operation, source, destination, case, index) and are compared bit for bit, so
 * they are checked for every dtype including f16 (which only moves). Reductions use small
 * integers (quarters for bf16) whose sums over up to 4 ranks are exact in the dtype, in any
 * order of summation, so the expected result is exact as well.
 *
 * Byte counters (comm.h): self is excluded; bcast counts root -> each rank; allreduce counts
 * floor(2(P-1) * bytes / P) to the next rank and from the previous one; all-gather(v) counts
 * the own block to each peer and each peer's block from it; all-to-all(v) and point-to-point
 * count exact volumes; isend/irecv count when posted (the wait is not an operation). */
#include "comm_suite.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "weft/bf16.h"
#include "weft/device.h"
#include "weft/tensor.h"

#define GUARD_ELEMS 8    /* checked tail past every receive extent: catches overruns */
#define SENTINEL    0xA5 /* byte that fills receive buffers, gaps and guards */
#define MAX_RANKS   64   /* the tests run at most 4 ranks; arrays are sized generously */

typedef struct suite {
  weft_comm_t *comm;
  const weft_device_t *device;
  weft_mem_t mem;
  int rank, size;
  size_t large;
  const char *label;
  /* Expected byte counters of the operation being checked ([size]), and the running totals
   * they add up to. */
  uint64_t want_sent[MAX_RANKS], want_recv[MAX_RANKS];
  weft_comm_peer_bytes_t want_total[MAX_RANKS];
  weft_comm_op_stats_t want_ops[WEFT_COMM_OP_COUNT];
} suite_t;

/* ---- buffers: a host mirror that is filled and checked, and what the operation gets ---- */

typedef struct tbuf {
  unsigned char *host; /* [elems + GUARD_ELEMS] elements */
  void *op;            /* host itself for WEFT_MEM_HOST, device memory for WEFT_MEM_DEVICE */
  size_t elems, esize;
} tbuf_t;

static size_t tbuf_bytes(const tbuf_t *b) { return (b->elems + GUARD_ELEMS) * b->esize; }

static void tbuf_init(const suite_t *s, tbuf_t *b, size_t elems, weft_dtype_t dtype) {
  b->esize = weft_dtype_size(dtype);
  b->elems = elems;
  b->host = malloc(tbuf_bytes(b));
  b->op = NULL;
  if (!b->host) {
    WT_CHECK(0, "out of host memory for %zu elements", elems);
    b->elems = 0;
    return;
  }
  memset(b->host, SENTINEL, tbuf_bytes(b));
  if (s->mem == WEFT_MEM_HOST)
    b->op = b->host;
  else
    WT_CHECK_OK(weft_device_alloc(s->device, tbuf_bytes(b), &b->op));
}

/* Host mirror -> operation buffer (guard included). */
static void tbuf_upload(const suite_t *s, tbuf_t *b) {
  if (b->op && b->op != b->host)
    WT_CHECK_OK(
        weft_device_copy(s->device, b->op, b->host, tbuf_bytes(b), WEFT_COPY_HOST_TO_DEVICE));
}

/* Operation buffer -> host mirror (guard included). */
static void tbuf_download(const suite_t *s, tbuf_t *b) {
  if (b->op && b->op != b->host)
    WT_CHECK_OK(
        weft_device_copy(s->device, b->host, b->op, tbuf_bytes(b), WEFT_COPY_DEVICE_TO_HOST));
}

static void tbuf_free(const suite_t *s, tbuf_t *b) {
  if (b->op && b->op != b->host) weft_device_free(s->device, b->op);
  free(b->host);
  memset(b, 0, sizeof *b);
}

static unsigned char *tbuf_at(const tbuf_t *b, size_t i) { return b->host + i * b->esize; }

/* Elements [from, to) must still hold the sentinel. */
static void check_untouched(const suite_t *s, const tbuf_t *b, size_t from, size_t to,
                            const char *what, const char *region) {
  for (size_t i = from * b->esize; i < to * b->esize; i++) {
    if (b->host[i] != SENTINEL) {
      WT_CHECK(0, "%s %s: %s element %zu was written (byte %02x)", s->label, what, region,
               i / b->esize, b->host[i]);
      return;
    }
  }
}

static void check_guard(const suite_t *s, const tbuf_t *b, const char *what) {
  check_untouched(s, b, b->elems, b->elems + GUARD_ELEMS, what, "guard past the extent");
}

/* ---- data patterns ---- */

static uint64_t mix64(uint64_t x) { /* splitmix64 finaliser */
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Seed of one block: the operation, its two ranks and a case number. */
static uint64_t seed_of(weft_comm_op_t op, int src, int dst, uint64_t tag) {
  return mix64(((uint64_t)op << 56) ^ ((uint64_t)(unsigned)src << 40) ^
               ((uint64_t)(unsigned)dst << 24) ^ tag);
}

/* Element i of a pattern, stored as `dtype`: f32 gets an exact integer (never NaN), the
 * others raw bits (16-bit types move as uint16, so any bit pattern survives). */
static void pattern_elem(weft_dtype_t dtype, uint64_t seed, size_t i, unsigned char *out) {
  uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1));
  switch (dtype) {
  case WEFT_DTYPE_F32: {
    float v = (float)(int32_t)(h & 0xffffffu) - 8388608.0f;
    memcpy(out, &v, sizeof v);
    break;
  }
  case WEFT_DTYPE_BF16:
  case WEFT_DTYPE_F16: {
    uint16_t v = (uint16_t)h;
    memcpy(out, &v, sizeof v);
    break;
  }
  case WEFT_DTYPE_I32: {
    int32_t v = (int32_t)(uint32_t)h;
    memcpy(out, &v, sizeof v);
    break;
  }
  case WEFT_DTYPE_I64: {
    int64_t v = (int64_t)h;
    memcpy(out, &v, sizeof v);
    break;
  }
  }
}

/* Bitwise equality of one element (2, 4 or 8 bytes). Fixed-size copies instead of memcmp:
 * the suite compares tens of millions of elements and sanitizer builds intercept memcmp. */
static bool elem_equal(const unsigned char *a, const unsigned char *b, size_t esize) {
  uint64_t x = 0, y = 0;
  switch (esize) {
  case 2:
    memcpy(&x, a, 2);
    memcpy(&y, b, 2);
    break;
  case 4:
    memcpy(&x, a, 4);
    memcpy(&y, b, 4);
    break;
  default:
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    break;
  }
  return x == y;
}

static void fill_pattern(tbuf_t *b, weft_dtype_t dtype, size_t at, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) pattern_elem(dtype, seed, i, tbuf_at(b, at + i));
}

/* Elements [at, at + n) must equal the pattern; reports the first mismatch and the count. */
static void check_pattern(const suite_t *s, const tbuf_t *b, weft_dtype_t dtype, size_t at,
                          size_t n, uint64_t seed, const char *what, int from_rank) {
  size_t wrong = 0, first = 0;
  unsigned char want[8];
  for (size_t i = 0; i < n; i++) {
    pattern_elem(dtype, seed, i, want);
    if (!elem_equal(tbuf_at(b, at + i), want, b->esize) && wrong++ == 0) first = i;
  }
  WT_CHECK(wrong == 0, "%s %s: %zu of %zu elements from rank %d wrong (first at %zu)", s->label,
           what, wrong, n, from_rank, first);
}

/* ---- byte-counter expectations ---- */

static void want(suite_t *s, int peer, uint64_t sent, uint64_t recv) {
  if (peer == s->rank) return; /* self: nothing crosses a link (comm.h) */
  s->want_sent[peer] += sent;
  s->want_recv[peer] += recv;
}

/* Compares weft_comm_last_bytes with the expectation set by want(), adds the expectation to
 * the running totals and clears it for the next operation. */
static void want_check(suite_t *s, weft_comm_op_t op, const char *what) {
  const weft_comm_peer_bytes_t *last = weft_comm_last_bytes(s->comm);
  weft_comm_op_stats_t *ops = &s->want_ops[op];
  ops->calls++;
  for (int p = 0; p < s->size; p++) {
    WT_CHECK(last[p].sent == s->want_sent[p] && last[p].recv == s->want_recv[p],
             "%s %s: last bytes with peer %d are sent %llu recv %llu, expected %llu %llu", s->label,
             what, p, (unsigned long long)last[p].sent, (unsigned long long)last[p].recv,
             (unsigned long long)s->want_sent[p], (unsigned long long)s->want_recv[p]);
    s->want_total[p].sent += s->want_sent[p];
    s->want_total[p].recv += s->want_recv[p];
    ops->bytes_sent += s->want_sent[p];
    ops->bytes_recv += s->want_recv[p];
    s->want_sent[p] = s->want_recv[p] = 0;
  }
}

/* ---- barrier ---- */

static void check_barrier(suite_t *s) {
  for (int i = 0; i < 3; i++) {
    WT_CHECK_OK(weft_comm_barrier(s->comm));
    want_check(s, WEFT_COMM_OP_BARRIER, "barrier");
  }
}

/* ---- bcast ---- */

typedef struct dcase {
  weft_dtype_t dtype;
  size_t count;
} dcase_t;

static void check_bcast_one(suite_t *s, int root, weft_dtype_t dtype, size_t count) {
  char what[128];
  snprintf(what, sizeof what, "bcast root %d %s x %zu", root, weft_dtype_name(dtype), count);
  uint64_t seed = seed_of(WEFT_COMM_OP_BCAST, root, 0, count * 8 + dtype);
  tbuf_t b;
  tbuf_init(s, &b, count, dtype);
  if (s->rank == root) fill_pattern(&b, dtype, 0, count, seed);
  tbuf_upload(s, &b);
  uint64_t bytes = count * b.esize;
  for (int p = 0; p < s->size; p++) {
    if (s->rank == root)
      want(s, p, bytes, 0);
    else if (p == root)
      want(s, p, 0, bytes);
  }
  WT_CHECK_OK(weft_comm_bcast(s->comm, b.op, count, dtype, root, s->mem));
  want_check(s, WEFT_COMM_OP_BCAST, what);
  tbuf_download(s, &b);
  check_pattern(s, &b, dtype, 0, count, seed, what, root);
  check_guard(s, &b, what);
  tbuf_free(s, &b);
}

static void check_bcast(suite_t *s) {
  static const dcase_t cases[] = {{WEFT_DTYPE_I32, 0},
                                  {WEFT_DTYPE_F32, 1},
                                  {WEFT_DTYPE_BF16, 7},
                                  {WEFT_DTYPE_F16, 3},
                                  {WEFT_DTYPE_I64, 1001}};
  for (int root = 0; root < s->size; root++)
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
      check_bcast_one(s, root, cases[c].dtype, cases[c].count);
  if (s->large) check_bcast_one(s, s->size - 1, WEFT_DTYPE_F32, s->large);
}

/* ---- allreduce ---- */

/* Rank r's input element i: exact small values whose sums over 4 ranks stay exact. */
static int64_t reduce_input(weft_dtype_t dtype, int r, size_t i) {
  int64_t k = (int64_t)i;
  switch (dtype) {
  case WEFT_DTYPE_F32: return (k * 7 + r * 13 + 3) % 1001 - 500; /* |v| <= 500 */
  case WEFT_DTYPE_BF16: return (k * 5 + r * 3) % 61 - 30;        /* quarters: |v| <= 7.5 */
  case WEFT_DTYPE_I32: return (k * 40503 + r * 2654435) % 2000001 - 1000000;
  case WEFT_DTYPE_I64: /* past 32 bits, so a 32-bit reduction would be caught */
    return ((k + r) % 1000 - 500) * ((int64_t)1 << 33) + r * 1000003 + k;
  case WEFT_DTYPE_F16: break;
  }
  return 0;
}

static void store_value(weft_dtype_t dtype, int64_t v, unsigned char *out) {
  switch (dtype) {
  case WEFT_DTYPE_F32: {
    float f = (float)v;
    memcpy(out, &f, sizeof f);
    break;
  }
  case WEFT_DTYPE_BF16: {
    weft_bf16_t h = weft_f32_to_bf16((float)v * 0.25f); /* exact: at most 8 significant bits */
    memcpy(out, &h, sizeof h);
    break;
  }
  case WEFT_DTYPE_I32: {
    int32_t x = (int32_t)v;
    memcpy(out, &x, sizeof x);
    break;
  }
  case WEFT_DTYPE_I64: memcpy(out, &v, sizeof v); break;
  case WEFT_DTYPE_F16: break;
  }
}

static int64_t reduce_expected(weft_dtype_t dtype, weft_reduce_op_t op, int size, size_t i) {
  int64_t acc = reduce_input(dtype, 0, i);
  for (int r = 1; r < size; r++) {
    int64_t v = reduce_input(dtype, r, i);
    acc = op == WEFT_REDUCE_SUM   ? acc + v
          : op == WEFT_REDUCE_MAX ? (v > acc ? v : acc)
                                  : (v < acc ? v : acc);
  }
  return acc;
}

static const char *reduce_name(weft_reduce_op_t op) {
  return op == WEFT_REDUCE_SUM ? "sum" : op == WEFT_REDUCE_MAX ? "max" : "min";
}

static void check_allreduce_one(suite_t *s, weft_dtype_t dtype, weft_reduce_op_t op, size_t count,
                                bool in_place) {
  char what[128];
  snprintf(what, sizeof what, "allreduce %s %s x %zu %s", reduce_name(op), weft_dtype_name(dtype),
           count, in_place ? "in place" : "out of place");
  tbuf_t send, recv;
  memset(&recv, 0, sizeof recv);
  tbuf_init(s, &send, count, dtype);
  for (size_t i = 0; i < count; i++)
    store_value(dtype, reduce_input(dtype, s->rank, i), tbuf_at(&send, i));
  tbuf_upload(s, &send);
  if (!in_place) {
    tbuf_init(s, &recv, count, dtype);
    tbuf_upload(s, &recv);
  }
  tbuf_t *out = in_place ? &send : &recv;
  uint64_t bytes = count * send.esize;
  if (s->size > 1) { /* ring model: 2(P-1)/P of the buffer to next, from previous */
    uint64_t ring = 2 * (uint64_t)(s->size - 1) * bytes / (uint64_t)s->size;
    want(s, (s->rank + 1) % s->size, ring, 0);
    want(s, (s->rank + s->size - 1) % s->size, 0, ring);
  }
  WT_CHECK_OK(weft_comm_allreduce(s->comm, send.op, out->op, count, dtype, op, s->mem));
  want_check(s, WEFT_COMM_OP_ALLREDUCE, what);
  tbuf_download(s, out);
  size_t wrong = 0, first = 0;
  unsigned char expect[8];
  for (size_t i = 0; i < count; i++) {
    store_value(dtype, reduce_expected(dtype, op, s->size, i), expect);
    if (!elem_equal(tbuf_at(out, i), expect, out->esize) && wrong++ == 0) first = i;
  }
  WT_CHECK(wrong == 0, "%s %s: %zu of %zu elements wrong (first at %zu)", s->label, what, wrong,
           count, first);
  check_guard(s, out, what);
  if (!in_place) { /* the send buffer is input only */
    tbuf_download(s, &send);
    for (size_t i = 0, bad = 0; i < count && !bad; i++) {
      store_value(dtype, reduce_input(dtype, s->rank, i), expect);
      bad = !elem_equal(tbuf_at(&send, i), expect, send.esize);
      WT_CHECK(!bad, "%s %s: send buffer changed at %zu", s->label, what, i);
    }
    tbuf_free(s, &recv);
  }
  tbuf_free(s, &send);
}

static void check_allreduce(suite_t *s) {
  static const weft_dtype_t dtypes[] = {WEFT_DTYPE_F32, WEFT_DTYPE_I32, WEFT_DTYPE_I64,
                                        WEFT_DTYPE_BF16};
  static const weft_reduce_op_t ops[] = {WEFT_REDUCE_SUM, WEFT_REDUCE_MAX, WEFT_REDUCE_MIN};
  static const size_t counts[] = {0, 1, 7, 1001};
  for (size_t d = 0; d < 4; d++) {
    for (size_t o = 0; o < 3; o++) {
      for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        check_allreduce_one(s, dtypes[d], ops[o], counts[c], false);
        check_allreduce_one(s, dtypes[d], ops[o], counts[c], true);
      }
      if (s->large) {
        check_allreduce_one(s, dtypes[d], ops[o], s->large, false);
        check_allreduce_one(s, dtypes[d], ops[o], s->large, true);
      }
    }
  }
}

/* ---- allgather and allgatherv ---- */

static void check_allgather_one(suite_t *s, weft_dtype_t dtype, size_t count) {
  char what[128];
  snprintf(what, sizeof what, "allgather %s x %zu", weft_dtype_name(dtype), count);
  const int P = s->size;
  tbuf_t send, recv;
  tbuf_init(s, &send, count, dtype);
  fill_pattern(&send, dtype, 0, count, seed_of(WEFT_COMM_OP_ALLGATHER, s->rank, 0, count));
  tbuf_upload(s, &send);
  tbuf_init(s, &recv, (size_t)P * count, dtype);
  tbuf_upload(s, &recv);
  uint64_t bytes = count * send.esize;
  for (int p = 0; p < P; p++) want(s, p, bytes, bytes);
  WT_CHECK_OK(weft_comm_allgather(s->comm, send.op, recv.op, count, dtype, s->mem));
  want_check(s, WEFT_COMM_OP_ALLGATHER, what);
  tbuf_download(s, &recv);
  tbuf_download(s, &send);
  for (int p = 0; p < P; p++)
    check_pattern(s, &recv, dtype, (size_t)p * count, count,
                  seed_of(WEFT_COMM_OP_ALLGATHER, p, 0, count), what, p);
  check_guard(s, &recv, what);
  check_pattern(s, &send, dtype, 0, count, seed_of(WEFT_COMM_OP_ALLGATHER, s->rank, 0, count),
                "allgather send buffer unchanged", s->rank);
  tbuf_free(s, &send);
  tbuf_free(s, &recv);
}

/* Block layout of a v-collective: counts and displacements per rank, with gaps of 0..2
 * elements before each block (they must stay untouched), optionally in reverse rank order so
 * displacements are not assumed to grow with the rank. Returns the extent. */
static size_t layout(int size, const size_t *counts, bool reversed, int salt, size_t *displs) {
  size_t at = 0;
  for (int j = 0; j < size; j++) {
    int p = reversed ? size - 1 - j : j;
    at += (size_t)(p + salt) % 3;
    displs[p] = at;
    at += counts[p];
  }
  return at;
}

static void check_allgatherv_one(suite_t *s, weft_dtype_t dtype, int kase, const size_t *counts,
                                 bool reversed) {
  char what[128];
  snprintf(what, sizeof what, "allgatherv %s case %d%s", weft_dtype_name(dtype), kase,
           reversed ? " (blocks in reverse order)" : "");
  const int P = s->size, me = s->rank;
  size_t displs[MAX_RANKS];
  size_t extent = layout(P, counts, reversed, kase, displs);
  tbuf_t send, recv;
  tbuf_init(s, &send, counts[me], dtype);
  fill_pattern(&send, dtype, 0, counts[me], seed_of(WEFT_COMM_OP_ALLGATHERV, me, 0, kase));
  tbuf_upload(s, &send);
  tbuf_init(s, &recv, extent, dtype);
  tbuf_upload(s, &recv);
  for (int p = 0; p < P; p++) want(s, p, counts[me] * send.esize, counts[p] * send.esize);
  WT_CHECK_OK(weft_comm_allgatherv(s->comm, send.op, recv.op, counts, displs, dtype, s->mem));
  want_check(s, WEFT_COMM_OP_ALLGATHERV, what);
  tbuf_download(s, &recv);
  /* Walk the buffer in address order: each gap stays sentinel, each block holds its rank's. */
  size_t at = 0;
  for (int j = 0; j < P; j++) {
    int p = reversed ? P - 1 - j : j;
    check_untouched(s, &recv, at, displs[p], what, "gap before a block");
    check_pattern(s, &recv, dtype, displs[p], counts[p],
                  seed_of(WEFT_COMM_OP_ALLGATHERV, p, 0, kase), what, p);
    at = displs[p] + counts[p];
  }
  check_guard(s, &recv, what);
  tbuf_free(s, &send);
  tbuf_free(s, &recv);
}

static void check_allgather(suite_t *s) {
  static const dcase_t cases[] = {{WEFT_DTYPE_F32, 0},
                                  {WEFT_DTYPE_I32, 1},
                                  {WEFT_DTYPE_BF16, 7},
                                  {WEFT_DTYPE_F16, 5},
                                  {WEFT_DTYPE_I64, 333}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    check_allgather_one(s, cases[c].dtype, cases[c].count);
  if (s->large) check_allgather_one(s, WEFT_DTYPE_F32, (s->large / (size_t)s->size) | 1);

  const int P = s->size;
  size_t counts[MAX_RANKS];
  static const size_t uneven[] = {3, 0, 5, 1}; /* zero counts included */
  for (int p = 0; p < P; p++) counts[p] = uneven[p % 4] + (size_t)(p / 4);
  check_allgatherv_one(s, WEFT_DTYPE_F32, 0, counts, false);
  check_allgatherv_one(s, WEFT_DTYPE_BF16, 1, counts, true);
  for (int p = 0; p < P; p++) counts[p] = 0; /* nothing at all */
  check_allgatherv_one(s, WEFT_DTYPE_I64, 2, counts, false);
  for (int p = 0; p < P; p++) counts[p] = p == P - 1 ? 9 : 0; /* one contributor */
  check_allgatherv_one(s, WEFT_DTYPE_I32, 3, counts, false);
  for (int p = 0; p < P; p++) counts[p] = 7 * (size_t)(p + 1); /* odd, growing */
  check_allgatherv_one(s, WEFT_DTYPE_F16, 4, counts, true);
  if (s->large) {
    for (int p = 0; p < P; p++) counts[p] = s->large / (size_t)P + (size_t)p * 3;
    check_allgatherv_one(s, WEFT_DTYPE_F32, 5, counts, true);
  }
}

/* ---- alltoall and alltoallv ---- */

static void check_alltoall_one(suite_t *s, weft_dtype_t dtype, size_t count) {
  char what[128];
  snprintf(what, sizeof what, "alltoall %s x %zu", weft_dtype_name(dtype), count);
  const int P = s->size, me = s->rank;
  tbuf_t send, recv;
  tbuf_init(s, &send, (size_t)P * count, dtype);
  for (int d = 0; d < P; d++)
    fill_pattern(&send, dtype, (size_t)d * count, count,
                 seed_of(WEFT_COMM_OP_ALLTOALL, me, d, count));
  tbuf_upload(s, &send);
  tbuf_init(s, &recv, (size_t)P * count, dtype);
  tbuf_upload(s, &recv);
  uint64_t bytes = count * send.esize;
  for (int p = 0; p < P; p++) want(s, p, bytes, bytes);
  WT_CHECK_OK(weft_comm_alltoall(s->comm, send.op, recv.op, count, dtype, s->mem));
  want_check(s, WEFT_COMM_OP_ALLTOALL, what);
  tbuf_download(s, &recv);
  tbuf_download(s, &send);
  for (int p = 0; p < P; p++) {
    check_pattern(s, &recv, dtype, (size_t)p * count, count,
                  seed_of(WEFT_COMM_OP_ALLTOALL, p, me, count), what, p);
    check_pattern(s, &send, dtype, (size_t)p * count, count,
                  seed_of(WEFT_COMM_OP_ALLTOALL, me, p, count), "alltoall send buffer unchanged",
                  me);
  }
  check_guard(s, &recv, what);
  tbuf_free(s, &send);
  tbuf_free(s, &recv);
}

/* Elements rank `src` sends to rank `dst` in all-to-all-v case `kase`. */
static size_t a2av_count(const suite_t *s, int kase, int src, int dst) {
  switch (kase) {
  case 0: return (size_t)(src * 2 + dst * 3 + 1) % 5; /* uneven, some zero */
  case 1: return 0;                                   /* nothing at all */
  case 2: return src == dst ? 11 : 0;                 /* only to self: no bytes counted */
  case 3: return src == 0 ? 17 + (size_t)dst : 0;     /* one sender */
  default: return s->large / (size_t)(s->size * s->size) + (size_t)(src + 2 * dst);
  }
}

static void check_alltoallv_one(suite_t *s, weft_dtype_t dtype, int kase) {
  char what[128];
  snprintf(what, sizeof what, "alltoallv %s case %d", weft_dtype_name(dtype), kase);
  const int P = s->size, me = s->rank;
  size_t scounts[MAX_RANKS], sdispls[MAX_RANKS], rcounts[MAX_RANKS], rdispls[MAX_RANKS];
  for (int p = 0; p < P; p++) {
    scounts[p] = a2av_count(s, kase, me, p);
    rcounts[p] = a2av_count(s, kase, p, me);
  }
  /* Send blocks in rank order, receive blocks in reverse order, both with gaps. */
  size_t sextent = layout(P, scounts, false, kase + me, sdispls);
  size_t rextent = layout(P, rcounts, true, kase + 1, rdispls);
  tbuf_t send, recv;
  tbuf_init(s, &send, sextent, dtype);
  for (int p = 0; p < P; p++)
    fill_pattern(&send, dtype, sdispls[p], scounts[p],
                 seed_of(WEFT_COMM_OP_ALLTOALLV, me, p, (uint64_t)kase));
  tbuf_upload(s, &send);
  tbuf_init(s, &recv, rextent, dtype);
  tbuf_upload(s, &recv);
  for (int p = 0; p < P; p++) want(s, p, scounts[p] * send.esize, rcounts[p] * send.esize);
  WT_CHECK_OK(weft_comm_alltoallv(s->comm, send.op, scounts, sdispls, recv.op, rcounts, rdispls,
                                  dtype, s->mem));
  want_check(s, WEFT_COMM_OP_ALLTOALLV, what);
  tbuf_download(s, &recv);
  size_t at = 0;
  for (int j = 0; j < P; j++) {
    int p = P - 1 - j;
    check_untouched(s, &recv, at, rdispls[p], what, "gap before a block");
    check_pattern(s, &recv, dtype, rdispls[p], rcounts[p],
                  seed_of(WEFT_COMM_OP_ALLTOALLV, p, me, (uint64_t)kase), what, p);
    at = rdispls[p] + rcounts[p];
  }
  check_guard(s, &recv, what);
  tbuf_free(s, &send);
  tbuf_free(s, &recv);
}

static void check_alltoall(suite_t *s) {
  static const dcase_t cases[] = {{WEFT_DTYPE_I32, 0},
                                  {WEFT_DTYPE_F32, 1},
                                  {WEFT_DTYPE_BF16, 7},
                                  {WEFT_DTYPE_F16, 3},
                                  {WEFT_DTYPE_I64, 333}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    check_alltoall_one(s, cases[c].dtype, cases[c].count);
  if (s->large) check_alltoall_one(s, WEFT_DTYPE_F32, (s->large / (size_t)s->size) | 1);
  check_alltoallv_one(s, WEFT_DTYPE_F32, 0);
  check_alltoallv_one(s, WEFT_DTYPE_BF16, 0);
  check_alltoallv_one(s, WEFT_DTYPE_I64, 1);
  check_alltoallv_one(s, WEFT_DTYPE_I32, 2);
  check_alltoallv_one(s, WEFT_DTYPE_F16, 3);
  if (s->large) check_alltoallv_one(s, WEFT_DTYPE_F32, 4);
}

/* ---- sendrecv ---- */

/* Ring step `dir` (+1, -1, or 0 for self): each rank sends base + rank elements to
 * rank + dir and receives base + source elements from rank - dir. */
static void check_sendrecv_one(suite_t *s, weft_dtype_t dtype, size_t base, int dir) {
  const int P = s->size, me = s->rank;
  int dest = ((me + dir) % P + P) % P, source = ((me - dir) % P + P) % P;
  size_t scount = base ? base + (size_t)me : 0, rcount = base ? base + (size_t)source : 0;
  char what[128];
  snprintf(what, sizeof what, "sendrecv %s base %zu to %d from %d", weft_dtype_name(dtype), base,
           dest, source);
  tbuf_t send, recv;
  tbuf_init(s, &send, scount, dtype);
  fill_pattern(&send, dtype, 0, scount, seed_of(WEFT_COMM_OP_SENDRECV, me, dest, base));
  tbuf_upload(s, &send);
  tbuf_init(s, &recv, rcount, dtype);
  tbuf_upload(s, &recv);
  want(s, dest, scount * send.esize, 0);
  want(s, source, 0, rcount * send.esize);
  WT_CHECK_OK(
      weft_comm_sendrecv(s->comm, send.op, scount, dest, recv.op, rcount, source, dtype, s->mem));
  want_check(s, WEFT_COMM_OP_SENDRECV, what);
  tbuf_download(s, &recv);
  check_pattern(s, &recv, dtype, 0, rcount, seed_of(WEFT_COMM_OP_SENDRECV, source, me, base), what,
                source);
  check_guard(s, &recv, what);
  tbuf_free(s, &send);
  tbuf_free(s, &recv);
}

static void check_sendrecv(suite_t *s) {
  static const dcase_t cases[] = {
      {WEFT_DTYPE_F32, 0}, {WEFT_DTYPE_I32, 1}, {WEFT_DTYPE_BF16, 6}, {WEFT_DTYPE_I64, 1000}};
  for (int dir = -1; dir <= 1; dir++) {
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
      check_sendrecv_one(s, cases[c].dtype, cases[c].count, dir);
    if (s->large && dir != 0) check_sendrecv_one(s, WEFT_DTYPE_F32, s->large, dir);
  }
}

/* ---- isend / irecv ---- */

#define P2P_TAGS 3
static const int k_p2p_tags[P2P_TAGS] = {0, 7, 32766}; /* 32766: the highest allowed */
static const weft_dtype_t k_p2p_dtypes[P2P_TAGS] = {WEFT_DTYPE_I32, WEFT_DTYPE_BF16,
                                                    WEFT_DTYPE_I64};

static size_t p2p_count(const suite_t *s, int src, int dst, int t) {
  if (t == 2 && s->large && dst == (src + 1) % s->size) return s->large / 8 + (size_t)src;
  return (size_t)(src + 2 * dst + 3 * t) % 6 + (t == 1 ? 100 : 0); /* some zero */
}

/* Every rank sends one message per tag to every rank (itself included), several tags in
 * flight per pair. Receives are posted first in reverse order, sends in forward order, so
 * matching must go by (source, tag), not by posting order. */
static void check_p2p(suite_t *s) {
  const int P = s->size, me = s->rank, n = P * P2P_TAGS;
  tbuf_t *sendb = calloc((size_t)n, sizeof *sendb), *recvb = calloc((size_t)n, sizeof *recvb);
  weft_comm_req_t *sreq = calloc((size_t)n, sizeof *sreq), *rreq = calloc((size_t)n, sizeof *rreq);
  if (!sendb || !recvb || !sreq || !rreq) {
    WT_CHECK(0, "out of memory");
    free(sendb);
    free(recvb);
    free(sreq);
    free(rreq);
    return;
  }
  char what[128];
  for (int k = n - 1; k >= 0; k--) { /* receives, reverse order */
    int peer = k / P2P_TAGS, t = k % P2P_TAGS;
    size_t count = p2p_count(s, peer, me, t);
    tbuf_init(s, &recvb[k], count, k_p2p_dtypes[t]);
    tbuf_upload(s, &recvb[k]);
    snprintf(what, sizeof what, "irecv from %d tag %d x %zu", peer, k_p2p_tags[t], count);
    want(s, peer, 0, count * recvb[k].esize);
    WT_CHECK_OK(weft_comm_irecv(s->comm, recvb[k].op, count, k_p2p_dtypes[t], peer, k_p2p_tags[t],
                                s->mem, &rreq[k]));
    want_check(s, WEFT_COMM_OP_RECV, what);
  }
  for (int k = 0; k < n; k++) { /* sends, forward order */
    int peer = k / P2P_TAGS, t = k % P2P_TAGS;
    size_t count = p2p_count(s, me, peer, t);
    tbuf_init(s, &sendb[k], count, k_p2p_dtypes[t]);
    fill_pattern(&sendb[k], k_p2p_dtypes[t], 0, count,
                 seed_of(WEFT_COMM_OP_SEND, me, peer, (uint64_t)k_p2p_tags[t]));
    tbuf_upload(s, &sendb[k]);
    snprintf(what, sizeof what, "isend to %d tag %d x %zu", peer, k_p2p_tags[t], count);
    want(s, peer, count * sendb[k].esize, 0);
    WT_CHECK_OK(weft_comm_isend(s->comm, sendb[k].op, count, k_p2p_dtypes[t], peer, k_p2p_tags[t],
                                s->mem, &sreq[k]));
    want_check(s, WEFT_COMM_OP_SEND, what);
  }
  WT_CHECK_OK(weft_comm_waitall(rreq, n)); /* receives first: sends complete in the background */
  for (int k = 0; k < n; k++) WT_CHECK_OK(weft_comm_wait(&sreq[k]));
  WT_CHECK_OK(weft_comm_waitall(rreq, n)); /* all cleaned up: a second waitall has nothing */
  for (int k = 0; k < n; k++) {
    int peer = k / P2P_TAGS, t = k % P2P_TAGS;
    snprintf(what, sizeof what, "irecv from %d tag %d", peer, k_p2p_tags[t]);
    tbuf_download(s, &recvb[k]);
    check_pattern(s, &recvb[k], k_p2p_dtypes[t], 0, recvb[k].elems,
                  seed_of(WEFT_COMM_OP_SEND, peer, me, (uint64_t)k_p2p_tags[t]), what, peer);
    check_guard(s, &recvb[k], what);
    tbuf_free(s, &recvb[k]);
    tbuf_free(s, &sendb[k]);
  }
  free(sendb);
  free(recvb);
  free(sreq);
  free(rreq);
}

/* ---- NULL buffers with zero counts are valid ---- */

static void check_null_zero(suite_t *s) {
  size_t zeros[MAX_RANKS] = {0};
  WT_CHECK_OK(weft_comm_bcast(s->comm, NULL, 0, WEFT_DTYPE_F32, 0, s->mem));
  want_check(s, WEFT_COMM_OP_BCAST, "bcast NULL x 0");
  WT_CHECK_OK(
      weft_comm_allreduce(s->comm, NULL, NULL, 0, WEFT_DTYPE_BF16, WEFT_REDUCE_SUM, s->mem));
  want_check(s, WEFT_COMM_OP_ALLREDUCE, "allreduce NULL x 0");
  WT_CHECK_OK(weft_comm_allgather(s->comm, NULL, NULL, 0, WEFT_DTYPE_I32, s->mem));
  want_check(s, WEFT_COMM_OP_ALLGATHER, "allgather NULL x 0");
  WT_CHECK_OK(weft_comm_allgatherv(s->comm, NULL, NULL, zeros, zeros, WEFT_DTYPE_I32, s->mem));
  want_check(s, WEFT_COMM_OP_ALLGATHERV, "allgatherv NULL x 0");
  WT_CHECK_OK(weft_comm_alltoall(s->comm, NULL, NULL, 0, WEFT_DTYPE_I64, s->mem));
  want_check(s, WEFT_COMM_OP_ALLTOALL, "alltoall NULL x 0");
  WT_CHECK_OK(
      weft_comm_alltoallv(s->comm, NULL, zeros, zeros, NULL, zeros, zeros, WEFT_DTYPE_I64, s->mem));
  want_check(s, WEFT_COMM_OP_ALLTOALLV, "alltoallv NULL x 0");
  int next = (s->rank + 1) % s->size, prev = (s->rank + s->size - 1) % s->size;
  WT_CHECK_OK(weft_comm_sendrecv(s->comm, NULL, 0, next, NULL, 0, prev, WEFT_DTYPE_F32, s->mem));
  want_check(s, WEFT_COMM_OP_SENDRECV, "sendrecv NULL x 0");
  weft_comm_req_t reqs[2];
  WT_CHECK_OK(weft_comm_irecv(s->comm, NULL, 0, WEFT_DTYPE_F32, prev, 3, s->mem, &reqs[0]));
  want_check(s, WEFT_COMM_OP_RECV, "irecv NULL x 0");
  WT_CHECK_OK(weft_comm_isend(s->comm, NULL, 0, WEFT_DTYPE_F32, next, 3, s->mem, &reqs[1]));
  want_check(s, WEFT_COMM_OP_SEND, "isend NULL x 0");
  WT_CHECK_OK(weft_comm_waitall(reqs, 2));
}

/* ---- cumulative counters ---- */

static void check_totals(suite_t *s) {
  const weft_comm_peer_bytes_t *total = weft_comm_total_bytes(s->comm);
  for (int p = 0; p < s->size; p++)
    WT_CHECK(total[p].sent == s->want_total[p].sent && total[p].recv == s->want_total[p].recv,
             "%s: total bytes with peer %d are sent %llu recv %llu, expected %llu %llu", s->label,
             p, (unsigned long long)total[p].sent, (unsigned long long)total[p].recv,
             (unsigned long long)s->want_total[p].sent, (unsigned long long)s->want_total[p].recv);
  for (int op = 0; op < WEFT_COMM_OP_COUNT; op++) {
    weft_comm_op_stats_t got = weft_comm_op_stats(s->comm, (weft_comm_op_t)op);
    const weft_comm_op_stats_t *exp = &s->want_ops[op];
    const char *name = weft_comm_op_name((weft_comm_op_t)op);
    WT_CHECK(got.calls == exp->calls, "%s: %s calls %llu, expected %llu", s->label, name,
             (unsigned long long)got.calls, (unsigned long long)exp->calls);
    WT_CHECK(got.bytes_sent == exp->bytes_sent && got.bytes_recv == exp->bytes_recv,
             "%s: %s bytes sent %llu recv %llu, expected %llu %llu", s->label, name,
             (unsigned long long)got.bytes_sent, (unsigned long long)got.bytes_recv,
             (unsigned long long)exp->bytes_sent, (unsigned long long)exp->bytes_recv);
    WT_CHECK(got.seconds >= 0.0 && (exp->calls > 0 || got.seconds == 0.0),
             "%s: %s seconds %g with %llu calls", s->label, name, got.seconds,
             (unsigned long long)got.calls);
  }
  weft_comm_stats_reset(s->comm);
  const weft_comm_peer_bytes_t *last = weft_comm_last_bytes(s->comm);
  for (int p = 0; p < s->size; p++)
    WT_CHECK(total[p].sent == 0 && total[p].recv == 0 && last[p].sent == 0 && last[p].recv == 0,
             "%s: counters with peer %d not cleared by weft_comm_stats_reset", s->label, p);
  for (int op = 0; op < WEFT_COMM_OP_COUNT; op++) {
    weft_comm_op_stats_t got = weft_comm_op_stats(s->comm, (weft_comm_op_t)op);
    WT_CHECK(got.calls == 0 && got.bytes_sent == 0 && got.bytes_recv == 0 && got.seconds == 0.0,
             "%s: %s statistics not cleared by weft_comm_stats_reset", s->label,
             weft_comm_op_name((weft_comm_op_t)op));
  }
}

void comm_suite_run(weft_comm_t *comm, weft_mem_t mem, size_t large, const char *label) {
  suite_t *s = calloc(1, sizeof *s);
  if (!s) {
    WT_CHECK(0, "out of memory");
    return;
  }
  s->comm = comm;
  s->device = weft_comm_device(comm);
  s->mem = mem;
  s->rank = weft_comm_rank(comm);
  s->size = weft_comm_size(comm);
  s->large = large;
  s->label = label;
  if (s->size > MAX_RANKS) {
    WT_CHECK(0, "%s: the suite supports up to %d ranks, not %d", label, MAX_RANKS, s->size);
    free(s);
    return;
  }
  weft_comm_stats_reset(comm); /* expectations start from zero */
  check_barrier(s);
  check_bcast(s);
  check_allreduce(s);
  check_allgather(s);
  check_alltoall(s);
  check_sendrecv(s);
  check_p2p(s);
  /* NULL with count 0 is valid everywhere; on a GPU it would reach NCCL or cudaMemcpy with a
   * NULL pointer, which the contract allows but this suite does not want to depend on. */
  if (mem == WEFT_MEM_HOST || s->device->kind == WEFT_DEVICE_CPU) check_null_zero(s);
  check_totals(s);
  free(s);
}

/* ---- invalid arguments ---- */

void comm_suite_invalid_args(weft_comm_t *comm, weft_mem_t mem) {
  const int P = weft_comm_size(comm), me = weft_comm_rank(comm);
  const weft_status_t bad = WEFT_ERR_INVALID_ARG;
  float one[4] = {1, 2, 3, 4};
  float many[4 * MAX_RANKS];
  size_t counts[MAX_RANKS], displs[MAX_RANKS];
  for (int p = 0; p < P; p++) {
    counts[p] = 1;
    displs[p] = (size_t)p;
  }
  const size_t huge = (size_t)INT32_MAX + 1; /* refused before the buffer is touched */

  WT_CHECK_STATUS(weft_comm_bcast(comm, one, 4, WEFT_DTYPE_F32, -1, mem), bad);
  WT_CHECK_STATUS(weft_comm_bcast(comm, one, 4, WEFT_DTYPE_F32, P, mem), bad);
  WT_CHECK_STATUS(weft_comm_bcast(comm, NULL, 4, WEFT_DTYPE_F32, 0, mem), bad);
  WT_CHECK_STATUS(weft_comm_bcast(comm, one, huge, WEFT_DTYPE_F32, 0, mem), WEFT_ERR_UNSUPPORTED);

  WT_CHECK_STATUS(weft_comm_allreduce(comm, NULL, one, 4, WEFT_DTYPE_F32, WEFT_REDUCE_SUM, mem),
                  bad);
  WT_CHECK_STATUS(weft_comm_allreduce(comm, one, NULL, 4, WEFT_DTYPE_F32, WEFT_REDUCE_SUM, mem),
                  bad);
  WT_CHECK_STATUS(weft_comm_allreduce(comm, one, one, 4, WEFT_DTYPE_F16, WEFT_REDUCE_SUM, mem),
                  WEFT_ERR_UNSUPPORTED);

  WT_CHECK_STATUS(weft_comm_allgather(comm, NULL, many, 1, WEFT_DTYPE_F32, mem), bad);
  WT_CHECK_STATUS(weft_comm_allgather(comm, one, NULL, 1, WEFT_DTYPE_F32, mem), bad);
  WT_CHECK_STATUS(weft_comm_allgatherv(comm, one, NULL, counts, displs, WEFT_DTYPE_F32, mem), bad);
  WT_CHECK_STATUS(weft_comm_allgatherv(comm, NULL, many, counts, displs, WEFT_DTYPE_F32, mem), bad);
  WT_CHECK_STATUS(weft_comm_allgatherv(comm, one, many, NULL, displs, WEFT_DTYPE_F32, mem), bad);
  WT_CHECK_STATUS(weft_comm_allgatherv(comm, one, many, counts, NULL, WEFT_DTYPE_F32, mem), bad);

  WT_CHECK_STATUS(weft_comm_alltoall(comm, NULL, many, 1, WEFT_DTYPE_F32, mem), bad);
  WT_CHECK_STATUS(weft_comm_alltoall(comm, many, NULL, 1, WEFT_DTYPE_F32, mem), bad);
  WT_CHECK_STATUS(
      weft_comm_alltoallv(comm, NULL, counts, displs, many, counts, displs, WEFT_DTYPE_F32, mem),
      bad);
  WT_CHECK_STATUS(
      weft_comm_alltoallv(comm, many, NULL, displs, many, counts, displs, WEFT_DTYPE_F32, mem),
      bad);
  WT_CHECK_STATUS(
      weft_comm_alltoallv(comm, many, counts, NULL, many, counts, displs, WEFT_DTYPE_F32, mem),
      bad);
  WT_CHECK_STATUS(
      weft_comm_alltoallv(comm, many, counts, displs, many, NULL, displs, WEFT_DTYPE_F32, mem),
      bad);
  WT_CHECK_STATUS(
      weft_comm_alltoallv(comm, many, counts, displs, many, counts, NULL, WEFT_DTYPE_F32, mem),
      bad);

  WT_CHECK_STATUS(weft_comm_sendrecv(comm, one, 1, P, one, 1, 0, WEFT_DTYPE_F32, mem), bad);
  WT_CHECK_STATUS(weft_comm_sendrecv(comm, one, 1, 0, one, 1, -1, WEFT_DTYPE_F32, mem), bad);
  WT_CHECK_STATUS(weft_comm_sendrecv(comm, NULL, 1, 0, one, 1, 0, WEFT_DTYPE_F32, mem), bad);
  WT_CHECK_STATUS(weft_comm_sendrecv(comm, one, 1, 0, NULL, 1, 0, WEFT_DTYPE_F32, mem), bad);

  /* A refused post leaves the request inactive: waiting on it is an error, not a hang. */
  weft_comm_req_t req;
  WT_CHECK_STATUS(weft_comm_isend(comm, one, 1, WEFT_DTYPE_F32, -1, 0, mem, &req), bad);
  WT_CHECK_STATUS(weft_comm_wait(&req), bad);
  WT_CHECK_STATUS(weft_comm_isend(comm, one, 1, WEFT_DTYPE_F32, P, 0, mem, &req), bad);
  WT_CHECK_STATUS(weft_comm_isend(comm, one, 1, WEFT_DTYPE_F32, 0, -1, mem, &req), bad);
  WT_CHECK_STATUS(weft_comm_isend(comm, one, 1, WEFT_DTYPE_F32, 0, 32767, mem, &req), bad);
  WT_CHECK_STATUS(weft_comm_isend(comm, NULL, 1, WEFT_DTYPE_F32, 0, 0, mem, &req), bad);
  WT_CHECK_STATUS(weft_comm_irecv(comm, one, 1, WEFT_DTYPE_F32, -1, 0, mem, &req), bad);
  WT_CHECK_STATUS(weft_comm_irecv(comm, one, 1, WEFT_DTYPE_F32, 0, -5, mem, &req), bad);
  WT_CHECK_STATUS(weft_comm_irecv(comm, NULL, 1, WEFT_DTYPE_F32, 0, 0, mem, &req), bad);
  WT_CHECK_STATUS(weft_comm_waitall(&req, 1), WEFT_OK); /* waitall skips inactive requests */
  WT_CHECK_STATUS(weft_comm_waitall(NULL, 0), WEFT_OK);

  weft_comm_t *child = NULL;
  WT_CHECK_STATUS(weft_comm_split(comm, -1, me, "bad", &child), bad);
  WT_CHECK(child == NULL, "failed split must not return a communicator");

  WT_CHECK(weft_comm_world_rank_of(comm, -1) == -1 && weft_comm_world_rank_of(comm, P) == -1,
           "world_rank_of out of range must be -1");
  WT_CHECK(strcmp(weft_comm_op_name(WEFT_COMM_OP_COUNT), "unknown") == 0, "unknown op name");
  weft_comm_op_stats_t none = weft_comm_op_stats(comm, WEFT_COMM_OP_COUNT);
  WT_CHECK(none.calls == 0 && none.bytes_sent == 0, "stats of an unknown op are zero");
  double timeout = weft_comm_timeout(comm);
  weft_comm_set_timeout(comm, 0.0);
  weft_comm_set_timeout(comm, -3.0);
  WT_CHECK(weft_comm_timeout(comm) == timeout, "non-positive timeouts must be ignored");

  /* Nothing was left half-posted: the communicator still works. */
  WT_CHECK_OK(weft_comm_barrier(comm));
  int32_t v = me + 1, sum = 0;
  WT_CHECK_OK(
      weft_comm_allreduce(comm, &v, &sum, 1, WEFT_DTYPE_I32, WEFT_REDUCE_SUM, WEFT_MEM_HOST));
  WT_CHECK(sum == P * (P + 1) / 2, "allreduce after invalid calls: %d", (int)sum);
}
