/* NCCL communicators and the device-buffer collectives that use them (CUDA builds only).
 *
 * Semantics match the MPI paths: each call returns when its result is in place. The call
 * first synchronises the device so NCCL (on the communicator's own stream) sees the data the
 * caller's kernels produced, then polls the stream with the communicator's deadline; on
 * expiry the NCCL communicator is aborted, which is NCCL's only way out of a hung
 * collective. Overlapped stream-ordered variants belong to the algorithms that need them.
 *
 * v-collectives are grouped ncclSend/ncclRecv (NCCL has no native v-collectives). */
#include <nccl.h>
#include <sched.h>

#include "comm_internal.h"
#include "weft/check.h"
#include "weft/timer.h"

static ncclDataType_t nccl_type(weft_dtype_t dtype) {
  switch (dtype) {
  case WEFT_DTYPE_F32: return ncclFloat32;
  case WEFT_DTYPE_BF16: return ncclBfloat16;
  case WEFT_DTYPE_F16: return ncclFloat16;
  case WEFT_DTYPE_I32: return ncclInt32;
  case WEFT_DTYPE_I64: return ncclInt64;
  }
  return ncclFloat32;
}

static ncclRedOp_t nccl_op(weft_reduce_op_t op) {
  return op == WEFT_REDUCE_MAX ? ncclMax : op == WEFT_REDUCE_MIN ? ncclMin : ncclSum;
}

static cudaStream_t comm_stream(weft_comm_t *comm) {
  return (cudaStream_t)weft_stream_native(comm->stream);
}

weft_status_t weft_comm_nccl_init(weft_comm_t *comm) {
  ncclUniqueId id;
  if (comm->rank == 0) WEFT_NCCL_CHECK(ncclGetUniqueId(&id));
  WEFT_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, comm->mpi));
  WEFT_CHECK(weft_stream_create(comm->device, &comm->stream));
  ncclComm_t nccl;
  WEFT_NCCL_CHECK(ncclCommInitRank(&nccl, comm->size, id, comm->rank));
  comm->nccl = nccl;
  WEFT_DEBUG("comm", "NCCL communicator '%s' ready (%d ranks)", comm->name, comm->size);
  return WEFT_OK;
}

weft_status_t weft_comm_nccl_split(weft_comm_t *parent, int color, int key, weft_comm_t *child) {
  WEFT_CHECK(weft_stream_create(child->device, &child->stream));
  ncclComm_t nccl;
  WEFT_NCCL_CHECK(ncclCommSplit((ncclComm_t)parent->nccl, color, key, &nccl, NULL));
  child->nccl = nccl;
  return WEFT_OK;
}

void weft_comm_nccl_destroy(weft_comm_t *comm) {
  if (comm->nccl) {
    if (comm->broken)
      (void)ncclCommAbort((ncclComm_t)comm->nccl);
    else
      (void)ncclCommDestroy((ncclComm_t)comm->nccl);
  }
  comm->nccl = NULL;
  weft_stream_destroy(comm->stream);
  comm->stream = NULL;
}

/* Waits for the NCCL work queued on the communicator's stream, within the deadline. */
static weft_status_t nccl_wait(weft_comm_t *comm, weft_comm_op_t op, int peer) {
  double deadline = weft_time_now() + comm->timeout_s;
  for (;;) {
    bool done = false;
    WEFT_CHECK(weft_stream_query(comm->stream, &done));
    if (done) return WEFT_OK;
    ncclResult_t async = ncclSuccess;
    WEFT_NCCL_CHECK(ncclCommGetAsyncError((ncclComm_t)comm->nccl, &async));
    if (async != ncclSuccess && async != ncclInProgress) {
      WEFT_ERROR("comm", "NCCL %s on '%s' failed: %s", weft_comm_op_name(op), comm->name,
                 ncclGetErrorString(async));
      comm->broken = true;
      return WEFT_ERR_COMM;
    }
    if (weft_time_now() > deadline) break;
    sched_yield();
  }
  WEFT_ERROR("comm",
             "NCCL %s on '%s' timed out after %.1f s on rank %d (peer %d, call #%llu); "
             "aborting the NCCL communicator",
             weft_comm_op_name(op), comm->name, comm->timeout_s, comm->rank, peer,
             (unsigned long long)comm->call_count);
  comm->broken = true;
  return WEFT_ERR_TIMEOUT;
}

/* Makes the data produced by the caller's kernels visible to NCCL's stream. */
static weft_status_t nccl_prepare(weft_comm_t *comm) {
  return weft_device_synchronize(comm->device);
}

weft_status_t weft_comm_nccl_bcast(weft_comm_t *comm, void *buf, size_t count, weft_dtype_t dtype,
                                   int root) {
  WEFT_CHECK(nccl_prepare(comm));
  WEFT_NCCL_CHECK(ncclBroadcast(buf, buf, count, nccl_type(dtype), root, (ncclComm_t)comm->nccl,
                                comm_stream(comm)));
  return nccl_wait(comm, WEFT_COMM_OP_BCAST, root);
}

weft_status_t weft_comm_nccl_allreduce(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                       size_t count, weft_dtype_t dtype, weft_reduce_op_t op) {
  WEFT_CHECK(nccl_prepare(comm));
  WEFT_NCCL_CHECK(ncclAllReduce(sendbuf, recvbuf, count, nccl_type(dtype), nccl_op(op),
                                (ncclComm_t)comm->nccl, comm_stream(comm)));
  return nccl_wait(comm, WEFT_COMM_OP_ALLREDUCE, -1);
}

weft_status_t weft_comm_nccl_allgather(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                       const weft_comm_blocks_t *recv, weft_dtype_t dtype) {
  WEFT_CHECK(nccl_prepare(comm));
  ncclComm_t nccl = (ncclComm_t)comm->nccl;
  ncclDataType_t type = nccl_type(dtype);
  size_t esize = weft_dtype_size(dtype);
  if (!recv->counts) {
    WEFT_NCCL_CHECK(ncclAllGather(sendbuf, recvbuf, recv->uniform, type, nccl, comm_stream(comm)));
    return nccl_wait(comm, WEFT_COMM_OP_ALLGATHER, -1);
  }
  /* Uneven: every rank broadcasts its block (grouped so NCCL schedules them together). */
  WEFT_NCCL_CHECK(ncclGroupStart());
  for (int p = 0; p < comm->size; p++) {
    char *dst = (char *)recvbuf + recv->displs[p] * esize;
    const void *src = p == comm->rank ? sendbuf : dst;
    WEFT_NCCL_CHECK(ncclBroadcast(src, dst, recv->counts[p], type, p, nccl, comm_stream(comm)));
  }
  WEFT_NCCL_CHECK(ncclGroupEnd());
  return nccl_wait(comm, WEFT_COMM_OP_ALLGATHERV, -1);
}

weft_status_t weft_comm_nccl_alltoall(weft_comm_t *comm, const void *sendbuf,
                                      const weft_comm_blocks_t *send, void *recvbuf,
                                      const weft_comm_blocks_t *recv, weft_dtype_t dtype) {
  WEFT_CHECK(nccl_prepare(comm));
  ncclComm_t nccl = (ncclComm_t)comm->nccl;
  ncclDataType_t type = nccl_type(dtype);
  size_t esize = weft_dtype_size(dtype);
  WEFT_NCCL_CHECK(ncclGroupStart());
  for (int p = 0; p < comm->size; p++) {
    size_t scount = weft_comm_block_count(send, p), rcount = weft_comm_block_count(recv, p);
    if (scount)
      WEFT_NCCL_CHECK(ncclSend((const char *)sendbuf + weft_comm_block_displ(send, p) * esize,
                               scount, type, p, nccl, comm_stream(comm)));
    if (rcount)
      WEFT_NCCL_CHECK(ncclRecv((char *)recvbuf + weft_comm_block_displ(recv, p) * esize, rcount,
                               type, p, nccl, comm_stream(comm)));
  }
  WEFT_NCCL_CHECK(ncclGroupEnd());
  return nccl_wait(comm, send->counts ? WEFT_COMM_OP_ALLTOALLV : WEFT_COMM_OP_ALLTOALL, -1);
}

weft_status_t weft_comm_nccl_sendrecv(weft_comm_t *comm, const void *sendbuf, size_t sendcount,
                                      int dest, void *recvbuf, size_t recvcount, int source,
                                      weft_dtype_t dtype) {
  WEFT_CHECK(nccl_prepare(comm));
  ncclComm_t nccl = (ncclComm_t)comm->nccl;
  WEFT_NCCL_CHECK(ncclGroupStart());
  if (sendcount)
    WEFT_NCCL_CHECK(ncclSend(sendbuf, sendcount, nccl_type(dtype), dest, nccl, comm_stream(comm)));
  if (recvcount)
    WEFT_NCCL_CHECK(
        ncclRecv(recvbuf, recvcount, nccl_type(dtype), source, nccl, comm_stream(comm)));
  WEFT_NCCL_CHECK(ncclGroupEnd());
  return nccl_wait(comm, WEFT_COMM_OP_SENDRECV, source);
}
