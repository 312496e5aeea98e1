/* weft_comm: a communicator over a group of ranks, for host and device buffers.
 *
 * Wraps a (duplicated) MPI communicator and, when the CUDA backend runs with one GPU per
 * rank, an NCCL communicator over the same ranks. Host buffers always go through MPI.
 * Device buffers go through NCCL when the communicator has one, otherwise through pinned
 * host staging over MPI (Debian's Open MPI is not CUDA-aware; ranks sharing a GPU cannot use
 * NCCL). On the CPU device, device buffers are host buffers.
 *
 * Deadlines: every blocking wait polls with a deadline of WEFT_COMM_TIMEOUT_S seconds
 * (weft_comm_set_timeout overrides it per communicator). On expiry the call returns
 * WEFT_ERR_TIMEOUT and logs the operation, the peer (where one is known) and the call
 * number. A timed-out point-to-point receive is cancelled; a timed-out collective cannot be
 * cancelled in MPI, so the communicator is marked broken and later calls fail fast with
 * WEFT_ERR_COMM: the caller is expected to abort the job.
 *
 * Byte counters: every operation records the bytes sent to and received from each peer
 * (self excluded: nothing crosses a link). Point-to-point, all-to-all(v), all-gather(v) and
 * broadcast record exact volumes (broadcast as if the root sent to each rank). All-reduce
 * records the ring-algorithm volume 2(P-1)/P * bytes to the next rank and from the previous
 * one, the model behind nccl-tests' bus bandwidth; MPI and NCCL may choose other algorithms.
 *
 * Counts are in elements of `dtype`. MPI counts are int: a single message above INT_MAX
 * elements is refused with WEFT_ERR_UNSUPPORTED instead of being silently truncated. */
#ifndef WEFT_COMM_H
#define WEFT_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/bootstrap.h"
#include "weft/device.h"
#include "weft/status.h"
#include "weft/tensor.h"

typedef struct weft_comm weft_comm_t;

typedef enum weft_mem {
  WEFT_MEM_HOST = 0,   /* ordinary host memory */
  WEFT_MEM_DEVICE = 1, /* memory of the communicator's device (host memory on CPU) */
} weft_mem_t;

typedef enum weft_reduce_op {
  WEFT_REDUCE_SUM = 0,
  WEFT_REDUCE_MAX = 1,
  WEFT_REDUCE_MIN = 2,
} weft_reduce_op_t;

typedef enum weft_comm_op {
  WEFT_COMM_OP_BARRIER = 0,
  WEFT_COMM_OP_BCAST,
  WEFT_COMM_OP_ALLREDUCE,
  WEFT_COMM_OP_ALLGATHER,
  WEFT_COMM_OP_ALLGATHERV,
  WEFT_COMM_OP_ALLTOALL,
  WEFT_COMM_OP_ALLTOALLV,
  WEFT_COMM_OP_SENDRECV,
  WEFT_COMM_OP_SEND,
  WEFT_COMM_OP_RECV,
  WEFT_COMM_OP_COUNT
} weft_comm_op_t;

const char *weft_comm_op_name(weft_comm_op_t op); /* "allreduce", ... */

/* Bytes exchanged with one peer. */
typedef struct weft_comm_peer_bytes {
  uint64_t sent;
  uint64_t recv;
} weft_comm_peer_bytes_t;

/* Totals of one operation kind since creation (or the last reset). */
typedef struct weft_comm_op_stats {
  uint64_t calls;
  uint64_t bytes_sent;
  uint64_t bytes_recv;
  double seconds; /* wall time inside the calls, waits included */
} weft_comm_op_stats_t;

/* A pending point-to-point operation; caller-owned storage (init by isend/irecv, cleaned up
 * by wait). The fields are private. */
typedef struct weft_comm_req {
  weft_comm_t *comm;
  weft_comm_op_t op;
  int peer;
  int active;
  uint64_t mpi_request; /* holds an MPI_Request (checked in comm.c) */
  void *staging;        /* pinned host copy of a device buffer, freed by wait */
  void *device_dst;     /* irecv into device memory: where the staged bytes go */
  size_t bytes;
} weft_comm_req_t;

/* Communicator over all ranks, on the bootstrap's device. Collective. */
weft_status_t weft_comm_create_world(const weft_bootstrap_t *boot, weft_comm_t **comm_p);
/* Splits `parent` like MPI_Comm_split (same color = same group, ordered by key). `name`
 * labels log lines and errors ("sp", "dp", ...). Collective over the parent. */
weft_status_t weft_comm_split(weft_comm_t *parent, int color, int key, const char *name,
                              weft_comm_t **child_p);
void weft_comm_destroy(weft_comm_t *comm);

int weft_comm_rank(const weft_comm_t *comm);
int weft_comm_size(const weft_comm_t *comm);
const char *weft_comm_name(const weft_comm_t *comm);
const weft_device_t *weft_comm_device(const weft_comm_t *comm);
bool weft_comm_has_nccl(const weft_comm_t *comm);
/* The rank of this communicator's rank `rank` in MPI_COMM_WORLD. */
int weft_comm_world_rank_of(const weft_comm_t *comm, int rank);
/* true when MPI lets a second thread drive communication (MPI_THREAD_SERIALIZED or above)
 * while this one computes: progress threads use a communicator only when this holds, and
 * only when no other thread uses that communicator meanwhile. */
bool weft_comm_progress_thread_ok(void);

/* Makes the calling thread's waits back off (sleep ~20 us between polls once the short spin
 * phase is over) instead of yielding. For progress threads: their latency hides behind the
 * compute, and polling at full speed would take a core from that compute wherever threads
 * outnumber cores. Thread-local; off by default. */
void weft_comm_set_thread_backoff(bool on);

/* Deadline for every blocking wait on this communicator, in seconds (> 0). */
void weft_comm_set_timeout(weft_comm_t *comm, double seconds);
double weft_comm_timeout(const weft_comm_t *comm);

weft_status_t weft_comm_barrier(weft_comm_t *comm);
/* buf: [count] on every rank; the root's values are copied to all. */
weft_status_t weft_comm_bcast(weft_comm_t *comm, void *buf, size_t count, weft_dtype_t dtype,
                              int root, weft_mem_t mem);
/* sendbuf, recvbuf: [count]; sendbuf == recvbuf reduces in place. f32, bf16, i32, i64
 * (f16: WEFT_ERR_UNSUPPORTED). On the MPI paths bf16 is widened to f32, reduced, and rounded
 * once at the end; NCCL reduces bf16 natively. */
weft_status_t weft_comm_allreduce(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                  size_t count, weft_dtype_t dtype, weft_reduce_op_t op,
                                  weft_mem_t mem);
/* Every rank gets the first failure any rank saw (the most negative status; WEFT_OK when all
 * succeeded), so that no rank enters a later collective alone. WEFT_ERR_COMM when the
 * all-reduce itself fails. Collective. */
weft_status_t weft_comm_agree(weft_comm_t *comm, weft_status_t local);
/* sendbuf: [count]; recvbuf: [P * count], rank r's block at r * count. */
weft_status_t weft_comm_allgather(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                  size_t count, weft_dtype_t dtype, weft_mem_t mem);
/* sendbuf: [recvcounts[me]]; rank r's block lands at recvbuf + displs[r] (elements). */
weft_status_t weft_comm_allgatherv(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                   const size_t *recvcounts, const size_t *displs,
                                   weft_dtype_t dtype, weft_mem_t mem);
/* sendbuf, recvbuf: [P * count]; block r of sendbuf goes to rank r. */
weft_status_t weft_comm_alltoall(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                 size_t count, weft_dtype_t dtype, weft_mem_t mem);
/* counts and displacements per peer, in elements. */
weft_status_t weft_comm_alltoallv(weft_comm_t *comm, const void *sendbuf, const size_t *sendcounts,
                                  const size_t *sdispls, void *recvbuf, const size_t *recvcounts,
                                  const size_t *rdispls, weft_dtype_t dtype, weft_mem_t mem);
/* Sends [sendcount] to `dest` while receiving [recvcount] from `source`. */
weft_status_t weft_comm_sendrecv(weft_comm_t *comm, const void *sendbuf, size_t sendcount, int dest,
                                 void *recvbuf, size_t recvcount, int source, weft_dtype_t dtype,
                                 weft_mem_t mem);

/* Non-blocking point-to-point; `tag` in 0..32766 separates independent streams between a
 * pair (weft_allscan uses 32766: keep other traffic on that tag out of a scan's way). The buffer
 * must stay valid until weft_comm_wait returns. Device buffers are staged through pinned host
 * memory over MPI even when the communicator has NCCL (see comm_p2p.c for why). */
weft_status_t weft_comm_isend(weft_comm_t *comm, const void *buf, size_t count, weft_dtype_t dtype,
                              int peer, int tag, weft_mem_t mem, weft_comm_req_t *req);
weft_status_t weft_comm_irecv(weft_comm_t *comm, void *buf, size_t count, weft_dtype_t dtype,
                              int peer, int tag, weft_mem_t mem, weft_comm_req_t *req);
/* Waits with the communicator's deadline. Cleans up the request whatever the outcome. */
weft_status_t weft_comm_wait(weft_comm_req_t *req);
/* Waits for all; returns the first failure (every request is cleaned up). */
weft_status_t weft_comm_waitall(weft_comm_req_t *reqs, int count);

/* Bytes per peer of the most recent operation on this communicator: array of size P,
 * indexed by rank in this communicator. */
const weft_comm_peer_bytes_t *weft_comm_last_bytes(const weft_comm_t *comm);
/* Cumulative bytes per peer since creation or the last reset: array of size P. */
const weft_comm_peer_bytes_t *weft_comm_total_bytes(const weft_comm_t *comm);
/* Cumulative totals of one operation kind. */
weft_comm_op_stats_t weft_comm_op_stats(const weft_comm_t *comm, weft_comm_op_t op);
void weft_comm_stats_reset(weft_comm_t *comm);

#endif /* WEFT_COMM_H */
