/* Environment variables read by comm/. */
#include "weft/env.h"

static const weft_env_var_t k_comm_vars[] = {
    {"WEFT_COMM_TIMEOUT_S", "600",
     "Deadline in seconds for every blocking communication wait; on expiry the operation "
     "fails with a timeout naming the operation and the peer instead of hanging."},
    {"WEFT_COMM_NCCL", "1",
     "1: device buffers use NCCL when every rank has its own GPU; 0: always stage device "
     "buffers through pinned host memory over MPI."},
};

const weft_env_table_t weft_comm_env_table = {"comm", k_comm_vars,
                                              sizeof k_comm_vars / sizeof k_comm_vars[0]};
