/* Point-to-point: sendrecv, isend/irecv and the deadline-bounded wait.
 *
 * Device buffers of isend/irecv are always staged through pinned host memory over MPI, even
 * on communicators with NCCL: NCCL point-to-point calls issued one at a time in an order
 * that differs between ranks (rank 0 posts recv-then-send, rank 1 send-then-recv) can
 * deadlock inside one NCCL communicator, while MPI matches them in any order. sendrecv,
 * which posts both sides together, uses a grouped NCCL call. */
#include <string.h>

#include "comm_internal.h"
#include "weft/check.h"
#include "weft/timer.h"

/* MPI guarantees tags up to 32767; the top one is reserved for weft_comm_sendrecv. */
#define WEFT_COMM_TAG_SENDRECV 32767

static weft_status_t check_peer(const weft_comm_t *comm, weft_comm_op_t op, int peer) {
  if (peer < 0 || peer >= comm->size) {
    WEFT_ERROR("comm", "%s on '%s': peer %d is outside 0..%d", weft_comm_op_name(op), comm->name,
               peer, comm->size - 1);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

static weft_status_t check_args(const weft_comm_t *comm, weft_comm_op_t op, const void *buf,
                                size_t count, int peer) {
  WEFT_CHECK(check_peer(comm, op, peer));
  if (count > 0 && !buf) {
    WEFT_ERROR("comm", "%s on '%s' with peer %d: buffer is NULL for %zu elements",
               weft_comm_op_name(op), comm->name, peer, count);
    return WEFT_ERR_INVALID_ARG;
  }
  return weft_comm_check_count(comm, op, count);
}

static weft_status_t host_sendrecv(weft_comm_t *comm, const void *sendbuf, size_t sendcount,
                                   int dest, void *recvbuf, size_t recvcount, int source,
                                   weft_dtype_t dtype) {
  MPI_Datatype type = weft_comm_mpi_type(dtype);
  MPI_Request reqs[2];
  WEFT_MPI_CHECK(MPI_Irecv(recvbuf, (int)recvcount, type, source, WEFT_COMM_TAG_SENDRECV, comm->mpi,
                           &reqs[0]));
  WEFT_MPI_CHECK(
      MPI_Isend(sendbuf, (int)sendcount, type, dest, WEFT_COMM_TAG_SENDRECV, comm->mpi, &reqs[1]));
  return weft_comm_wait_mpi(comm, reqs, 2, WEFT_COMM_OP_SENDRECV, source, false);
}

weft_status_t weft_comm_sendrecv(weft_comm_t *comm, const void *sendbuf, size_t sendcount, int dest,
                                 void *recvbuf, size_t recvcount, int source, weft_dtype_t dtype,
                                 weft_mem_t mem) {
  const weft_comm_op_t op = WEFT_COMM_OP_SENDRECV;
  WEFT_CHECK(check_args(comm, op, sendbuf, sendcount, dest));
  WEFT_CHECK(check_args(comm, op, recvbuf, recvcount, source));
  size_t esize = weft_dtype_size(dtype);
  double t0;
  WEFT_CHECK(weft_comm_op_begin(comm, op, &t0));
  weft_status_t st;
  if (!weft_comm_on_gpu(comm, mem)) {
    st = host_sendrecv(comm, sendbuf, sendcount, dest, recvbuf, recvcount, source, dtype);
#if WEFT_HAVE_CUDA
  } else if (comm->nccl) {
    st = weft_comm_nccl_sendrecv(comm, sendbuf, sendcount, dest, recvbuf, recvcount, source, dtype);
#endif
  } else {
    WEFT_CHECK_GOTO(weft_comm_stage_reserve(comm, sendcount * esize, recvcount * esize), st, done);
    WEFT_CHECK_GOTO(weft_device_copy(comm->device, comm->stage_send, sendbuf, sendcount * esize,
                                     WEFT_COPY_DEVICE_TO_HOST),
                    st, done);
    WEFT_CHECK_GOTO(host_sendrecv(comm, comm->stage_send, sendcount, dest, comm->stage_recv,
                                  recvcount, source, dtype),
                    st, done);
    st = weft_device_copy(comm->device, recvbuf, comm->stage_recv, recvcount * esize,
                          WEFT_COPY_HOST_TO_DEVICE);
  }
done:
  weft_comm_count(comm, dest, sendcount * esize, 0);
  weft_comm_count(comm, source, 0, recvcount * esize);
  weft_comm_op_end(comm, op, t0);
  return st;
}

static weft_status_t check_tag(const weft_comm_t *comm, weft_comm_op_t op, int tag) {
  if (tag < 0 || tag >= WEFT_COMM_TAG_SENDRECV) {
    WEFT_ERROR("comm", "%s on '%s': tag %d is outside 0..%d", weft_comm_op_name(op), comm->name,
               tag, WEFT_COMM_TAG_SENDRECV - 1);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* Posts one side of a point-to-point transfer; staging for GPU buffers is per request
 * because several may be in flight at once. */
static weft_status_t post(weft_comm_t *comm, weft_comm_op_t op, void *buf, size_t count,
                          weft_dtype_t dtype, int peer, int tag, weft_mem_t mem,
                          weft_comm_req_t *req) {
  memset(req, 0, sizeof *req);
  WEFT_CHECK(check_args(comm, op, buf, count, peer));
  WEFT_CHECK(check_tag(comm, op, tag));
  size_t bytes = count * weft_dtype_size(dtype);
  double t0;
  WEFT_CHECK(weft_comm_op_begin(comm, op, &t0));
  req->comm = comm;
  req->op = op;
  req->peer = peer;
  req->bytes = bytes;
  void *host = buf;
  weft_status_t st = WEFT_OK;
  if (weft_comm_on_gpu(comm, mem) && bytes > 0) {
    WEFT_CHECK_GOTO(weft_host_alloc_pinned(comm->device, bytes, &req->staging), st, done);
    host = req->staging;
    if (op == WEFT_COMM_OP_SEND)
      WEFT_CHECK_GOTO(weft_device_copy(comm->device, host, buf, bytes, WEFT_COPY_DEVICE_TO_HOST),
                      st, done);
    else
      req->device_dst = buf;
  }
  MPI_Request mpi_req;
  int rc =
      op == WEFT_COMM_OP_SEND
          ? MPI_Isend(host, (int)count, weft_comm_mpi_type(dtype), peer, tag, comm->mpi, &mpi_req)
          : MPI_Irecv(host, (int)count, weft_comm_mpi_type(dtype), peer, tag, comm->mpi, &mpi_req);
  if (rc != MPI_SUCCESS) {
    WEFT_ERROR("comm", "%s on '%s' with peer %d failed to start: %s", weft_comm_op_name(op),
               comm->name, peer, weft_mpi_error_string(rc));
    st = WEFT_ERR_COMM;
    goto done;
  }
  memcpy(&req->mpi_request, &mpi_req, sizeof mpi_req);
  req->active = 1;
done:
  if (st != WEFT_OK) {
    weft_host_free_pinned(comm->device, req->staging);
    req->staging = NULL;
  }
  weft_comm_count(comm, peer, op == WEFT_COMM_OP_SEND ? bytes : 0,
                  op == WEFT_COMM_OP_RECV ? bytes : 0);
  weft_comm_op_end(comm, op, t0);
  return st;
}

weft_status_t weft_comm_isend(weft_comm_t *comm, const void *buf, size_t count, weft_dtype_t dtype,
                              int peer, int tag, weft_mem_t mem, weft_comm_req_t *req) {
  /* MPI takes a non-const buffer for historical reasons; the send never writes it. */
  return post(comm, WEFT_COMM_OP_SEND, (void *)buf, count, dtype, peer, tag, mem, req);
}

weft_status_t weft_comm_irecv(weft_comm_t *comm, void *buf, size_t count, weft_dtype_t dtype,
                              int peer, int tag, weft_mem_t mem, weft_comm_req_t *req) {
  return post(comm, WEFT_COMM_OP_RECV, buf, count, dtype, peer, tag, mem, req);
}

weft_status_t weft_comm_wait(weft_comm_req_t *req) {
  if (!req->active) {
    WEFT_ERROR("comm", "wait on a request that is not active (never posted, or already waited)");
    return WEFT_ERR_INVALID_ARG;
  }
  weft_comm_t *comm = req->comm;
  double t0 = weft_time_now();
  MPI_Request mpi_req;
  memcpy(&mpi_req, &req->mpi_request, sizeof mpi_req);
  /* Only a receive can be cancelled safely; a stuck send breaks the communicator. */
  weft_status_t st =
      weft_comm_wait_mpi(comm, &mpi_req, 1, req->op, req->peer, req->op == WEFT_COMM_OP_RECV);
  if (st == WEFT_OK && req->device_dst)
    st = weft_device_copy(comm->device, req->device_dst, req->staging, req->bytes,
                          WEFT_COPY_HOST_TO_DEVICE);
  /* A timed-out send stays pending inside MPI (it cannot be cancelled) and reads its staging
   * copy whenever the peer finally receives; freeing the copy would let MPI read freed pinned
   * memory. The communicator is broken and the job is expected to abort: leave it allocated. */
  if (!(st == WEFT_ERR_TIMEOUT && req->op == WEFT_COMM_OP_SEND))
    weft_host_free_pinned(comm->device, req->staging);
  comm->ops[req->op].seconds += weft_time_now() - t0;
  memset(req, 0, sizeof *req);
  return st;
}

weft_status_t weft_comm_waitall(weft_comm_req_t *reqs, int count) {
  weft_status_t first = WEFT_OK;
  for (int i = 0; i < count; i++) {
    if (!reqs[i].active) continue;
    weft_status_t st = weft_comm_wait(&reqs[i]);
    if (first == WEFT_OK) first = st;
  }
  return first;
}
