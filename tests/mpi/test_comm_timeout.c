/* Deadlines (comm.h): a wait that cannot complete returns WEFT_ERR_TIMEOUT within about the
 * communicator's timeout instead of hanging, and the job can go on and finalise.
 *
 * 1. A missing send. Rank 0 waits for a message rank 1 never sends: the wait returns
 *    WEFT_ERR_TIMEOUT after ~1 s (asserted below 10 s). A timed-out receive is cancelled, so
 *    the communicator stays usable and the cancelled receive must not steal the message rank 1
 *    sends later on the same tag. waitall with one satisfied and one missing receive returns
 *    the timeout, delivers the satisfied one and cleans up both (device memory: staged
 *    through pinned host memory on a GPU).
 * 2. A missing receive. Rank 0 sends 4 MiB (past every eager limit, so the send cannot
 *    complete on its own) that rank 1 does not receive in time: WEFT_ERR_TIMEOUT, and since a
 *    send cannot be cancelled the communicator is broken. Rank 1 then receives late: the
 *    orphaned send completes with the right data, so its buffer (on a GPU, the pinned staging
 *    copy) must not have been freed under MPI.
 * 3. A collective only rank 0 entered, on a communicator split for the purpose (the world
 *    stays usable): WEFT_ERR_TIMEOUT, after which every operation on that communicator fails
 *    fast with WEFT_ERR_COMM (broken) on rank 0, without blocking. MPI cannot cancel the
 *    pending MPI_Ibarrier; the other ranks, told by a message on the world that rank 0 gave
 *    up, then join that barrier on their (unbroken) side so the orphaned request completes
 *    and nothing is left in flight when the communicator is freed and MPI finalises (a
 *    request still pending at MPI_Finalize is erroneous in MPI).
 * 4. WEFT_COMM_TIMEOUT_S sets the default deadline of new communicators; splits inherit the
 *    parent's deadline.
 * Bootstrapped with WEFT_DEVICE_REQUEST_AUTO so device buffers are GPU memory where there is
 * one; NCCL is switched off (WEFT_COMM_NCCL=0) because these are MPI deadlines (an NCCL
 * timeout aborts the NCCL communicator, which this test does not cover). Needs 2 ranks or
 * more (skips at 1). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "weft/bootstrap.h"
#include "weft/comm.h"
#include "weft/timer.h"

#define SHORT_TIMEOUT_S 1.0  /* the deadline under test */
#define LONG_TIMEOUT_S  60.0 /* everything that is expected to complete */
#define MAX_EXPIRY_S    10.0 /* a 1 s deadline must fire well before this */

static void check_expiry(double seconds, const char *what) {
  WT_CHECK(seconds >= SHORT_TIMEOUT_S * 0.9 && seconds < MAX_EXPIRY_S,
           "%s: timed out after %.2f s with a %.1f s deadline", what, seconds, SHORT_TIMEOUT_S);
  printf("rank 0: %s timed out after %.2f s (deadline %.1f s)\n", what, seconds, SHORT_TIMEOUT_S);
}

static void test_p2p_timeout(weft_comm_t *world, int me) {
  weft_comm_t *p2p = NULL;
  WT_CHECK_OK(weft_comm_split(world, 0, me, "p2p", &p2p));
  if (!p2p) return;
  const weft_device_t *dev = weft_comm_device(p2p);
  if (me == 0) {
    weft_comm_set_timeout(p2p, SHORT_TIMEOUT_S);
    WT_CHECK(weft_comm_timeout(p2p) == SHORT_TIMEOUT_S, "timeout set");

    /* A missing send. */
    int32_t v = -1;
    weft_comm_req_t req;
    WT_CHECK_OK(weft_comm_irecv(p2p, &v, 1, WEFT_DTYPE_I32, 1, 5, WEFT_MEM_HOST, &req));
    double t0 = weft_time_now();
    WT_CHECK_STATUS(weft_comm_wait(&req), WEFT_ERR_TIMEOUT);
    check_expiry(weft_time_now() - t0, "irecv from rank 1 (never sent)");
    WT_CHECK(v == -1, "a timed-out receive must not write the buffer (%d)", (int)v);
    WT_CHECK_STATUS(weft_comm_wait(&req), WEFT_ERR_INVALID_ARG); /* cleaned up */

    /* waitall: tag 1 arrives, tag 2 never does. Device buffers on the CPU device. */
    void *a = NULL, *b = NULL;
    WT_CHECK_OK(weft_device_alloc(dev, 64, &a));
    WT_CHECK_OK(weft_device_alloc(dev, 64, &b));
    weft_comm_req_t reqs[2];
    WT_CHECK_OK(weft_comm_irecv(p2p, a, 1, WEFT_DTYPE_I32, 1, 1, WEFT_MEM_DEVICE, &reqs[0]));
    WT_CHECK_OK(weft_comm_irecv(p2p, b, 1, WEFT_DTYPE_I32, 1, 2, WEFT_MEM_DEVICE, &reqs[1]));
    t0 = weft_time_now();
    WT_CHECK_STATUS(weft_comm_waitall(reqs, 2), WEFT_ERR_TIMEOUT);
    check_expiry(weft_time_now() - t0, "waitall with one missing receive");
    int32_t got = 0;
    WT_CHECK_OK(weft_device_copy(dev, &got, a, sizeof got, WEFT_COPY_DEVICE_TO_HOST));
    WT_CHECK(got == 42, "the satisfied receive of waitall delivered %d, expected 42", (int)got);
    WT_CHECK_STATUS(weft_comm_wait(&reqs[0]), WEFT_ERR_INVALID_ARG);
    WT_CHECK_STATUS(weft_comm_wait(&reqs[1]), WEFT_ERR_INVALID_ARG);
    weft_device_free(dev, a);
    weft_device_free(dev, b);
    weft_comm_set_timeout(p2p, LONG_TIMEOUT_S);
  } else if (me == 1) {
    int32_t v = 42;
    weft_comm_req_t req;
    WT_CHECK_OK(weft_comm_isend(p2p, &v, 1, WEFT_DTYPE_I32, 0, 1, WEFT_MEM_HOST, &req));
    WT_CHECK_OK(weft_comm_wait(&req));
  }
  WT_CHECK_OK(weft_comm_barrier(world)); /* rank 1 sends on tags 5 and 2 only now */

  /* The cancelled receives took nothing: these messages reach the new receives. */
  if (me == 0) {
    int32_t v5 = 0, v2 = 0;
    weft_comm_req_t reqs[2];
    WT_CHECK_OK(weft_comm_irecv(p2p, &v5, 1, WEFT_DTYPE_I32, 1, 5, WEFT_MEM_HOST, &reqs[0]));
    WT_CHECK_OK(weft_comm_irecv(p2p, &v2, 1, WEFT_DTYPE_I32, 1, 2, WEFT_MEM_HOST, &reqs[1]));
    WT_CHECK_OK(weft_comm_waitall(reqs, 2));
    WT_CHECK(v5 == 77 && v2 == 88, "after cancellation got %d and %d, expected 77 and 88", (int)v5,
             (int)v2);
  } else if (me == 1) {
    int32_t v5 = 77, v2 = 88;
    weft_comm_req_t reqs[2];
    WT_CHECK_OK(weft_comm_isend(p2p, &v5, 1, WEFT_DTYPE_I32, 0, 5, WEFT_MEM_HOST, &reqs[0]));
    WT_CHECK_OK(weft_comm_isend(p2p, &v2, 1, WEFT_DTYPE_I32, 0, 2, WEFT_MEM_HOST, &reqs[1]));
    WT_CHECK_OK(weft_comm_waitall(reqs, 2));
  }
  /* Not broken: a collective on the same communicator still works everywhere. */
  WT_CHECK_OK(weft_comm_barrier(p2p));
  weft_comm_destroy(p2p);
}

static void test_send_timeout(weft_comm_t *world, int me) {
  weft_comm_t *comm = NULL;
  WT_CHECK_OK(weft_comm_split(world, 0, me, "sendvictim", &comm));
  if (!comm) return;
  const weft_device_t *dev = weft_comm_device(comm);
  const size_t n = ((size_t)1 << 20) + 1; /* 4 MiB of f32: a rendezvous send everywhere */
  float *host = malloc(n * sizeof *host);
  if (!host) {
    WT_CHECK(0, "out of memory");
    weft_comm_destroy(comm);
    return;
  }
  weft_comm_req_t req;
  int32_t flag = 1;
  if (me == 0) {
    for (size_t i = 0; i < n; i++) host[i] = (float)(i % 1000003);
    void *buf = NULL;
    WT_CHECK_OK(weft_device_alloc(dev, n * sizeof *host, &buf));
    WT_CHECK_OK(weft_device_copy(dev, buf, host, n * sizeof *host, WEFT_COPY_HOST_TO_DEVICE));
    weft_comm_set_timeout(comm, SHORT_TIMEOUT_S);
    WT_CHECK_OK(weft_comm_isend(comm, buf, n, WEFT_DTYPE_F32, 1, 3, WEFT_MEM_DEVICE, &req));
    double t0 = weft_time_now();
    WT_CHECK_STATUS(weft_comm_wait(&req), WEFT_ERR_TIMEOUT);
    check_expiry(weft_time_now() - t0, "isend of 4 MiB nobody received");
    WT_CHECK_STATUS(weft_comm_barrier(comm), WEFT_ERR_COMM); /* broken */
    WT_CHECK_OK(weft_comm_isend(world, &flag, 1, WEFT_DTYPE_I32, 1, 11, WEFT_MEM_HOST, &req));
    WT_CHECK_OK(weft_comm_wait(&req));
    WT_CHECK_OK(weft_comm_barrier(world)); /* rank 1 receives meanwhile; MPI progresses here */
    weft_device_free(dev, buf);            /* the receive is complete: no longer in use */
  } else if (me == 1) {
    int32_t got = 0;
    WT_CHECK_OK(weft_comm_irecv(world, &got, 1, WEFT_DTYPE_I32, 0, 11, WEFT_MEM_HOST, &req));
    WT_CHECK_OK(weft_comm_wait(&req));
    weft_comm_set_timeout(comm, LONG_TIMEOUT_S);
    memset(host, 0, n * sizeof *host);
    WT_CHECK_OK(weft_comm_irecv(comm, host, n, WEFT_DTYPE_F32, 0, 3, WEFT_MEM_HOST, &req));
    WT_CHECK_OK(weft_comm_wait(&req));
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) wrong += host[i] != (float)(i % 1000003);
    WT_CHECK(wrong == 0, "late receive of the timed-out send: %zu of %zu elements wrong", wrong, n);
    WT_CHECK_OK(weft_comm_barrier(world));
  } else {
    WT_CHECK_OK(weft_comm_barrier(world));
  }
  free(host);
  weft_comm_destroy(comm);
}

static void test_collective_timeout(weft_comm_t *world, int me, int size) {
  weft_comm_t *victim = NULL;
  WT_CHECK_OK(weft_comm_split(world, 0, me, "victim", &victim));
  if (!victim) return;
  weft_comm_set_timeout(victim, SHORT_TIMEOUT_S);
  WT_CHECK_OK(weft_comm_barrier(victim)); /* all ranks: works */
  WT_CHECK_OK(weft_comm_barrier(world));
  int32_t flag = 1, buf[8] = {0};
  if (me == 0) {
    double t0 = weft_time_now();
    WT_CHECK_STATUS(weft_comm_barrier(victim), WEFT_ERR_TIMEOUT);
    check_expiry(weft_time_now() - t0, "barrier only rank 0 entered");

    /* Broken: everything fails fast, nothing reaches MPI (a split would otherwise block). */
    t0 = weft_time_now();
    weft_comm_req_t req;
    weft_comm_t *child = NULL;
    WT_CHECK_STATUS(weft_comm_barrier(victim), WEFT_ERR_COMM);
    WT_CHECK_STATUS(weft_comm_bcast(victim, buf, 1, WEFT_DTYPE_I32, 0, WEFT_MEM_HOST),
                    WEFT_ERR_COMM);
    WT_CHECK_STATUS(
        weft_comm_allreduce(victim, buf, buf, 1, WEFT_DTYPE_I32, WEFT_REDUCE_SUM, WEFT_MEM_HOST),
        WEFT_ERR_COMM);
    WT_CHECK_STATUS(weft_comm_allgather(victim, buf, buf + 1, 1, WEFT_DTYPE_I32, WEFT_MEM_HOST),
                    WEFT_ERR_COMM);
    WT_CHECK_STATUS(weft_comm_alltoall(victim, buf, buf + 4, 1, WEFT_DTYPE_I32, WEFT_MEM_HOST),
                    WEFT_ERR_COMM);
    WT_CHECK_STATUS(
        weft_comm_sendrecv(victim, buf, 1, 1, buf + 1, 1, 1, WEFT_DTYPE_I32, WEFT_MEM_HOST),
        WEFT_ERR_COMM);
    WT_CHECK_STATUS(weft_comm_isend(victim, buf, 1, WEFT_DTYPE_I32, 1, 0, WEFT_MEM_HOST, &req),
                    WEFT_ERR_COMM);
    WT_CHECK_STATUS(weft_comm_wait(&req), WEFT_ERR_INVALID_ARG);
    WT_CHECK_STATUS(weft_comm_irecv(victim, buf, 1, WEFT_DTYPE_I32, 1, 0, WEFT_MEM_HOST, &req),
                    WEFT_ERR_COMM);
    WT_CHECK_STATUS(weft_comm_split(victim, 0, 0, "child", &child), WEFT_ERR_COMM);
    WT_CHECK(child == NULL, "no child from a broken communicator");
    double fast = weft_time_now() - t0;
    WT_CHECK(fast < 0.5, "operations on a broken communicator took %.2f s", fast);

    /* Tell the others the deadline has passed. */
    for (int p = 1; p < size; p++) {
      WT_CHECK_OK(weft_comm_isend(world, &flag, 1, WEFT_DTYPE_I32, p, 9, WEFT_MEM_HOST, &req));
      WT_CHECK_OK(weft_comm_wait(&req));
    }
  } else {
    weft_comm_req_t req;
    int32_t got = 0;
    WT_CHECK_OK(weft_comm_irecv(world, &got, 1, WEFT_DTYPE_I32, 0, 9, WEFT_MEM_HOST, &req));
    WT_CHECK_OK(weft_comm_wait(&req));
    WT_CHECK(got == flag, "notification");
    /* Join the barrier rank 0 left pending: it completes, and rank 0's orphaned request with
     * it (rank 0 drives MPI progress while it waits in the world barrier below). */
    weft_comm_set_timeout(victim, LONG_TIMEOUT_S);
    WT_CHECK_OK(weft_comm_barrier(victim));
  }
  WT_CHECK_OK(weft_comm_barrier(world)); /* the world was never affected */
  weft_comm_destroy(victim);
  WT_CHECK_OK(weft_comm_barrier(world));
}

static void test_timeout_env(const weft_bootstrap_t *boot) {
  setenv("WEFT_COMM_TIMEOUT_S", "2.5", 1);
  weft_comm_t *comm = NULL, *child = NULL;
  WT_CHECK_OK(weft_comm_create_world(boot, &comm));
  unsetenv("WEFT_COMM_TIMEOUT_S");
  if (!comm) return;
  WT_CHECK(weft_comm_timeout(comm) == 2.5, "WEFT_COMM_TIMEOUT_S=2.5 gave %g",
           weft_comm_timeout(comm));
  weft_comm_set_timeout(comm, 7.0);
  WT_CHECK_OK(weft_comm_split(comm, 0, 0, "child", &child));
  if (child) WT_CHECK(weft_comm_timeout(child) == 7.0, "split inherits the parent's deadline");
  weft_comm_destroy(child);
  weft_comm_destroy(comm);
}

int main(int argc, char **argv) {
  weft_bootstrap_t boot;
  if (weft_comm_bootstrap(&argc, &argv, WEFT_DEVICE_REQUEST_AUTO, &boot) != WEFT_OK)
    weft_comm_abort(1);
  setenv("WEFT_COMM_NCCL", "0", 1); /* MPI deadlines only (see the note at the top) */
  weft_test_set_rank(boot.world_rank);
  weft_comm_t *world = NULL;
  if (weft_comm_create_world(&boot, &world) != WEFT_OK) weft_comm_abort(1);
  weft_comm_set_timeout(world, LONG_TIMEOUT_S);
  if (boot.world_size < 2) {
    if (boot.world_rank == 0) printf("test_comm_timeout: skipped (needs 2 ranks or more)\n");
    weft_comm_destroy(world);
    weft_comm_finalize(&boot);
    return WEFT_TEST_SKIP;
  }
  test_p2p_timeout(world, boot.world_rank);
  test_send_timeout(world, boot.world_rank);
  test_collective_timeout(world, boot.world_rank, boot.world_size);
  test_timeout_env(&boot);
  WT_CHECK_OK(weft_comm_barrier(world));
  weft_comm_destroy(world);
  int rc = weft_test_exit_code("test_comm_timeout");
  weft_comm_finalize(&boot);
  return rc;
}
