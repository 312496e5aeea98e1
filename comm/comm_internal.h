/* Private to comm/: the communicator struct and the helpers shared by its source files. */
#ifndef WEFT_COMM_INTERNAL_H
#define WEFT_COMM_INTERNAL_H

#include <mpi.h>
#include <stdbool.h>

#include "weft/comm.h"

struct weft_comm {
  MPI_Comm mpi; /* a duplicate: weft's traffic never matches a user's messages */
  char name[32];
  int rank, size;
  const weft_device_t *device; /* borrowed from the bootstrap */
  bool gpu_shared;             /* ranks share a GPU: NCCL is impossible, stage instead */
  int *world_ranks;            /* [size] */
  double timeout_s;
  bool broken;         /* a collective timed out and could not be cancelled */
  uint64_t call_count; /* operations issued, for error messages */

  weft_comm_peer_bytes_t *last;  /* [size] bytes of the current/latest operation */
  weft_comm_peer_bytes_t *total; /* [size] cumulative */
  weft_comm_op_stats_t ops[WEFT_COMM_OP_COUNT];

  int *counts_a, *counts_b, *displs_a, *displs_b; /* [size] int scratch for the v-collectives */

  /* Pinned host staging for device buffers when NCCL is not used; grown, never shrunk. */
  void *stage_send, *stage_recv;
  size_t stage_send_bytes, stage_recv_bytes;

  void *nccl;            /* ncclComm_t when the communicator has one */
  weft_stream_t *stream; /* stream of NCCL operations */
};

/* Converts a weft dtype to the MPI datatype used to move it (bf16/f16 move as uint16). */
MPI_Datatype weft_comm_mpi_type(weft_dtype_t dtype);
/* MPI's message for an error code (static buffer; comm/ is the only caller). */
const char *weft_mpi_error_string(int code);

/* Bracket every operation: begin checks the communicator is usable and clears the per-peer
 * counters of the "last operation"; end adds them to the totals and the op statistics. */
weft_status_t weft_comm_op_begin(weft_comm_t *comm, weft_comm_op_t op, double *t0_p);
void weft_comm_op_end(weft_comm_t *comm, weft_comm_op_t op, double t0);
void weft_comm_count(weft_comm_t *comm, int peer, uint64_t sent, uint64_t recv);

/* Checks that `count` elements fit MPI's int counts. */
weft_status_t weft_comm_check_count(const weft_comm_t *comm, weft_comm_op_t op, size_t count);

/* Polls MPI requests until all complete or the communicator's deadline passes. `peer` (or
 * -1) names the peer in the timeout message. On timeout, requests that MPI can cancel
 * (receives) are cancelled; otherwise the communicator is marked broken. */
weft_status_t weft_comm_wait_mpi(weft_comm_t *comm, MPI_Request *reqs, int count, weft_comm_op_t op,
                                 int peer, bool cancellable);

/* The blocks of an all-gather(v) or one side of an all-to-all(v): either `uniform` elements
 * per rank at rank * uniform, or explicit counts and displacements (elements). */
typedef struct weft_comm_blocks {
  size_t uniform;
  const size_t *counts, *displs; /* NULL when uniform */
} weft_comm_blocks_t;

static inline size_t weft_comm_block_count(const weft_comm_blocks_t *b, int p) {
  return b->counts ? b->counts[p] : b->uniform;
}
static inline size_t weft_comm_block_displ(const weft_comm_blocks_t *b, int p) {
  return b->displs ? b->displs[p] : (size_t)p * b->uniform;
}

/* true when a buffer lives in GPU memory (a DEVICE buffer on a CUDA communicator). */
bool weft_comm_on_gpu(const weft_comm_t *comm, weft_mem_t mem);
/* Grows the pinned staging buffers to at least these sizes. */
weft_status_t weft_comm_stage_reserve(weft_comm_t *comm, size_t send_bytes, size_t recv_bytes);

#if WEFT_HAVE_CUDA
/* comm_nccl.c: NCCL communicators and the device-buffer operations that use them. */
weft_status_t weft_comm_nccl_init(weft_comm_t *comm);
weft_status_t weft_comm_nccl_split(weft_comm_t *parent, int color, int key, weft_comm_t *child);
void weft_comm_nccl_destroy(weft_comm_t *comm);
weft_status_t weft_comm_nccl_bcast(weft_comm_t *comm, void *buf, size_t count, weft_dtype_t dtype,
                                   int root);
weft_status_t weft_comm_nccl_allreduce(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                       size_t count, weft_dtype_t dtype, weft_reduce_op_t op);
weft_status_t weft_comm_nccl_allgather(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                       const weft_comm_blocks_t *recv, weft_dtype_t dtype);
weft_status_t weft_comm_nccl_alltoall(weft_comm_t *comm, const void *sendbuf,
                                      const weft_comm_blocks_t *send, void *recvbuf,
                                      const weft_comm_blocks_t *recv, weft_dtype_t dtype);
weft_status_t weft_comm_nccl_sendrecv(weft_comm_t *comm, const void *sendbuf, size_t sendcount,
                                      int dest, void *recvbuf, size_t recvcount, int source,
                                      weft_dtype_t dtype);
#endif

#endif /* WEFT_COMM_INTERNAL_H */
