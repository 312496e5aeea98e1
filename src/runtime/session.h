/* A CLI command's MPI session: bootstrap, world communicator, and the error policy.
 *
 * Policy (design.md section 2): library code returns statuses; here a failed command ends
 * the whole job. Usage errors are found identically on every rank before any communication,
 * so each rank exits 2 after a clean MPI finalize. A runtime failure may leave peers
 * blocked inside a collective, so it ends the job with MPI_Abort and exit code 1: no rank is
 * left hanging. */
#ifndef WEFT_SESSION_H
#define WEFT_SESSION_H

#include "weft/bootstrap.h"
#include "weft/comm.h"
#include "weft/env.h"

/* src/runtime's WEFT_* variables. */
extern const weft_env_table_t weft_runtime_env_table;

typedef struct weft_session {
  weft_bootstrap_t boot;
  weft_comm_t *world;
  const char *command; /* for messages: "info", "bench comm" */
} weft_session_t;

/* Starts MPI, opens the device named by `device` ("auto", "cpu" or "cuda") and sets the CPU
 * kernels' thread budget (WEFT_CPU_THREADS). On failure the job is aborted (this never
 * returns an error to the caller). */
void weft_session_start(weft_session_t *session, const char *command, int *argc, char ***argv,
                        const char *device);
/* Ends the session and returns the exit code: 0 on WEFT_OK; otherwise prints a one-line error
 * on the failing rank and aborts the job with exit code 1. */
int weft_session_end(weft_session_t *session, weft_status_t status);

#endif /* WEFT_SESSION_H */
