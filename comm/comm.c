/* weft_comm lifecycle, accessors, byte counters and the deadline-bounded wait.
 *
 * The wait polls MPI_Testall instead of calling MPI_Waitall because MPI has no timed wait:
 * polling is the only way to turn "a peer never sent" into an error rather than a hang.
 * After a short spin it yields the core on every poll, since oversubscribed runs (several
 * ranks per core) would otherwise starve the very peer they are waiting for. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"
#include "weft/check.h"
#include "weft/comm_mpi.h"
#include "weft/timer.h"

_Static_assert(sizeof(MPI_Request) <= sizeof(uint64_t), "MPI_Request must fit weft_comm_req_t");

#define WEFT_COMM_SPIN_POLLS 1000 /* polls before yielding: ~microseconds of latency budget */

const char *weft_mpi_error_string(int code) {
  static char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error");
  return msg;
}

const char *weft_comm_op_name(weft_comm_op_t op) {
  static const char *const names[WEFT_COMM_OP_COUNT] = {
      "barrier",  "bcast",     "allreduce", "allgather", "allgatherv",
      "alltoall", "alltoallv", "sendrecv",  "send",      "recv"};
  return (int)op >= 0 && op < WEFT_COMM_OP_COUNT ? names[op] : "unknown";
}

MPI_Datatype weft_comm_mpi_type(weft_dtype_t dtype) {
  switch (dtype) {
  case WEFT_DTYPE_F32: return MPI_FLOAT;
  case WEFT_DTYPE_BF16: return MPI_UINT16_T;
  case WEFT_DTYPE_F16: return MPI_UINT16_T;
  case WEFT_DTYPE_I32: return MPI_INT32_T;
  case WEFT_DTYPE_I64: return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Comm weft_comm_mpi(const weft_comm_t *comm) { return comm->mpi; }

/* Builds the weft_comm around an already-duplicated MPI communicator. */
static weft_status_t comm_wrap(MPI_Comm mpi, const char *name, const weft_device_t *device,
                               bool gpu_shared, weft_comm_t **comm_p) {
  weft_comm_t *comm = calloc(1, sizeof *comm);
  if (!comm) return WEFT_ERR_NO_MEMORY;
  comm->mpi = mpi;
  snprintf(comm->name, sizeof comm->name, "%s", name ? name : "comm");
  MPI_Comm_set_errhandler(mpi, MPI_ERRORS_RETURN);
  MPI_Comm_rank(mpi, &comm->rank);
  MPI_Comm_size(mpi, &comm->size);
  comm->device = device;
  comm->gpu_shared = gpu_shared;
  double timeout = 600.0;
  weft_status_t st = weft_env_get_double("WEFT_COMM_TIMEOUT_S", &timeout);
  comm->timeout_s = timeout > 0 ? timeout : 600.0;
  size_t p = (size_t)comm->size;
  comm->world_ranks = calloc(p, sizeof(int));
  comm->last = calloc(p, sizeof *comm->last);
  comm->total = calloc(p, sizeof *comm->total);
  comm->counts_a = calloc(4 * p, sizeof(int));
  if (st == WEFT_OK && (!comm->world_ranks || !comm->last || !comm->total || !comm->counts_a))
    st = WEFT_ERR_NO_MEMORY;
  if (st == WEFT_OK) {
    comm->counts_b = comm->counts_a + p;
    comm->displs_a = comm->counts_a + 2 * p;
    comm->displs_b = comm->counts_a + 3 * p;
    int world_rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    int rc = MPI_Allgather(&world_rank, 1, MPI_INT, comm->world_ranks, 1, MPI_INT, mpi);
    if (rc != MPI_SUCCESS)
      st = weft_check_fail(WEFT_ERR_COMM, "MPI", rc, weft_mpi_error_string(rc), "MPI_Allgather",
                           __FILE__, __LINE__);
  }
  if (st != WEFT_OK) {
    comm->nccl = NULL;
    weft_comm_destroy(comm);
    return st;
  }
  *comm_p = comm;
  return WEFT_OK;
}

static bool comm_wants_nccl(const weft_device_t *device, bool gpu_shared) {
  if (device->kind != WEFT_DEVICE_CUDA || gpu_shared) return false;
  long enabled = 1;
  return weft_env_get_long("WEFT_COMM_NCCL", &enabled) == WEFT_OK && enabled != 0;
}

weft_status_t weft_comm_create_world(const weft_bootstrap_t *boot, weft_comm_t **comm_p) {
  MPI_Comm dup;
  WEFT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  weft_comm_t *comm;
  WEFT_CHECK(comm_wrap(dup, "world", boot->device, boot->gpu_shared, &comm));
#if WEFT_HAVE_CUDA
  /* Each rank decides from its own device, its node's GPU sharing and its WEFT_COMM_NCCL, but
   * the path must be agreed: NCCL initialisation is collective, and a rank on NCCL facing one
   * that stages over MPI would hang in the first device-buffer operation. NCCL is used only
   * when every rank can use it. */
  int wants = comm_wants_nccl(boot->device, boot->gpu_shared), all_want = 0;
  int rc = MPI_Allreduce(&wants, &all_want, 1, MPI_INT, MPI_LAND, comm->mpi);
  if (rc != MPI_SUCCESS) {
    weft_comm_destroy(comm);
    return weft_check_fail(WEFT_ERR_COMM, "MPI", rc, weft_mpi_error_string(rc), "MPI_Allreduce",
                           __FILE__, __LINE__);
  }
  if (wants && !all_want)
    WEFT_WARN("comm",
              "NCCL not used on 'world': another rank cannot use it (CPU device, "
              "shared GPU or WEFT_COMM_NCCL=0); device buffers are staged over MPI");
  if (all_want) {
    weft_status_t st = weft_comm_nccl_init(comm);
    if (st != WEFT_OK) {
      weft_comm_destroy(comm);
      return st;
    }
  }
#else
  (void)comm_wants_nccl;
#endif
  *comm_p = comm;
  return WEFT_OK;
}

weft_status_t weft_comm_split(weft_comm_t *parent, int color, int key, const char *name,
                              weft_comm_t **child_p) {
  if (parent->broken) {
    WEFT_ERROR("comm", "cannot split communicator '%s': broken by an earlier timeout",
               parent->name);
    return WEFT_ERR_COMM;
  }
  if (color < 0) {
    WEFT_ERROR("comm", "split of '%s' into '%s': color %d must be >= 0", parent->name,
               name ? name : "", color);
    return WEFT_ERR_INVALID_ARG;
  }
  MPI_Comm mpi;
  WEFT_MPI_CHECK(MPI_Comm_split(parent->mpi, color, key, &mpi));
  weft_comm_t *child;
  WEFT_CHECK(comm_wrap(mpi, name, parent->device, parent->gpu_shared, &child));
  child->timeout_s = parent->timeout_s;
#if WEFT_HAVE_CUDA
  if (parent->nccl) {
    weft_status_t st = weft_comm_nccl_split(parent, color, key, child);
    if (st != WEFT_OK) {
      weft_comm_destroy(child);
      return st;
    }
  }
#endif
  *child_p = child;
  return WEFT_OK;
}

void weft_comm_destroy(weft_comm_t *comm) {
  if (!comm) return;
#if WEFT_HAVE_CUDA
  weft_comm_nccl_destroy(comm);
#endif
  /* A broken communicator has a collective pending inside MPI that may still use the staging
   * buffers (when the other ranks join late); they are left allocated rather than freed under
   * it. The job is expected to abort. */
  if (comm->device && !comm->broken) {
    weft_host_free_pinned(comm->device, comm->stage_send);
    weft_host_free_pinned(comm->device, comm->stage_recv);
  }
  if (comm->mpi != MPI_COMM_NULL && weft_comm_mpi_active()) MPI_Comm_free(&comm->mpi);
  free(comm->world_ranks);
  free(comm->last);
  free(comm->total);
  free(comm->counts_a);
  free(comm);
}

int weft_comm_rank(const weft_comm_t *comm) { return comm->rank; }
int weft_comm_size(const weft_comm_t *comm) { return comm->size; }
const char *weft_comm_name(const weft_comm_t *comm) { return comm->name; }
const weft_device_t *weft_comm_device(const weft_comm_t *comm) { return comm->device; }
bool weft_comm_has_nccl(const weft_comm_t *comm) { return comm->nccl != NULL; }
int weft_comm_world_rank_of(const weft_comm_t *comm, int rank) {
  return rank >= 0 && rank < comm->size ? comm->world_ranks[rank] : -1;
}
void weft_comm_set_timeout(weft_comm_t *comm, double seconds) {
  if (seconds > 0) comm->timeout_s = seconds;
}
double weft_comm_timeout(const weft_comm_t *comm) { return comm->timeout_s; }

const weft_comm_peer_bytes_t *weft_comm_last_bytes(const weft_comm_t *comm) { return comm->last; }
const weft_comm_peer_bytes_t *weft_comm_total_bytes(const weft_comm_t *comm) { return comm->total; }
weft_comm_op_stats_t weft_comm_op_stats(const weft_comm_t *comm, weft_comm_op_t op) {
  weft_comm_op_stats_t none = {0};
  return (int)op >= 0 && op < WEFT_COMM_OP_COUNT ? comm->ops[op] : none;
}
void weft_comm_stats_reset(weft_comm_t *comm) {
  memset(comm->total, 0, (size_t)comm->size * sizeof *comm->total);
  memset(comm->last, 0, (size_t)comm->size * sizeof *comm->last);
  memset(comm->ops, 0, sizeof comm->ops);
}

weft_status_t weft_comm_op_begin(weft_comm_t *comm, weft_comm_op_t op, double *t0_p) {
  if (comm->broken) {
    WEFT_ERROR("comm", "%s on '%s' refused: the communicator was broken by an earlier timeout",
               weft_comm_op_name(op), comm->name);
    return WEFT_ERR_COMM;
  }
  comm->call_count++;
  memset(comm->last, 0, (size_t)comm->size * sizeof *comm->last);
  *t0_p = weft_time_now();
  return WEFT_OK;
}

void weft_comm_op_end(weft_comm_t *comm, weft_comm_op_t op, double t0) {
  weft_comm_op_stats_t *stats = &comm->ops[op];
  stats->calls++;
  stats->seconds += weft_time_now() - t0;
  for (int p = 0; p < comm->size; p++) {
    comm->total[p].sent += comm->last[p].sent;
    comm->total[p].recv += comm->last[p].recv;
    stats->bytes_sent += comm->last[p].sent;
    stats->bytes_recv += comm->last[p].recv;
  }
}

void weft_comm_count(weft_comm_t *comm, int peer, uint64_t sent, uint64_t recv) {
  if (peer == comm->rank || peer < 0 || peer >= comm->size) return; /* self: no link crossed */
  comm->last[peer].sent += sent;
  comm->last[peer].recv += recv;
}

weft_status_t weft_comm_check_count(const weft_comm_t *comm, weft_comm_op_t op, size_t count) {
  if (count > (size_t)INT32_MAX) {
    WEFT_ERROR("comm",
               "%s on '%s': %zu elements exceed MPI's int count limit (%d); split the "
               "message",
               weft_comm_op_name(op), comm->name, count, INT32_MAX);
    return WEFT_ERR_UNSUPPORTED;
  }
  return WEFT_OK;
}

/* Set by weft_comm_set_thread_backoff; read by every wait of the thread. */
static _Thread_local bool t_backoff;
#define WEFT_COMM_BACKOFF_NS 20000

void weft_comm_set_thread_backoff(bool on) { t_backoff = on; }

bool weft_comm_progress_thread_ok(void) {
  int initialized = 0, level = MPI_THREAD_SINGLE;
  if (MPI_Initialized(&initialized) != MPI_SUCCESS || !initialized) return false;
  if (MPI_Query_thread(&level) != MPI_SUCCESS) return false;
  return level >= MPI_THREAD_SERIALIZED;
}

weft_status_t weft_comm_wait_mpi(weft_comm_t *comm, MPI_Request *reqs, int count, weft_comm_op_t op,
                                 int peer, bool cancellable) {
  double deadline = weft_time_now() + comm->timeout_s;
  for (long polls = 0;; polls++) {
    int done = 0;
    int rc = MPI_Testall(count, reqs, &done, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) {
      WEFT_ERROR("comm", "%s on '%s' (rank %d of %d, peer %d) failed: %s", weft_comm_op_name(op),
                 comm->name, comm->rank, comm->size, peer, weft_mpi_error_string(rc));
      return WEFT_ERR_COMM;
    }
    if (done) return WEFT_OK;
    if (polls > WEFT_COMM_SPIN_POLLS) {
      if (t_backoff) {
        struct timespec pause = {0, WEFT_COMM_BACKOFF_NS};
        nanosleep(&pause, NULL);
      } else {
        sched_yield();
      }
    }
    if ((polls & 63) == 0 && weft_time_now() > deadline) break;
  }
  if (peer >= 0)
    WEFT_ERROR("comm",
               "%s on '%s' timed out after %.1f s: rank %d waited for peer %d (world "
               "rank %d) which never completed its side (call #%llu; set "
               "WEFT_COMM_TIMEOUT_S to change the deadline)",
               weft_comm_op_name(op), comm->name, comm->timeout_s, comm->rank, peer,
               comm->world_ranks[peer], (unsigned long long)comm->call_count);
  else
    WEFT_ERROR("comm",
               "%s on '%s' timed out after %.1f s on rank %d of %d: some rank never "
               "joined (call #%llu; set WEFT_COMM_TIMEOUT_S to change the deadline)",
               weft_comm_op_name(op), comm->name, comm->timeout_s, comm->rank, comm->size,
               (unsigned long long)comm->call_count);
  for (int i = 0; i < count; i++) {
    if (reqs[i] == MPI_REQUEST_NULL) continue;
    if (cancellable) {
      MPI_Cancel(&reqs[i]);
      MPI_Wait(&reqs[i], MPI_STATUS_IGNORE); /* a cancelled receive completes at once */
    } else {
      comm->broken = true; /* the request stays pending inside MPI: no further use is safe */
    }
  }
  return WEFT_ERR_TIMEOUT;
}

bool weft_comm_on_gpu(const weft_comm_t *comm, weft_mem_t mem) {
  return mem == WEFT_MEM_DEVICE && comm->device && comm->device->kind == WEFT_DEVICE_CUDA;
}

static weft_status_t stage_grow(weft_comm_t *comm, void **buf, size_t *have, size_t need) {
  if (need <= *have) return WEFT_OK;
  weft_host_free_pinned(comm->device, *buf);
  *buf = NULL;
  *have = 0;
  WEFT_CHECK(weft_host_alloc_pinned(comm->device, need, buf));
  *have = need;
  return WEFT_OK;
}

weft_status_t weft_comm_stage_reserve(weft_comm_t *comm, size_t send_bytes, size_t recv_bytes) {
  WEFT_CHECK(stage_grow(comm, &comm->stage_send, &comm->stage_send_bytes, send_bytes));
  WEFT_CHECK(stage_grow(comm, &comm->stage_recv, &comm->stage_recv_bytes, recv_bytes));
  return WEFT_OK;
}
