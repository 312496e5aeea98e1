/* Every weft_comm operation with buffers in GPU memory (weft_device_alloc on a CUDA device,
 * filled and read back with weft_device_copy), through both device paths: NCCL when every
 * rank has its own GPU, and pinned host staging over MPI (ranks sharing a GPU, or
 * WEFT_COMM_NCCL=0). Host buffers on a CUDA communicator are checked too (they always go
 * through MPI). The checks are the shared suite of comm_suite.c.
 *
 * Skipped (exit 77) unless every rank's device is a GPU: bootstrapped with
 * WEFT_DEVICE_REQUEST_AUTO, so on a machine without one each rank gets the CPU device, and the
 * ranks agree on skipping through an all-reduce so none is left waiting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_suite.h"
#include "test_util.h"
#include "weft/bootstrap.h"
#include "weft/comm.h"

#define TEST_COMM_TIMEOUT_S 60.0 /* a hang becomes a timeout error before ctest's limit */

/* Runs the suite on a world communicator created with WEFT_COMM_NCCL=`nccl_env` on rank
 * `only_rank` (every rank when negative). Every rank must end up on the same path. */
static void run_world_with_env(const weft_bootstrap_t *boot, const char *nccl_env, int only_rank,
                               const char *label) {
  const char *saved = getenv("WEFT_COMM_NCCL");
  char saved_copy[32] = "";
  if (saved) snprintf(saved_copy, sizeof saved_copy, "%s", saved);
  if (only_rank < 0 || only_rank == boot->world_rank) setenv("WEFT_COMM_NCCL", nccl_env, 1);
  weft_comm_t *comm = NULL;
  weft_status_t st = weft_comm_create_world(boot, &comm);
  if (saved)
    setenv("WEFT_COMM_NCCL", saved_copy, 1);
  else
    unsetenv("WEFT_COMM_NCCL");
  WT_CHECK_OK(st);
  if (st != WEFT_OK) weft_comm_abort(1);
  weft_comm_set_timeout(comm, TEST_COMM_TIMEOUT_S);
  /* The path must be agreed: one rank on NCCL and another on MPI would hang. */
  int32_t mine = weft_comm_has_nccl(comm), lo = 0, hi = 0;
  WT_CHECK_OK(
      weft_comm_allreduce(comm, &mine, &lo, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MIN, WEFT_MEM_HOST));
  WT_CHECK_OK(
      weft_comm_allreduce(comm, &mine, &hi, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MAX, WEFT_MEM_HOST));
  WT_CHECK(lo == hi, "%s: ranks disagree on using NCCL", label);
  WT_CHECK(!mine, "%s: NCCL in use although WEFT_COMM_NCCL=0 on some rank", label);
  comm_suite_run(comm, WEFT_MEM_DEVICE, COMM_SUITE_LARGE, label);
  weft_comm_destroy(comm);
}

int main(int argc, char **argv) {
  weft_bootstrap_t boot;
  if (weft_comm_bootstrap(&argc, &argv, WEFT_DEVICE_REQUEST_AUTO, &boot) != WEFT_OK)
    weft_comm_abort(1);
  weft_test_set_rank(boot.world_rank);
  const int me = boot.world_rank, P = boot.world_size;
  weft_comm_t *world = NULL, *reversed = NULL, *parity = NULL;
  if (weft_comm_create_world(&boot, &world) != WEFT_OK) weft_comm_abort(1);
  weft_comm_set_timeout(world, TEST_COMM_TIMEOUT_S);

  int32_t on_gpu = boot.device->kind == WEFT_DEVICE_CUDA, all_on_gpu = 0;
  WT_CHECK_OK(weft_comm_allreduce(world, &on_gpu, &all_on_gpu, 1, WEFT_DTYPE_I32, WEFT_REDUCE_MIN,
                                  WEFT_MEM_HOST));
  if (!all_on_gpu) {
    if (me == 0)
      printf("test_comm_ops_gpu: skipped (%s)\n",
             on_gpu ? "some rank has no GPU" : "this rank's device is the CPU: no GPU visible");
    weft_comm_destroy(world);
    weft_comm_finalize(&boot);
    return WEFT_TEST_SKIP;
  }
  if (me == 0)
    printf("test_comm_ops_gpu: %d rank(s), %d GPU(s) visible per node, device buffers via %s\n", P,
           boot.gpus_visible,
           weft_comm_has_nccl(world) ? "NCCL" : "pinned host staging (ranks share a GPU)");
  const char *nccl_env = getenv("WEFT_COMM_NCCL");
  if (!nccl_env || strcmp(nccl_env, "0") != 0)
    WT_CHECK(weft_comm_has_nccl(world) == !boot.gpu_shared,
             "NCCL must be used exactly when every rank has its own GPU (gpu_shared=%d)",
             (int)boot.gpu_shared);

  comm_suite_run(world, WEFT_MEM_DEVICE, COMM_SUITE_LARGE, "world/gpu");
  comm_suite_run(world, WEFT_MEM_HOST, 0, "world/host-on-cuda");

  /* Staging even where NCCL would be used; then NCCL refused by one rank only, which must
   * switch every rank to staging. */
  run_world_with_env(&boot, "0", -1, "staged/gpu");
  if (P > 1) run_world_with_env(&boot, "0", P - 1, "staged-by-one-rank/gpu");

  /* Splits: NCCL communicators come from ncclCommSplit of the parent's. */
  if (weft_comm_split(world, 0, P - 1 - me, "reversed", &reversed) != WEFT_OK) weft_comm_abort(1);
  WT_CHECK(weft_comm_rank(reversed) == P - 1 - me, "reversed rank");
  WT_CHECK(weft_comm_has_nccl(reversed) == weft_comm_has_nccl(world), "split keeps the path");
  comm_suite_run(reversed, WEFT_MEM_DEVICE, 0, "reversed/gpu");
  if (weft_comm_split(world, me % 2, me, "parity", &parity) != WEFT_OK) weft_comm_abort(1);
  comm_suite_run(parity, WEFT_MEM_DEVICE, 0, "parity/gpu");

  comm_suite_invalid_args(world, WEFT_MEM_DEVICE);

  weft_comm_destroy(parity);
  weft_comm_destroy(reversed);
  weft_comm_destroy(world);
  int rc = weft_test_exit_code("test_comm_ops_gpu");
  weft_comm_finalize(&boot);
  return rc;
}
