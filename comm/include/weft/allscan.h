/* All-Scan: a pipelined, order-respecting scan across the ranks of a communicator
 * (ZeCO, arXiv 2507.01004; design.md section 5).
 *
 * Every rank p holds a buffer x_p of `count` elements. The buffer is cut into K blocks; for
 * each block in turn rank p receives the running result y_{p-1} from its predecessor,
 * combines it with its own contribution, y_p = combine(y_{p-1}, x_p), and sends y_p to its
 * successor while the next block is already in flight. The latency is about
 * tau(S) * (1 + (P-1)/K) instead of P * tau(S) for the unpipelined hop-by-hop scan, and
 * every rank sends and receives at most one full buffer.
 *
 * The combine need not be commutative: results respect rank order. Direction FORWARD scans
 * 0 -> P-1 (predecessor p-1), REVERSE scans P-1 -> 0 (predecessor p+1). INCLUSIVE gives
 * y_p (own contribution included); EXCLUSIVE gives y_{p-1}, what arrived from the
 * predecessor, with the first rank of the scan getting the identity that `init` writes.
 *
 * The combine works on one block at a time: it receives the block's element range so it can
 * index per-element parameters (for linear attention, the row-wise decay Gamma_p). */
#ifndef WEFT_ALLSCAN_H
#define WEFT_ALLSCAN_H

#include <stddef.h>

#include "weft/comm.h"
#include "weft/status.h"

typedef enum weft_allscan_direction {
  WEFT_ALLSCAN_FORWARD = 0, /* rank 0 first */
  WEFT_ALLSCAN_REVERSE = 1, /* rank P-1 first */
} weft_allscan_direction_t;

typedef enum weft_allscan_kind {
  WEFT_ALLSCAN_INCLUSIVE = 0,
  WEFT_ALLSCAN_EXCLUSIVE = 1,
} weft_allscan_kind_t;

/* result[0..len) = combine(incoming[0..len), local[0..len)) for the block that starts at
 * element `offset` of the buffer. `result` may alias `local`. Buffers are in the memory the
 * scan was called with (host, or the communicator's device). Returns a status; an error
 * ends the scan on this rank, which still drains what its predecessor sends (so ranks before
 * it finish), while the ranks after it time out (WEFT_COMM_TIMEOUT_S) instead of hanging. */
typedef weft_status_t (*weft_allscan_combine_fn)(void *user, size_t offset, size_t len,
                                                 const void *incoming, const void *local,
                                                 void *result);

typedef struct weft_allscan_op {
  weft_dtype_t dtype;
  weft_allscan_combine_fn combine;
  void *user;
} weft_allscan_op_t;

/* Chooses K from the buffer size and the link's latency/bandwidth: the block count that
 * minimises (K + P - 1) * (alpha + bytes / (K * beta)), i.e. K = sqrt((P-1) * bytes /
 * (alpha * beta)), clamped to [1, count]. alpha_s: latency in seconds; beta: bytes/s. */
size_t weft_allscan_auto_blocks(size_t bytes, size_t count, int ranks, double alpha_s,
                                double beta_bytes_per_s);

/* Runs the scan. [in] local [count]: this rank's contribution. [out] result [count]: the
 * inclusive or exclusive scan value (may alias local). blocks: K >= 1 (0 = automatic from a
 * default alpha/beta model). For EXCLUSIVE the first rank's result is zero-filled (the
 * identity of the linear-attention combine; callers with another identity overwrite it).
 * Byte counters: each rank sends at most `count` elements to its successor and receives at
 * most `count` from its predecessor. Collective over `comm`. */
weft_status_t weft_allscan(weft_comm_t *comm, const void *local, void *result, size_t count,
                           const weft_allscan_op_t *op, weft_allscan_direction_t direction,
                           weft_allscan_kind_t kind, size_t blocks, weft_mem_t mem);

#endif /* WEFT_ALLSCAN_H */
