/* Process start-up: MPI, the node-local rank, and the device this rank owns.
 *
 * Device selection follows design.md section 3: the local rank comes from
 * MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), which is right under mpirun, srun and
 * mpirun-inside-sbatch (SLURM_LOCALID is not, in the last case). With n visible GPUs the
 * rank uses GPU local_rank % n and warns when ranks share one; with none it uses the CPU
 * device. CUDA_VISIBLE_DEVICES is never rewritten. */
#ifndef WEFT_BOOTSTRAP_H
#define WEFT_BOOTSTRAP_H

#include <stdbool.h>

#include "weft/device.h"
#include "weft/env.h"
#include "weft/status.h"

typedef enum weft_device_request {
  WEFT_DEVICE_REQUEST_AUTO = 0, /* a GPU when one is visible, else the CPU */
  WEFT_DEVICE_REQUEST_CPU = 1,
  WEFT_DEVICE_REQUEST_CUDA = 2, /* error when no GPU is visible */
} weft_device_request_t;

typedef struct weft_bootstrap {
  int world_rank, world_size;
  int local_rank, local_size; /* among the ranks on this node */
  int node_count;             /* distinct nodes in the job */
  char host[64];
  int mpi_thread_level;  /* the MPI_THREAD_* level granted */
  int gpus_visible;      /* CUDA devices this process can see */
  bool gpu_shared;       /* more local ranks than visible GPUs: ranks share a GPU */
  weft_device_t *device; /* the device this rank owns; closed by weft_comm_finalize */
} weft_bootstrap_t;

/* comm's WEFT_* variables; registered by weft_comm_bootstrap. */
extern const weft_env_table_t weft_comm_env_table;

/* Parses "auto", "cpu" or "cuda". */
weft_status_t weft_device_request_parse(const char *text, weft_device_request_t *request_p);

/* Initialises MPI (MPI_Init_thread, MPI_THREAD_MULTIPLE requested), registers comm's
 * environment table, finds the local rank and opens the device. Collective over
 * MPI_COMM_WORLD. On error MPI may be initialised: call weft_comm_abort. */
weft_status_t weft_comm_bootstrap(int *argc, char ***argv, weft_device_request_t request,
                                  weft_bootstrap_t *boot);
/* Closes the device and finalises MPI. Collective. */
void weft_comm_finalize(weft_bootstrap_t *boot);
/* Terminates every rank of the job with `exit_code` (MPI_Abort when MPI is initialised,
 * exit otherwise). For the CLI only: library code returns statuses (design.md section 2). */
void weft_comm_abort(int exit_code) __attribute__((noreturn));
/* true between a successful MPI init and finalize. */
bool weft_comm_mpi_active(void);

#endif /* WEFT_BOOTSTRAP_H */
