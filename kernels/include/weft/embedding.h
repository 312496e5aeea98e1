/* Token embedding lookup and its gradient, CPU and CUDA, f32.
 *
 *   forward   y[t, :] = table[ids[t], :]                       table [V, d], ids [n] int32
 *   backward  dtable[ids[t], :] += dy[t, :]  for every t
 * The backward must be deterministic (bitwise the same for a fixed input on a given device):
 * the rows of a token id are added in increasing t, never with float atomics. (CUDA: one thread
 * per (row of dtable, column) would scan all n ids; a sort of (id, t) pairs or a per-id list
 * built by the caller is the usual way: implementations choose, the contract is the order.)
 * An id outside 0..V-1 is WEFT_ERR_INVALID_ARG on the CPU (checked) and must be prevented by the
 * caller on CUDA (ids are checked on the host by the data loader, a byte vocabulary of 256); the
 * CUDA kernels still never access memory out of bounds: such a token gets a zero row in the
 * forward and adds nothing in the backward. On the CPU all ids are checked before any write.
 * Errors: WEFT_ERR_INVALID_ARG (NULL pointers of non-empty tensors, n < 0, V < 1, d < 1),
 * WEFT_ERR_DEVICE. */
#ifndef WEFT_EMBEDDING_H
#define WEFT_EMBEDDING_H

#include <stdint.h>

#include "weft/kernel_ctx.h"
#include "weft/status.h"

/* [in] table [V, d], ids [n]  [out] y [n, d] */
weft_status_t weft_embedding_forward(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t vocab,
                                     int64_t dim, const float *table, const int32_t *ids, float *y);
/* [in] ids [n], dy [n, d]  [in,out] dtable [V, d] (added to) */
weft_status_t weft_embedding_backward(weft_kernel_ctx_t *ctx, int64_t tokens, int64_t vocab,
                                      int64_t dim, const int32_t *ids, const float *dy,
                                      float *dtable);

#endif /* WEFT_EMBEDDING_H */
