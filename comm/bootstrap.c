/* MPI start-up, node-local rank and device selection (design.md section 3).
 *
 * The local rank comes from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) rather than from
 * launcher variables: OMPI_COMM_WORLD_LOCAL_RANK only exists under mpirun and SLURM_LOCALID
 * is wrong under mpirun inside an sbatch allocation, while the shared-memory split is right
 * under every launcher. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm_internal.h"
#include "weft/bootstrap.h"
#include "weft/check.h"

static bool g_mpi_initialised_by_weft;

bool weft_comm_mpi_active(void) {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  return initialised && !finalised;
}

weft_status_t weft_device_request_parse(const char *text, weft_device_request_t *request_p) {
  static const char *const names[] = {"auto", "cpu", "cuda"};
  for (int i = 0; i < 3; i++) {
    if (text && strcmp(text, names[i]) == 0) {
      *request_p = (weft_device_request_t)i;
      return WEFT_OK;
    }
  }
  WEFT_ERROR("boot", "unknown device '%s' (expected auto, cpu or cuda)", text ? text : "(null)");
  return WEFT_ERR_INVALID_ARG;
}

static weft_status_t bootstrap_local_rank(weft_bootstrap_t *boot) {
  MPI_Comm node;
  WEFT_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, boot->world_rank,
                                     MPI_INFO_NULL, &node));
  MPI_Comm_rank(node, &boot->local_rank);
  MPI_Comm_size(node, &boot->local_size);
  MPI_Comm_free(&node);
  int leader = boot->local_rank == 0;
  WEFT_MPI_CHECK(MPI_Allreduce(&leader, &boot->node_count, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
  return WEFT_OK;
}

static weft_status_t bootstrap_device(weft_bootstrap_t *boot, weft_device_request_t request) {
  boot->gpus_visible = weft_device_cuda_count();
  bool use_gpu = request == WEFT_DEVICE_REQUEST_CUDA ||
                 (request == WEFT_DEVICE_REQUEST_AUTO && boot->gpus_visible > 0);
  if (!use_gpu) return weft_device_open(WEFT_DEVICE_CPU, 0, &boot->device);
  if (boot->gpus_visible == 0) {
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    WEFT_ERROR("boot",
               "--device cuda requested but no GPU is visible on %s (%s; "
               "CUDA_VISIBLE_DEVICES=%s)",
               boot->host,
               WEFT_HAVE_CUDA ? "no usable CUDA device" : "this build has no CUDA backend",
               visible ? visible : "unset");
    return WEFT_ERR_UNSUPPORTED;
  }
  /* local_rank % n: with more ranks than GPUs, ranks share GPUs round-robin. */
  int ordinal = boot->local_rank % boot->gpus_visible;
  boot->gpu_shared = boot->local_size > boot->gpus_visible;
  if (boot->gpu_shared && boot->local_rank == 0)
    WEFT_WARN("boot",
              "%d ranks share %d GPU(s) on %s: device buffers will be staged through "
              "host memory and NCCL is not used",
              boot->local_size, boot->gpus_visible, boot->host);
  return weft_device_open(WEFT_DEVICE_CUDA, ordinal, &boot->device);
}

weft_status_t weft_comm_bootstrap(int *argc, char ***argv, weft_device_request_t request,
                                  weft_bootstrap_t *boot) {
  memset(boot, 0, sizeof *boot);
  WEFT_CHECK(weft_env_register(&weft_comm_env_table));
  if (!weft_comm_mpi_active()) {
    /* MULTIPLE so later progress threads (KV transfer, overlapped all-reduce) may call MPI. */
    WEFT_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &boot->mpi_thread_level));
    g_mpi_initialised_by_weft = true;
  } else {
    MPI_Query_thread(&boot->mpi_thread_level);
  }
  /* Errors come back as codes so weft can name the operation and peer. */
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &boot->world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &boot->world_size);
  if (gethostname(boot->host, sizeof boot->host) != 0) strcpy(boot->host, "?");
  boot->host[sizeof boot->host - 1] = '\0';
  weft_log_set_identity(boot->world_rank, "-");

  WEFT_CHECK(bootstrap_local_rank(boot));
  WEFT_CHECK(bootstrap_device(boot, request));

  char label[32];
  if (boot->device->kind == WEFT_DEVICE_CUDA)
    snprintf(label, sizeof label, "cuda:%d", boot->device->ordinal);
  else
    snprintf(label, sizeof label, "cpu");
  weft_log_set_identity(boot->world_rank, label);
  if (boot->world_rank == 0) weft_env_warn_unknown();
  WEFT_DEBUG("boot", "rank %d/%d local %d/%d on %s, device %s (%s), MPI thread level %d",
             boot->world_rank, boot->world_size, boot->local_rank, boot->local_size, boot->host,
             label, boot->device->name, boot->mpi_thread_level);
  return WEFT_OK;
}

void weft_comm_finalize(weft_bootstrap_t *boot) {
  if (boot) {
    weft_device_close(boot->device);
    boot->device = NULL;
  }
  if (g_mpi_initialised_by_weft && weft_comm_mpi_active()) MPI_Finalize();
  g_mpi_initialised_by_weft = false;
}

void weft_comm_abort(int exit_code) {
  if (weft_comm_mpi_active()) MPI_Abort(MPI_COMM_WORLD, exit_code);
  exit(exit_code);
}
