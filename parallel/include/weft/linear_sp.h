/* Sequence-parallel gated linear attention (design.md section 5; docs/linear-attention.md).
 *
 * The ranks of an sp communicator hold contiguous pieces of one sequence (rank p holds tokens
 * [start_p, start_p + n_p); n_p may differ between ranks and may be 0). Each rank computes its
 * local outputs and local end state with no communication (weft_gla_forward_local), the ranks
 * hand the [dk, dv] states along with one of three algorithms, and each rank corrects its
 * outputs with the state that enters it (weft_gla_forward_correct). Backward runs the same
 * hand-off in reverse on the state gradient, then computes dq, dk, dv, dg locally.
 *
 *   ZECO   All-Scan (comm/include/weft/allscan.h): the state is cut into K blocks that
 *          pipeline through the ranks; one state sent and received per rank per direction
 *          (the last rank sends none forward, the first none backward).
 *   LASP2  one all-gather of every rank's (S_local, log Gamma); each rank folds the prefix
 *          (forward) or suffix (backward) it needs locally. (P-1) states received per rank.
 *   RING   the hop-by-hop scan with the whole state, unpipelined (LASP-1): latency P * tau(S).
 *
 * A plan is created once per (communicator, context, local shape, algorithm) and reused; all
 * workspace is allocated at creation, so forward and backward allocate nothing (the All-Scan
 * collective and the kernels' grow-once context workspaces aside).
 *
 * Memory: every tensor argument is in the memory of the kernel context's device (host memory
 * on the CPU device). The state hand-off itself runs on host buffers: on a CUDA device the
 * [B,H,dk,dv] states (not the activations) are staged through pinned host memory, because the
 * All-Scan combine needs a row-wise decay and there is no device combine kernel yet. On the CPU
 * device nothing is staged.
 *
 * Overlap (zeco): the (batch, head) pairs are cut into a few units whose states are
 * consecutive in the buffer (head groups, or batch ranges when B is large; batch ranges only
 * on CUDA, whose kernels take whole heads). The local kernel runs unit after unit and a
 * progress thread runs each finished unit's All-Scan while the next unit computes; the
 * correction (forward) or the gradient kernel (backward) of a unit runs as soon as its scan
 * is in. Only the first unit's scan stays exposed. Results and bytes are those of the
 * one-after-another pass (the same arithmetic per element). Used when there are at least two
 * units and two ranks and MPI grants MPI_THREAD_SERIALIZED or more; lasp2 and ring never
 * overlap (they are the baselines).
 *
 * Zigzag (weft_linear_sp_plan_create_zigzag): the layout softmax attention uses for causal
 * balance (docs/model.md). The sequence is cut into 2P chunks of c tokens and rank r holds
 * chunks r and 2P-1-r, each batch row of its [B, 2c, H, d] tensors being chunk r then chunk
 * 2P-1-r (its two "pieces"). The kernels run on that memory as [2B, c, H, d] (batch index
 * 2b + piece), so no activation is copied (the states are reordered piece-major on their
 * way to the host, on the CPU device too). The state runs along chunk order 0..2P-1, i.e. through
 * the first pieces of ranks 0..P-1 and then the second pieces of ranks P-1..0 (rank P-1
 * hands its first piece's end state to its second piece locally); the state gradient runs
 * the other way. Per pass (forward or backward), with S = B*H*dk*dv*4 bytes and
 * G = B*H*dk*4 bytes:
 *   ZECO   an All-Scan of the first-visited pieces (forward) and one of the other pieces
 *          (reverse): rank r sends S to r+1 (r < P-1) and S to r-1 (r > 0), and receives
 *          the same from each neighbour; latency about 2 tau(S) (1 + (P-1)/K).
 *   LASP2  one all-gather of both pieces' (S_local, log Gamma): rank r sends 2(S + G) to
 *          each other rank and receives 2(S + G) from each, (P-1) 2(S + G) in all.
 *   RING   the same messages as ZECO, hop by hop: 2(P-1) sequential hops of tau(S).
 * Zigzag plans never overlap the hand-off with the compute (weft_linear_sp_plan_set_overlap
 * has no effect on them): each unit of the overlapped passes would need both scans and the
 * turn at rank P-1; left undone until a measurement asks for it.
 *
 * Rejected: keeping log Gamma from the forward inside the plan for the backward (the backward
 * would then silently depend on the last forward call's inputs); it is recomputed from g by one
 * batched GEMM with a ones vector (sum over tokens), which costs one pass over g. */
#ifndef WEFT_LINEAR_SP_H
#define WEFT_LINEAR_SP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/comm.h"
#include "weft/kernel_ctx.h"
#include "weft/linear_attention.h"
#include "weft/status.h"

typedef enum weft_linear_sp_algo {
  WEFT_LINEAR_SP_ZECO = 0,
  WEFT_LINEAR_SP_LASP2 = 1,
  WEFT_LINEAR_SP_RING = 2,
} weft_linear_sp_algo_t;

typedef struct weft_linear_sp_plan weft_linear_sp_plan_t;

/* "zeco", "lasp2", "ring". */
const char *weft_linear_sp_algo_name(weft_linear_sp_algo_t algo);
/* Parses one of the names above; WEFT_ERR_INVALID_ARG (not logged) otherwise. */
weft_status_t weft_linear_sp_algo_parse(const char *text, weft_linear_sp_algo_t *algo_p);

/* Creates a plan. Not collective (no communication), but every rank of `sp` creates one with
 * the same algorithm and the same B, H, dk, dv (tokens may differ).
 * [in] sp: the sequence-parallel communicator; rank order is sequence order. Borrowed.
 * [in] ctx: kernel context on the communicator's device. Borrowed.
 * [in] local_shape: B, H, dk, dv, chunk and scale as for the kernels; tokens = this rank's
 *      token count n_p (>= 0). Copied.
 * [in] algo: ZECO, LASP2 or RING.
 * [in] scan_blocks: All-Scan block count K for ZECO (0 = automatic); ignored by the others.
 * [out] plan_p: the plan; destroy with weft_linear_sp_plan_destroy.
 * Errors: WEFT_ERR_INVALID_ARG (NULL arguments, non-positive B/H/dk/dv, negative tokens,
 * unknown algo, ctx and comm on different devices), WEFT_ERR_NO_MEMORY. */
weft_status_t weft_linear_sp_plan_create(weft_comm_t *sp, weft_kernel_ctx_t *ctx,
                                         const weft_gla_shape_t *local_shape,
                                         weft_linear_sp_algo_t algo, size_t scan_blocks,
                                         weft_linear_sp_plan_t **plan_p);

/* Creates a zigzag plan (see "Zigzag" above). Not collective; every rank of `sp` creates one
 * with the same algorithm and the same local shape.
 * [in] sp, ctx, algo, scan_blocks: as for weft_linear_sp_plan_create; rank r holds chunks r
 *      and 2P-1-r of 2P.
 * [in] local_shape: B, H, dk, dv, chunk, scale as for the kernels; tokens = n = 2c, the two
 *      pieces of c tokens, the same on every rank (0 allowed). Copied.
 * [out] plan_p: destroy with weft_linear_sp_plan_destroy. Forward and backward take the same
 *      tensors as a contiguous plan, except s_in, which is [B,2,H,dk,dv] (the state entering
 *      each piece), and final_state, which is written by rank 0 (it holds the last chunk).
 * Errors: those of weft_linear_sp_plan_create, and WEFT_ERR_INVALID_ARG for odd tokens. */
weft_status_t weft_linear_sp_plan_create_zigzag(weft_comm_t *sp, weft_kernel_ctx_t *ctx,
                                                const weft_gla_shape_t *local_shape,
                                                weft_linear_sp_algo_t algo, size_t scan_blocks,
                                                weft_linear_sp_plan_t **plan_p);
void weft_linear_sp_plan_destroy(weft_linear_sp_plan_t *plan);

/* zeco only: run the All-Scan behind the compute (the default, true) or after it (false, for
 * measuring what the overlap hides). Every rank of the communicator must choose the same.
 * No effect on zigzag plans, which never overlap. */
void weft_linear_sp_plan_set_overlap(weft_linear_sp_plan_t *plan, bool overlap);

/* Where the state hand-off's time went, summed over forward and backward calls since creation
 * or the last reset. scan_s: wall time inside the hand-off (for overlapped zeco, the progress
 * thread's scans); exposed_s: the part the calling thread waited for, i.e. what the overlap
 * did not hide (equal to scan_s without overlap). */
typedef struct weft_linear_sp_stats {
  uint64_t passes; /* forward and backward calls */
  double scan_s;
  double exposed_s;
} weft_linear_sp_stats_t;
weft_linear_sp_stats_t weft_linear_sp_plan_stats(const weft_linear_sp_plan_t *plan);
void weft_linear_sp_plan_stats_reset(weft_linear_sp_plan_t *plan);

/* The local shape the plan was created with (zigzag: tokens = 2c, both pieces). */
const weft_gla_shape_t *weft_linear_sp_plan_shape(const weft_linear_sp_plan_t *plan);
weft_linear_sp_algo_t weft_linear_sp_plan_algo(const weft_linear_sp_plan_t *plan);

/* Forward. Collective over the plan's communicator.
 * [in]  q, k, g [B,n,H,dk]; v [B,n,H,dv]: this rank's tokens (g <= 0)
 * [out] out [B,n,H,dv]: outputs of this rank's tokens, including the previous ranks' history
 * [out] s_in [B,H,dk,dv]: the state entering this rank (zero on rank 0); keep it for backward.
 *       Zigzag: [B,2,H,dk,dv], the state entering each of the rank's two pieces.
 * [out] final_state [B,H,dk,dv] or NULL: the state after the whole sequence. Written on the
 *       LAST rank of the communicator only (zigzag: on rank 0, which holds the last chunk);
 *       other ranks leave it untouched (broadcasting it would cost every algorithm one more
 *       state on the wire).
 * On return the results are complete (the context's stream has been synchronised). */
weft_status_t weft_linear_sp_forward(weft_linear_sp_plan_t *plan, const float *q, const float *k,
                                     const float *v, const float *g, float *out, float *s_in,
                                     float *final_state);

/* Backward of L = sum <dout, out> (the final state does not feed the loss). Collective.
 * [in]  q, k, g [B,n,H,dk]; v, dout [B,n,H,dv]; s_in [B,H,dk,dv] from the forward
 *       (zigzag: [B,2,H,dk,dv])
 * [out] dq, dk, dg [B,n,H,dk]; dv [B,n,H,dv] */
weft_status_t weft_linear_sp_backward(weft_linear_sp_plan_t *plan, const float *q, const float *k,
                                      const float *v, const float *g, const float *dout,
                                      const float *s_in, float *dq, float *dk, float *dv,
                                      float *dg);

#endif /* WEFT_LINEAR_SP_H */
