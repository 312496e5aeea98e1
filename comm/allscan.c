/* All-Scan (see allscan.h): the buffer is cut into K blocks that flow down the chain of ranks
 * in scan order; each rank combines block b with its own contribution and forwards it while
 * block b+1 is still arriving.
 *
 * Every receive is posted before the first combine, so the predecessor's blocks land as soon
 * as they are sent, and every send is non-blocking, so forwarding block b never waits for
 * the successor. Matching needs no per-block tag: MPI keeps the order of messages between one
 * pair on one tag, so the k-th send meets the k-th receive.
 *
 * Buffers per rank position (y = the running result sent on, tmp = one scratch buffer):
 *   first:  sends `local` (combine(identity, x) = x); inclusive result = local,
 *           exclusive result = zeros, written after the sends when result aliases local.
 *   middle: inclusive: receive into tmp, result = combine(tmp, local), send result.
 *           exclusive: receive into result, tmp = combine(result, local), send tmp; when
 *           result aliases local, receive into tmp, local = combine(tmp, local), send local,
 *           and copy tmp into result once the sends are done.
 *   last:   inclusive: receive into tmp, result = combine(tmp, local).
 *           exclusive: receive straight into result (nothing to combine or send). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "comm_internal.h"
#include "weft/allscan.h"
#include "weft/check.h"
#include "weft/log.h"

/* Below WEFT_COMM_TAG_SENDRECV; documented in comm.h as taken by the scan. */
#define ALLSCAN_TAG 32766
/* More blocks than this only add per-message latency, and bound the request arrays. */
#define ALLSCAN_MAX_BLOCKS 4096
/* Link model for blocks == 0: a few microseconds of latency, about 10 GB/s. */
#define ALLSCAN_DEFAULT_ALPHA_S 5e-6
#define ALLSCAN_DEFAULT_BETA    10e9

size_t weft_allscan_auto_blocks(size_t bytes, size_t count, int ranks, double alpha_s,
                                double beta_bytes_per_s) {
  if (count <= 1 || ranks <= 1 || !(alpha_s > 0) || !(beta_bytes_per_s > 0)) return 1;
  double k = sqrt((double)(ranks - 1) * (double)bytes / (alpha_s * beta_bytes_per_s));
  size_t blocks = k < 1.0 ? 1 : (size_t)(k + 0.5);
  if (blocks > ALLSCAN_MAX_BLOCKS) blocks = ALLSCAN_MAX_BLOCKS;
  return blocks > count ? count : blocks;
}

/* Block b of K starts here; the first count % K blocks hold one element more. */
static size_t block_start(size_t b, size_t blocks, size_t count) {
  size_t base = count / blocks, extra = count % blocks;
  return b * base + (b < extra ? b : extra);
}

static weft_status_t copy_bytes(weft_comm_t *comm, weft_mem_t mem, void *dst, const void *src,
                                size_t bytes) {
  if (dst == src || bytes == 0) return WEFT_OK;
  if (!weft_comm_on_gpu(comm, mem)) {
    memcpy(dst, src, bytes);
    return WEFT_OK;
  }
  return weft_device_copy(comm->device, dst, src, bytes, WEFT_COPY_DEVICE_TO_DEVICE);
}

static weft_status_t zero_bytes(weft_comm_t *comm, weft_mem_t mem, void *dst, size_t bytes) {
  if (!weft_comm_on_gpu(comm, mem)) {
    memset(dst, 0, bytes);
    return WEFT_OK;
  }
  return weft_device_memset(comm->device, dst, 0, bytes);
}

/* One scan on one rank: its neighbours, its buffers and its pending requests. */
typedef struct scan {
  weft_comm_t *comm;
  const weft_allscan_op_t *op;
  weft_mem_t mem;
  size_t count, esize, blocks;
  int pred, succ; /* -1 at the ends of the chain */
  weft_comm_req_t *recvs, *sends;
} scan_t;

static char *at(const void *base, const scan_t *s, size_t element) {
  return (char *)base + element * s->esize;
}

static weft_status_t post_recvs(scan_t *s, void *dst) {
  for (size_t b = 0; b < s->blocks; b++) {
    size_t lo = block_start(b, s->blocks, s->count), hi = block_start(b + 1, s->blocks, s->count);
    WEFT_CHECK(weft_comm_irecv(s->comm, at(dst, s, lo), hi - lo, s->op->dtype, s->pred, ALLSCAN_TAG,
                               s->mem, &s->recvs[b]));
  }
  return WEFT_OK;
}

static weft_status_t send_block(scan_t *s, size_t b, const void *src) {
  size_t lo = block_start(b, s->blocks, s->count), hi = block_start(b + 1, s->blocks, s->count);
  return weft_comm_isend(s->comm, at(src, s, lo), hi - lo, s->op->dtype, s->succ, ALLSCAN_TAG,
                         s->mem, &s->sends[b]);
}

/* For each block: wait for it in `in`, write combine(in, local) to `out` (out NULL: only
 * wait, for the last rank of an exclusive scan), forward `send` (which is `in` or `out`) when
 * there is a successor. Waiting block by block returns at the first deadline; the caller
 * settles the rest within one more (wait_once). */
static weft_status_t combine_chain(scan_t *s, void *in, const void *local, void *out,
                                   const void *send) {
  for (size_t b = 0; b < s->blocks; b++) {
    size_t lo = block_start(b, s->blocks, s->count), hi = block_start(b + 1, s->blocks, s->count);
    WEFT_CHECK(weft_comm_wait(&s->recvs[b]));
    if (out) {
      weft_status_t st =
          s->op->combine(s->op->user, lo, hi - lo, at(in, s, lo), at(local, s, lo), at(out, s, lo));
      if (st != WEFT_OK) {
        WEFT_ERROR("comm", "all-scan on '%s': the combine failed on elements [%zu, %zu): %s",
                   weft_comm_name(s->comm), lo, hi, weft_status_str(st));
        return st;
      }
    }
    if (s->succ >= 0) WEFT_CHECK(send_block(s, b, send));
  }
  return WEFT_OK;
}

/* Waits for the requests still active in reqs within ONE deadline of the communicator
 * (waiting on them one by one could take K deadlines when a neighbour is gone), then frees
 * their staging. Receives pending at the deadline are cancelled; a send that cannot finish
 * marks the communicator broken (comm.h). *over_p: no request is left inside MPI, so the
 * buffers they use may be freed. Used for the sends of a successful scan (whose receives
 * were each waited for, with their device copies) and for everything after a failure. */
static weft_status_t wait_once(weft_comm_t *comm, weft_comm_req_t *reqs, size_t n,
                               weft_comm_op_t op, int peer, bool *over_p) {
  *over_p = false;
  MPI_Request *mpi = malloc((n ? n : 1) * sizeof *mpi);
  if (!mpi) return WEFT_ERR_NO_MEMORY;
  int pending = 0;
  for (size_t i = 0; i < n; i++)
    if (reqs[i].active) memcpy(&mpi[pending++], &reqs[i].mpi_request, sizeof *mpi);
  weft_status_t st = WEFT_OK;
  if (pending > 0) st = weft_comm_wait_mpi(comm, mpi, pending, op, peer, op == WEFT_COMM_OP_RECV);
  free(mpi);
  *over_p = st == WEFT_OK || op == WEFT_COMM_OP_RECV; /* a cancelled receive is over too */
  if (!*over_p) return st; /* MPI may still read the staging copies: leave them */
  for (size_t i = 0; i < n; i++) {
    if (!reqs[i].active) continue;
    weft_host_free_pinned(comm->device, reqs[i].staging);
    memset(&reqs[i], 0, sizeof reqs[i]);
  }
  return st;
}

static weft_status_t wait_sends(scan_t *s) {
  bool over;
  return wait_once(s->comm, s->sends, s->blocks, WEFT_COMM_OP_SEND, s->succ, &over);
}

static weft_status_t check_args(const weft_comm_t *comm, const void *local, const void *result,
                                size_t count, const weft_allscan_op_t *op,
                                weft_allscan_direction_t direction, weft_allscan_kind_t kind) {
  const char *name = comm ? weft_comm_name(comm) : "(null)";
  if (!comm || !op || !op->combine) {
    WEFT_ERROR("comm", "all-scan on '%s': %s is NULL", name,
               !comm ? "the communicator"
               : !op ? "the operation"
                     : "the combine function");
    return WEFT_ERR_INVALID_ARG;
  }
  if (direction != WEFT_ALLSCAN_FORWARD && direction != WEFT_ALLSCAN_REVERSE) {
    WEFT_ERROR("comm", "all-scan on '%s': direction %d is neither forward nor reverse", name,
               (int)direction);
    return WEFT_ERR_INVALID_ARG;
  }
  if (kind != WEFT_ALLSCAN_INCLUSIVE && kind != WEFT_ALLSCAN_EXCLUSIVE) {
    WEFT_ERROR("comm", "all-scan on '%s': kind %d is neither inclusive nor exclusive", name,
               (int)kind);
    return WEFT_ERR_INVALID_ARG;
  }
  if (count > 0 && (!local || !result)) {
    WEFT_ERROR("comm", "all-scan on '%s': %s buffer is NULL for %zu elements", name,
               !local ? "the local" : "the result", count);
    return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

weft_status_t weft_allscan(weft_comm_t *comm, const void *local, void *result, size_t count,
                           const weft_allscan_op_t *op, weft_allscan_direction_t direction,
                           weft_allscan_kind_t kind, size_t blocks, weft_mem_t mem) {
  WEFT_CHECK(check_args(comm, local, result, count, op, direction, kind));
  if (count == 0) return WEFT_OK;
  const int p = comm->size, me = comm->rank;
  const bool forward = direction == WEFT_ALLSCAN_FORWARD;
  const int pos = forward ? me : p - 1 - me; /* place in scan order */
  const int step = forward ? 1 : -1;
  const bool exclusive = kind == WEFT_ALLSCAN_EXCLUSIVE;
  const bool aliased = result == local;
  scan_t s = {.comm = comm,
              .op = op,
              .mem = mem,
              .count = count,
              .esize = weft_dtype_size(op->dtype),
              .pred = pos > 0 ? me - step : -1,
              .succ = pos < p - 1 ? me + step : -1};
  const size_t bytes = count * s.esize;
  if (blocks == 0)
    blocks =
        weft_allscan_auto_blocks(bytes, count, p, ALLSCAN_DEFAULT_ALPHA_S, ALLSCAN_DEFAULT_BETA);
  if (blocks > count) blocks = count;
  if (blocks > ALLSCAN_MAX_BLOCKS) blocks = ALLSCAN_MAX_BLOCKS;
  s.blocks = blocks;

  /* A lone rank: the scan of one contribution. */
  if (p == 1)
    return exclusive ? zero_bytes(comm, mem, result, bytes)
                     : copy_bytes(comm, mem, result, local, bytes);

  weft_status_t st = WEFT_OK;
  void *tmp = NULL;
  const bool tmp_on_gpu = weft_comm_on_gpu(comm, mem);
  s.recvs = calloc(blocks, sizeof *s.recvs);
  s.sends = calloc(blocks, sizeof *s.sends);
  if (!s.recvs || !s.sends) {
    WEFT_ERROR("comm", "all-scan on '%s': out of host memory for %zu requests", comm->name, blocks);
    st = WEFT_ERR_NO_MEMORY;
    goto done;
  }
  const bool needs_tmp = s.pred >= 0 && !(exclusive && s.succ < 0);
  if (needs_tmp) {
    if (tmp_on_gpu) {
      WEFT_CHECK_GOTO(weft_device_alloc(comm->device, bytes, &tmp), st, done);
    } else if (!(tmp = malloc(bytes))) {
      WEFT_ERROR("comm", "all-scan on '%s': out of host memory for %zu bytes", comm->name, bytes);
      st = WEFT_ERR_NO_MEMORY;
      goto done;
    }
  }

  if (s.pred < 0) { /* first in scan order */
    for (size_t b = 0; b < blocks; b++) WEFT_CHECK_GOTO(send_block(&s, b, local), st, done);
    if (!exclusive) WEFT_CHECK_GOTO(copy_bytes(comm, mem, result, local, bytes), st, done);
    WEFT_CHECK_GOTO(wait_sends(&s), st, done);
    if (exclusive) WEFT_CHECK_GOTO(zero_bytes(comm, mem, result, bytes), st, done);
  } else if (exclusive && s.succ < 0) { /* last, exclusive: only receive */
    WEFT_CHECK_GOTO(post_recvs(&s, result), st, done);
    WEFT_CHECK_GOTO(combine_chain(&s, result, local, NULL, NULL), st, done);
  } else if (!exclusive) {
    WEFT_CHECK_GOTO(post_recvs(&s, tmp), st, done);
    WEFT_CHECK_GOTO(combine_chain(&s, tmp, local, result, result), st, done);
  } else if (!aliased) { /* middle, exclusive */
    WEFT_CHECK_GOTO(post_recvs(&s, result), st, done);
    WEFT_CHECK_GOTO(combine_chain(&s, result, local, tmp, tmp), st, done);
  } else { /* middle, exclusive, in place: local becomes y_p until the sends are done */
    WEFT_CHECK_GOTO(post_recvs(&s, tmp), st, done);
    WEFT_CHECK_GOTO(combine_chain(&s, tmp, local, result, result), st, done);
  }
  if (s.pred >= 0 && s.succ >= 0) {
    WEFT_CHECK_GOTO(wait_sends(&s), st, done);
    if (exclusive && aliased) WEFT_CHECK_GOTO(copy_bytes(comm, mem, result, tmp, bytes), st, done);
  }

done:
  /* On failure, settle what is still in flight before the buffers go: receives complete when
   * the predecessor sends (so it is not left hanging) or are cancelled at the deadline;
   * unsent blocks leave the successor to time out, as allscan.h documents. On success every
   * request is already over. A send MPI still holds keeps tmp alive (the job must abort). */
  bool settled = true, over;
  if (s.recvs) {
    wait_once(comm, s.recvs, blocks, WEFT_COMM_OP_RECV, s.pred, &over);
    settled = settled && over;
  }
  if (s.sends) {
    wait_once(comm, s.sends, blocks, WEFT_COMM_OP_SEND, s.succ, &over);
    settled = settled && over;
  }
  if (settled) {
    if (tmp_on_gpu)
      weft_device_free(comm->device, tmp);
    else
      free(tmp);
  }
  free(s.recvs);
  free(s.sends);
  return st;
}
