/* CLI sessions (see session.h). */
#include "session.h"

#include <sched.h>
#include <stdio.h>
#include <unistd.h>

#include "cli.h"
#include "weft/check.h"
#include "weft/kernel_ctx.h"
#include "weft/log.h"

static void session_fail(const weft_session_t *session, weft_status_t status) {
  fprintf(stderr, "weft %s: error on rank %d: %s (the log line above names the cause)\n",
          session->command, session->boot.world_rank, weft_status_str(status));
  fflush(stderr);
  weft_comm_abort(WEFT_EXIT_FAILURE);
}

/* Cores this process may run on (its affinity mask; mpirun binds each rank to one core by
 * default when there are at most two ranks). */
static long affinity_cores(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
  return CPU_COUNT(&set);
}

/* cores / ranks on this node unless WEFT_CPU_THREADS says otherwise: several ranks per node
 * each running one BLAS thread per core would oversubscribe the node many times over. Capped
 * at the cores the rank is bound to, with a warning: threads sharing one core run no faster
 * than one (a single rank under a default mpirun gets one core of the node). */
static weft_status_t session_set_cpu_threads(const weft_bootstrap_t *boot) {
  long threads = 0;
  WEFT_CHECK(weft_env_get_long("WEFT_CPU_THREADS", &threads));
  if (threads <= 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    threads = cores / (boot->local_size > 0 ? boot->local_size : 1);
    long bound = affinity_cores();
    if (bound > 0 && bound < threads) {
      if (boot->world_rank == 0)
        WEFT_WARN("boot",
                  "this rank is bound to %ld core(s) but its share of the node is %ld; CPU "
                  "kernels use %ld thread(s). To use the node, launch with mpirun --bind-to "
                  "none (or --map-by slot:PE=%ld), or srun --cpus-per-task=%ld",
                  bound, threads, bound, threads, threads);
      threads = bound;
    }
  }
  weft_kernels_set_cpu_threads(threads < 1 ? 1 : (int)threads);
  WEFT_DEBUG("boot", "CPU kernels use %d thread(s), OpenBLAS core %s", weft_kernels_cpu_threads(),
             weft_kernels_cpu_blas_core());
  if (boot->world_rank == 0 && weft_kernels_cpu_blas_core_is_fallback())
    WEFT_WARN("boot",
              "OpenBLAS did not recognise this CPU and uses its slow '%s' GEMM kernels although "
              "the CPU has AVX2; set OPENBLAS_CORETYPE=Haswell (or SkylakeX with AVX-512) for "
              "2-3x faster CPU kernels",
              weft_kernels_cpu_blas_core());
  return WEFT_OK;
}

void weft_session_start(weft_session_t *session, const char *command, int *argc, char ***argv,
                        const char *device) {
  session->command = command;
  session->world = NULL;
  weft_device_request_t request;
  weft_status_t st = weft_env_register(&weft_runtime_env_table);
  if (st == WEFT_OK) st = weft_device_request_parse(device, &request);
  if (st == WEFT_OK) st = weft_comm_bootstrap(argc, argv, request, &session->boot);
  if (st == WEFT_OK) st = session_set_cpu_threads(&session->boot);
  if (st == WEFT_OK) st = weft_comm_create_world(&session->boot, &session->world);
  if (st != WEFT_OK) session_fail(session, st);
}

int weft_session_end(weft_session_t *session, weft_status_t status) {
  if (status != WEFT_OK) session_fail(session, status);
  weft_comm_destroy(session->world);
  session->world = NULL;
  weft_comm_finalize(&session->boot);
  return WEFT_EXIT_OK;
}
