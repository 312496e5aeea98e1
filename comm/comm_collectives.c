/* Collective operations: barrier, bcast, allreduce, allgather(v), alltoall(v).
 *
 * Each operation has one shape: validate, begin (counters), then one of three paths --
 * host buffers over MPI; device buffers over NCCL; device buffers staged through pinned host
 * memory over MPI -- then count bytes and end. Host paths use MPI's non-blocking collectives
 * so that weft_comm_wait_mpi can enforce the deadline. */
#include <string.h>

#include "comm_internal.h"
#include "weft/bf16.h"
#include "weft/check.h"

#define WEFT_COMM_CALL(comm, op, call)                                                            \
  do {                                                                                            \
    int rc_ = (call);                                                                             \
    if (rc_ != MPI_SUCCESS) {                                                                     \
      WEFT_ERROR("comm", "%s on '%s' (rank %d of %d) failed to start: %s", weft_comm_op_name(op), \
                 (comm)->name, (comm)->rank, (comm)->size, weft_mpi_error_string(rc_));           \
      return WEFT_ERR_COMM;                                                                       \
    }                                                                                             \
  } while (0)

static weft_status_t check_buffer(const weft_comm_t *comm, weft_comm_op_t op, const char *what,
                                  const void *buf, size_t count) {
  if (count > 0 && !buf) {
    WEFT_ERROR("comm", "%s on '%s': %s is NULL for %zu elements", weft_comm_op_name(op), comm->name,
               what, count);
    return WEFT_ERR_INVALID_ARG;
  }
  return weft_comm_check_count(comm, op, count);
}

static weft_status_t check_rank(const weft_comm_t *comm, weft_comm_op_t op, const char *what,
                                int rank) {
  if (rank < 0 || rank >= comm->size) {
    WEFT_ERROR("comm", "%s on '%s': %s %d is outside 0..%d", weft_comm_op_name(op), comm->name,
               what, rank, comm->size - 1);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* The per-rank count and displacement arrays of the v-collectives are required: a NULL one
 * would otherwise read as a uniform layout of zero blocks (a silent no-op) or be dereferenced
 * when converted for MPI. */
static weft_status_t check_array(const weft_comm_t *comm, weft_comm_op_t op, const char *what,
                                 const size_t *array) {
  if (!array) {
    WEFT_ERROR("comm", "%s on '%s': %s is NULL (it needs one entry per rank, %d here)",
               weft_comm_op_name(op), comm->name, what, comm->size);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

/* Device -> staging copies run on the default stream so they order after the caller's
 * kernels that produced the data (the caller's stream must be synchronised or be legacy). */
static weft_status_t stage_in(weft_comm_t *comm, void *host, const void *dev, size_t bytes) {
  return weft_device_copy(comm->device, host, dev, bytes, WEFT_COPY_DEVICE_TO_HOST);
}
static weft_status_t stage_out(weft_comm_t *comm, void *dev, const void *host, size_t bytes) {
  return weft_device_copy(comm->device, dev, host, bytes, WEFT_COPY_HOST_TO_DEVICE);
}

weft_status_t weft_comm_barrier(weft_comm_t *comm) {
  double t0;
  WEFT_CHECK(weft_comm_op_begin(comm, WEFT_COMM_OP_BARRIER, &t0));
  MPI_Request req;
  WEFT_COMM_CALL(comm, WEFT_COMM_OP_BARRIER, MPI_Ibarrier(comm->mpi, &req));
  weft_status_t st = weft_comm_wait_mpi(comm, &req, 1, WEFT_COMM_OP_BARRIER, -1, false);
  weft_comm_op_end(comm, WEFT_COMM_OP_BARRIER, t0);
  return st;
}

static weft_status_t host_bcast(weft_comm_t *comm, void *buf, size_t count, weft_dtype_t dtype,
                                int root) {
  MPI_Request req;
  WEFT_COMM_CALL(comm, WEFT_COMM_OP_BCAST,
                 MPI_Ibcast(buf, (int)count, weft_comm_mpi_type(dtype), root, comm->mpi, &req));
  return weft_comm_wait_mpi(comm, &req, 1, WEFT_COMM_OP_BCAST, comm->rank == root ? -1 : root,
                            false);
}

weft_status_t weft_comm_bcast(weft_comm_t *comm, void *buf, size_t count, weft_dtype_t dtype,
                              int root, weft_mem_t mem) {
  const weft_comm_op_t op = WEFT_COMM_OP_BCAST;
  WEFT_CHECK(check_rank(comm, op, "root", root));
  WEFT_CHECK(check_buffer(comm, op, "buffer", buf, count));
  size_t bytes = count * weft_dtype_size(dtype);
  double t0;
  WEFT_CHECK(weft_comm_op_begin(comm, op, &t0));
  weft_status_t st;
  if (!weft_comm_on_gpu(comm, mem)) {
    st = host_bcast(comm, buf, count, dtype, root);
#if WEFT_HAVE_CUDA
  } else if (comm->nccl) {
    st = weft_comm_nccl_bcast(comm, buf, count, dtype, root);
#endif
  } else {
    WEFT_CHECK_GOTO(weft_comm_stage_reserve(comm, 0, bytes), st, done);
    if (comm->rank == root) WEFT_CHECK_GOTO(stage_in(comm, comm->stage_recv, buf, bytes), st, done);
    WEFT_CHECK_GOTO(host_bcast(comm, comm->stage_recv, count, dtype, root), st, done);
    if (comm->rank != root) st = stage_out(comm, buf, comm->stage_recv, bytes);
  }
done:
  for (int p = 0; p < comm->size; p++) {
    if (comm->rank == root)
      weft_comm_count(comm, p, bytes, 0);
    else if (p == root)
      weft_comm_count(comm, p, 0, bytes);
  }
  weft_comm_op_end(comm, op, t0);
  return st;
}

static MPI_Op mpi_reduce_op(weft_reduce_op_t op) {
  return op == WEFT_REDUCE_MAX ? MPI_MAX : op == WEFT_REDUCE_MIN ? MPI_MIN : MPI_SUM;
}

/* Host all-reduce; bf16 is widened to f32 in the send staging buffer so that the sum is
 * rounded once, not once per rank. */
static weft_status_t host_allreduce(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                    size_t count, weft_dtype_t dtype, weft_reduce_op_t op) {
  MPI_Request req;
  if (dtype == WEFT_DTYPE_BF16) {
    WEFT_CHECK(weft_comm_stage_reserve(comm, count * sizeof(float), 0));
    float *wide = comm->stage_send;
    const weft_bf16_t *in = sendbuf;
    for (size_t i = 0; i < count; i++) wide[i] = weft_bf16_to_f32(in[i]);
    WEFT_COMM_CALL(comm, WEFT_COMM_OP_ALLREDUCE,
                   MPI_Iallreduce(MPI_IN_PLACE, wide, (int)count, MPI_FLOAT, mpi_reduce_op(op),
                                  comm->mpi, &req));
    WEFT_CHECK(weft_comm_wait_mpi(comm, &req, 1, WEFT_COMM_OP_ALLREDUCE, -1, false));
    weft_bf16_t *out = recvbuf;
    for (size_t i = 0; i < count; i++) out[i] = weft_f32_to_bf16(wide[i]);
    return WEFT_OK;
  }
  WEFT_COMM_CALL(comm, WEFT_COMM_OP_ALLREDUCE,
                 MPI_Iallreduce(sendbuf == recvbuf ? MPI_IN_PLACE : sendbuf, recvbuf, (int)count,
                                weft_comm_mpi_type(dtype), mpi_reduce_op(op), comm->mpi, &req));
  return weft_comm_wait_mpi(comm, &req, 1, WEFT_COMM_OP_ALLREDUCE, -1, false);
}

weft_status_t weft_comm_allreduce(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                  size_t count, weft_dtype_t dtype, weft_reduce_op_t op,
                                  weft_mem_t mem) {
  const weft_comm_op_t kind = WEFT_COMM_OP_ALLREDUCE;
  WEFT_CHECK(check_buffer(comm, kind, "send buffer", sendbuf, count));
  WEFT_CHECK(check_buffer(comm, kind, "receive buffer", recvbuf, count));
  if (dtype == WEFT_DTYPE_F16) {
    WEFT_ERROR("comm", "allreduce on '%s': f16 reduction is not supported (use f32 or bf16)",
               comm->name);
    return WEFT_ERR_UNSUPPORTED;
  }
  size_t bytes = count * weft_dtype_size(dtype);
  double t0;
  WEFT_CHECK(weft_comm_op_begin(comm, kind, &t0));
  weft_status_t st;
  if (!weft_comm_on_gpu(comm, mem)) {
    st = host_allreduce(comm, sendbuf, recvbuf, count, dtype, op);
#if WEFT_HAVE_CUDA
  } else if (comm->nccl) {
    st = weft_comm_nccl_allreduce(comm, sendbuf, recvbuf, count, dtype, op);
#endif
  } else {
    WEFT_CHECK_GOTO(weft_comm_stage_reserve(comm, 0, bytes), st, done);
    WEFT_CHECK_GOTO(stage_in(comm, comm->stage_recv, sendbuf, bytes), st, done);
    WEFT_CHECK_GOTO(host_allreduce(comm, comm->stage_recv, comm->stage_recv, count, dtype, op), st,
                    done);
    st = stage_out(comm, recvbuf, comm->stage_recv, bytes);
  }
done:
  /* Ring model (see comm.h): 2(P-1)/P of the buffer to the next rank, from the previous. */
  if (comm->size > 1) {
    uint64_t ring = 2 * (uint64_t)(comm->size - 1) * bytes / (uint64_t)comm->size;
    weft_comm_count(comm, (comm->rank + 1) % comm->size, ring, 0);
    weft_comm_count(comm, (comm->rank + comm->size - 1) % comm->size, 0, ring);
  }
  weft_comm_op_end(comm, kind, t0);
  return st;
}

weft_status_t weft_comm_agree(weft_comm_t *comm, weft_status_t local) {
  int32_t mine = (int32_t)local, worst = mine;
  if (weft_comm_allreduce(comm, &mine, &worst, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MIN, WEFT_MEM_HOST) !=
      WEFT_OK) {
    return WEFT_ERR_COMM;
  }
  return (weft_status_t)worst;
}

/* Fills the int count/displacement scratch from size_t arrays, checking MPI's int range. */
static weft_status_t to_int_arrays(weft_comm_t *comm, weft_comm_op_t op, const size_t *counts,
                                   const size_t *displs, int *icounts, int *idispls) {
  for (int p = 0; p < comm->size; p++) {
    if (counts[p] > (size_t)INT32_MAX || displs[p] > (size_t)INT32_MAX) {
      WEFT_ERROR("comm",
                 "%s on '%s': count %zu or displacement %zu for rank %d exceeds MPI's "
                 "int limit",
                 weft_comm_op_name(op), comm->name, counts[p], displs[p], p);
      return WEFT_ERR_UNSUPPORTED;
    }
    icounts[p] = (int)counts[p];
    idispls[p] = (int)displs[p];
  }
  return WEFT_OK;
}

/* Elements spanned by all blocks (the buffer extent they need). */
static size_t block_extent(const weft_comm_blocks_t *b, int size) {
  size_t extent = 0;
  for (int p = 0; p < size; p++)
    if (weft_comm_block_count(b, p) > 0 &&
        weft_comm_block_displ(b, p) + weft_comm_block_count(b, p) > extent)
      extent = weft_comm_block_displ(b, p) + weft_comm_block_count(b, p);
  return extent;
}

/* Copies the received blocks from the staging buffer to the device, block by block: the gaps
 * between blocks of the caller's buffer must stay untouched. */
static weft_status_t stage_out_blocks(weft_comm_t *comm, void *recvbuf,
                                      const weft_comm_blocks_t *recv, size_t esize) {
  for (int p = 0; p < comm->size; p++) {
    size_t offset = weft_comm_block_displ(recv, p) * esize;
    WEFT_CHECK(stage_out(comm, (char *)recvbuf + offset, (char *)comm->stage_recv + offset,
                         weft_comm_block_count(recv, p) * esize));
  }
  return WEFT_OK;
}

static weft_status_t host_allgather(weft_comm_t *comm, weft_comm_op_t op, const void *sendbuf,
                                    void *recvbuf, const weft_comm_blocks_t *recv,
                                    weft_dtype_t dtype) {
  MPI_Datatype type = weft_comm_mpi_type(dtype);
  MPI_Request req;
  if (!recv->counts) {
    WEFT_COMM_CALL(comm, op,
                   MPI_Iallgather(sendbuf, (int)recv->uniform, type, recvbuf, (int)recv->uniform,
                                  type, comm->mpi, &req));
  } else {
    WEFT_CHECK(to_int_arrays(comm, op, recv->counts, recv->displs, comm->counts_a, comm->displs_a));
    WEFT_COMM_CALL(comm, op,
                   MPI_Iallgatherv(sendbuf, comm->counts_a[comm->rank], type, recvbuf,
                                   comm->counts_a, comm->displs_a, type, comm->mpi, &req));
  }
  return weft_comm_wait_mpi(comm, &req, 1, op, -1, false);
}

/* All-gather(v) body shared by both entry points. */
static weft_status_t allgather(weft_comm_t *comm, weft_comm_op_t op, const void *sendbuf,
                               void *recvbuf, const weft_comm_blocks_t *recv, weft_dtype_t dtype,
                               weft_mem_t mem) {
  size_t esize = weft_dtype_size(dtype);
  size_t mine = weft_comm_block_count(recv, comm->rank);
  size_t extent = block_extent(recv, comm->size);
  WEFT_CHECK(check_buffer(comm, op, "send buffer", sendbuf, mine));
  WEFT_CHECK(check_buffer(comm, op, "receive buffer", recvbuf, extent));
  double t0;
  WEFT_CHECK(weft_comm_op_begin(comm, op, &t0));
  weft_status_t st = WEFT_OK;
  if (!weft_comm_on_gpu(comm, mem)) {
    st = host_allgather(comm, op, sendbuf, recvbuf, recv, dtype);
#if WEFT_HAVE_CUDA
  } else if (comm->nccl) {
    st = weft_comm_nccl_allgather(comm, sendbuf, recvbuf, recv, dtype);
#endif
  } else {
    WEFT_CHECK_GOTO(weft_comm_stage_reserve(comm, mine * esize, extent * esize), st, done);
    WEFT_CHECK_GOTO(stage_in(comm, comm->stage_send, sendbuf, mine * esize), st, done);
    WEFT_CHECK_GOTO(host_allgather(comm, op, comm->stage_send, comm->stage_recv, recv, dtype), st,
                    done);
    st = stage_out_blocks(comm, recvbuf, recv, esize);
  }
done:
  for (int p = 0; p < comm->size; p++)
    weft_comm_count(comm, p, mine * esize, weft_comm_block_count(recv, p) * esize);
  weft_comm_op_end(comm, op, t0);
  return st;
}

weft_status_t weft_comm_allgather(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                  size_t count, weft_dtype_t dtype, weft_mem_t mem) {
  weft_comm_blocks_t recv = {count, NULL, NULL};
  return allgather(comm, WEFT_COMM_OP_ALLGATHER, sendbuf, recvbuf, &recv, dtype, mem);
}

weft_status_t weft_comm_allgatherv(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                   const size_t *recvcounts, const size_t *displs,
                                   weft_dtype_t dtype, weft_mem_t mem) {
  WEFT_CHECK(check_array(comm, WEFT_COMM_OP_ALLGATHERV, "recvcounts", recvcounts));
  WEFT_CHECK(check_array(comm, WEFT_COMM_OP_ALLGATHERV, "displs", displs));
  weft_comm_blocks_t recv = {0, recvcounts, displs};
  return allgather(comm, WEFT_COMM_OP_ALLGATHERV, sendbuf, recvbuf, &recv, dtype, mem);
}

static weft_status_t host_alltoall(weft_comm_t *comm, weft_comm_op_t op, const void *sendbuf,
                                   const weft_comm_blocks_t *send, void *recvbuf,
                                   const weft_comm_blocks_t *recv, weft_dtype_t dtype) {
  MPI_Datatype type = weft_comm_mpi_type(dtype);
  MPI_Request req;
  if (!send->counts) {
    WEFT_COMM_CALL(comm, op,
                   MPI_Ialltoall(sendbuf, (int)send->uniform, type, recvbuf, (int)recv->uniform,
                                 type, comm->mpi, &req));
  } else {
    WEFT_CHECK(to_int_arrays(comm, op, send->counts, send->displs, comm->counts_a, comm->displs_a));
    WEFT_CHECK(to_int_arrays(comm, op, recv->counts, recv->displs, comm->counts_b, comm->displs_b));
    WEFT_COMM_CALL(comm, op,
                   MPI_Ialltoallv(sendbuf, comm->counts_a, comm->displs_a, type, recvbuf,
                                  comm->counts_b, comm->displs_b, type, comm->mpi, &req));
  }
  return weft_comm_wait_mpi(comm, &req, 1, op, -1, false);
}

/* All-to-all(v) body shared by both entry points. */
static weft_status_t alltoall(weft_comm_t *comm, weft_comm_op_t op, const void *sendbuf,
                              const weft_comm_blocks_t *send, void *recvbuf,
                              const weft_comm_blocks_t *recv, weft_dtype_t dtype, weft_mem_t mem) {
  size_t esize = weft_dtype_size(dtype);
  size_t send_extent = block_extent(send, comm->size);
  size_t recv_extent = block_extent(recv, comm->size);
  WEFT_CHECK(check_buffer(comm, op, "send buffer", sendbuf, send_extent));
  WEFT_CHECK(check_buffer(comm, op, "receive buffer", recvbuf, recv_extent));
  double t0;
  WEFT_CHECK(weft_comm_op_begin(comm, op, &t0));
  weft_status_t st = WEFT_OK;
  if (!weft_comm_on_gpu(comm, mem)) {
    st = host_alltoall(comm, op, sendbuf, send, recvbuf, recv, dtype);
#if WEFT_HAVE_CUDA
  } else if (comm->nccl) {
    st = weft_comm_nccl_alltoall(comm, sendbuf, send, recvbuf, recv, dtype);
#endif
  } else {
    WEFT_CHECK_GOTO(weft_comm_stage_reserve(comm, send_extent * esize, recv_extent * esize), st,
                    done);
    WEFT_CHECK_GOTO(stage_in(comm, comm->stage_send, sendbuf, send_extent * esize), st, done);
    WEFT_CHECK_GOTO(host_alltoall(comm, op, comm->stage_send, send, comm->stage_recv, recv, dtype),
                    st, done);
    st = stage_out_blocks(comm, recvbuf, recv, esize);
  }
done:
  for (int p = 0; p < comm->size; p++)
    weft_comm_count(comm, p, weft_comm_block_count(send, p) * esize,
                    weft_comm_block_count(recv, p) * esize);
  weft_comm_op_end(comm, op, t0);
  return st;
}

weft_status_t weft_comm_alltoall(weft_comm_t *comm, const void *sendbuf, void *recvbuf,
                                 size_t count, weft_dtype_t dtype, weft_mem_t mem) {
  weft_comm_blocks_t blocks = {count, NULL, NULL};
  return alltoall(comm, WEFT_COMM_OP_ALLTOALL, sendbuf, &blocks, recvbuf, &blocks, dtype, mem);
}

weft_status_t weft_comm_alltoallv(weft_comm_t *comm, const void *sendbuf, const size_t *sendcounts,
                                  const size_t *sdispls, void *recvbuf, const size_t *recvcounts,
                                  const size_t *rdispls, weft_dtype_t dtype, weft_mem_t mem) {
  const weft_comm_op_t op = WEFT_COMM_OP_ALLTOALLV;
  WEFT_CHECK(check_array(comm, op, "sendcounts", sendcounts));
  WEFT_CHECK(check_array(comm, op, "sdispls", sdispls));
  WEFT_CHECK(check_array(comm, op, "recvcounts", recvcounts));
  WEFT_CHECK(check_array(comm, op, "rdispls", rdispls));
  weft_comm_blocks_t send = {0, sendcounts, sdispls}, recv = {0, recvcounts, rdispls};
  return alltoall(comm, op, sendbuf, &send, recvbuf, &recv, dtype, mem);
}
