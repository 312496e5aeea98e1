/* Environment variables read by src/runtime. */
#include "weft/env.h"

static const weft_env_var_t k_runtime_vars[] = {
    {"WEFT_CPU_THREADS", "0",
     "Threads each rank's CPU kernels (OpenBLAS included) may use; 0 = the node's cores "
     "divided by the ranks on the node (at least 1), capped at the cores the rank is bound to."},
    {"WEFT_CKPT_IO", "posix",
     "How checkpoint rows reach the file: posix (every rank pwrites its rows at their byte "
     "offsets, then fdatasync) or mpiio (collective MPI_File_write_at_all on a communicator of "
     "the writer's own, for parallel file systems that want MPI-IO's aggregation)."},
    {"WEFT_FAULT_KILL_IN_SAVE", "-1",
     "Testing only: the world rank that kills itself (SIGKILL) in the middle of the next "
     "checkpoint save, after writing its datasets and before the commit; -1 = never."},
};

const weft_env_table_t weft_runtime_env_table = {"runtime", k_runtime_vars,
                                                 sizeof k_runtime_vars / sizeof k_runtime_vars[0]};
