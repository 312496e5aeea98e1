/* Every weft_comm operation on the CPU device, with host buffers (WEFT_MEM_HOST) and device
 * buffers (WEFT_MEM_DEVICE, which on the CPU device are host memory reached through
 * weft_device_copy, so the semantics must be the same).
 *
 * Runs the shared suite (comm_suite.c: data of every element, gaps and guards, per-peer byte
 * counters, totals, op statistics, reset) on three communicators: the world; a split with the
 * rank order reversed, so communicator ranks differ from world ranks and any mix-up of the two
 * in data or counters shows; and a split into even and odd world ranks, whose groups differ in
 * size when the world is odd. Then the invalid-argument checks. Run under mpirun at 1-4 ranks.
 */
#include <stdio.h>
#include <string.h>

#include "comm_suite.h"
#include "test_util.h"
#include "weft/bootstrap.h"
#include "weft/comm.h"

/* A hang becomes a timeout error long before ctest's limit. */
#define TEST_COMM_TIMEOUT_S 60.0

static void check_identity(weft_comm_t *comm, const char *name, int rank, int size,
                           const int *world_ranks) {
  WT_CHECK(strcmp(weft_comm_name(comm), name) == 0, "name '%s', expected '%s'",
           weft_comm_name(comm), name);
  WT_CHECK(weft_comm_rank(comm) == rank && weft_comm_size(comm) == size,
           "%s: rank %d of %d, expected %d of %d", name, weft_comm_rank(comm), weft_comm_size(comm),
           rank, size);
  for (int i = 0; i < size; i++)
    WT_CHECK(weft_comm_world_rank_of(comm, i) == world_ranks[i],
             "%s: rank %d is world rank %d, expected %d", name, i, weft_comm_world_rank_of(comm, i),
             world_ranks[i]);
  WT_CHECK(weft_comm_timeout(comm) == TEST_COMM_TIMEOUT_S, "%s: timeout %g not inherited", name,
           weft_comm_timeout(comm));
  WT_CHECK(!weft_comm_has_nccl(comm), "%s: no NCCL on the CPU device", name);
  WT_CHECK(weft_comm_device(comm) && weft_comm_device(comm)->kind == WEFT_DEVICE_CPU,
           "%s: CPU device", name);
}

int main(int argc, char **argv) {
  weft_bootstrap_t boot;
  if (weft_comm_bootstrap(&argc, &argv, WEFT_DEVICE_REQUEST_CPU, &boot) != WEFT_OK)
    weft_comm_abort(1);
  weft_test_set_rank(boot.world_rank);
  const int me = boot.world_rank, P = boot.world_size;
  weft_comm_t *world = NULL, *reversed = NULL, *parity = NULL;
  if (weft_comm_create_world(&boot, &world) != WEFT_OK) weft_comm_abort(1);
  weft_comm_set_timeout(world, TEST_COMM_TIMEOUT_S);

  int ranks[64] = {0};
  if (P > 64) {
    fprintf(stderr, "test_comm_ops: written for up to 64 ranks, not %d\n", P);
    weft_comm_abort(1);
  }
  for (int i = 0; i < P; i++) ranks[i] = i;
  check_identity(world, "world", me, P, ranks);
  comm_suite_run(world, WEFT_MEM_HOST, COMM_SUITE_LARGE, "world/host");
  comm_suite_run(world, WEFT_MEM_DEVICE, COMM_SUITE_LARGE, "world/device");

  /* key = P-1-rank: communicator rank i is world rank P-1-i. */
  if (weft_comm_split(world, 0, P - 1 - me, "reversed", &reversed) != WEFT_OK) weft_comm_abort(1);
  for (int i = 0; i < P; i++) ranks[i] = P - 1 - i;
  check_identity(reversed, "reversed", P - 1 - me, P, ranks);
  comm_suite_run(reversed, WEFT_MEM_HOST, 0, "reversed/host");
  comm_suite_run(reversed, WEFT_MEM_DEVICE, 0, "reversed/device");

  if (weft_comm_split(world, me % 2, me, "parity", &parity) != WEFT_OK) weft_comm_abort(1);
  int n = 0;
  for (int i = me % 2; i < P; i += 2) ranks[n++] = i;
  check_identity(parity, "parity", me / 2, n, ranks);
  comm_suite_run(parity, WEFT_MEM_HOST, 0, "parity/host");
  comm_suite_run(parity, WEFT_MEM_DEVICE, 0, "parity/device");

  comm_suite_invalid_args(world, WEFT_MEM_HOST);
  comm_suite_invalid_args(parity, WEFT_MEM_DEVICE);

  weft_comm_destroy(parity);
  weft_comm_destroy(reversed);
  weft_comm_destroy(world);
  weft_comm_destroy(NULL); /* a no-op */
  int rc = weft_test_exit_code("test_comm_ops");
  weft_comm_finalize(&boot);
  return rc;
}
