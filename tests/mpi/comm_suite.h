/* The communication-operation checks shared by test_comm_ops (CPU device: host and device
 * buffers) and test_comm_ops_gpu (CUDA device buffers, over NCCL or host staging).
 *
 * nccl-tests style: every element of every result is compared with a value the receiving
 * rank computes on its own from (source rank, destination rank, index), so no rank needs
 * another's data to know what it must get. Receive buffers start filled with a sentinel byte;
 * gaps between blocks and a guard tail past every extent must still hold it afterwards, and
 * send buffers must be unchanged. After every operation the per-peer byte counters of
 * weft_comm_last_bytes are compared with the volume comm.h documents; the suite accumulates
 * those expectations and compares them with weft_comm_total_bytes and weft_comm_op_stats at
 * the end, then checks that weft_comm_stats_reset clears everything. */
#ifndef WEFT_TEST_COMM_SUITE_H
#define WEFT_TEST_COMM_SUITE_H

#include <stddef.h>

#include "weft/comm.h"

/* Elements of the "about one million" cases: odd, so no algorithm gets an even split. */
#define COMM_SUITE_LARGE ((size_t)(1u << 20) + 1)

/* Runs every operation check on `comm` with buffers of kind `mem` (device buffers are
 * allocated with weft_device_alloc on the communicator's device and filled and read back with
 * weft_device_copy). `large`: element count of the big cases, 0 to skip them. `label` names
 * the run in failure messages. Collective over `comm`; failures are recorded with
 * weft_test_fail. */
void comm_suite_run(weft_comm_t *comm, weft_mem_t mem, size_t large, const char *label);

/* Invalid arguments: every rank makes the same bad call, which must return
 * WEFT_ERR_INVALID_ARG (or WEFT_ERR_UNSUPPORTED for counts past MPI's int) before anything is
 * posted; the communicator must stay usable afterwards. Collective over `comm`. */
void comm_suite_invalid_args(weft_comm_t *comm, weft_mem_t mem);

#endif /* WEFT_TEST_COMM_SUITE_H */
