/* `weft info`: one line per rank (host, local rank, device, memory, transports, mesh
 * coordinates), printed in rank order by rank 0, so a user can check placement and GPU
 * binding before a long job. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "session.h"
#include "weft/check.h"
#include "weft/kernel_ctx.h"
#include "weft/mesh.h"
#include "weft/transports.h"

#define INFO_LINE_BYTES 512 /* one rank's line; gathered as i32 words (comm has no byte dtype) */

static void format_line(const weft_session_t *s, const weft_mesh_t *mesh, char *line) {
  const weft_device_t *dev = s->boot.device;
  char device[48];
  if (dev->kind == WEFT_DEVICE_CUDA)
    snprintf(device, sizeof device, "cuda:%d %s", dev->ordinal, dev->bus_id);
  else
    snprintf(device, sizeof device, "cpu");
  snprintf(line, INFO_LINE_BYTES,
           "%4d  %-16s %2d/%-2d  %-20s %-40.40s %7.1f GiB  %s%s  dp %d sp %d (u %d r %d) ep %d",
           s->boot.world_rank, s->boot.host, s->boot.local_rank, s->boot.local_size, device,
           dev->name, (double)dev->memory_bytes / (1024.0 * 1024 * 1024), "mpi,ucx",
           weft_comm_has_nccl(s->world) ? ",nccl" : "", mesh->dp_index, mesh->sp_index,
           mesh->ulysses_index, mesh->ring_index, mesh->ep_index);
}

static void print_header(const weft_session_t *s, const weft_mesh_t *mesh) {
  weft_transports_t tr;
  weft_transports_query(s->world, &tr);
  char shape[96];
  printf("weft %s: %d rank(s) on %d node(s)\n", WEFT_VERSION, s->boot.world_size,
         s->boot.node_count);
  printf("  MPI   %s (thread level %d, CUDA-aware: %s)\n", tr.mpi, s->boot.mpi_thread_level,
         tr.mpi_cuda_aware ? "yes" : "no");
  printf("  UCX   %s\n  NCCL  %s\n", tr.ucx, tr.nccl);
  printf(
      "  BLAS  OpenBLAS, %s kernels, %d thread(s) per rank%s\n", weft_kernels_cpu_blas_core(),
      weft_kernels_cpu_threads(),
      weft_kernels_cpu_blas_core_is_fallback() ? " (generic fallback: set OPENBLAS_CORETYPE)" : "");
  printf("  mesh  %s\n\n", weft_mesh_describe(&mesh->shape, shape, sizeof shape));
  printf(
      "rank  host             local  device               name                                     "
      " "
      "memory      transports  mesh coordinates\n");
}

static weft_status_t info_run(weft_session_t *s, weft_mesh_shape_t shape) {
  weft_mesh_t *mesh = NULL;
  WEFT_CHECK(weft_mesh_create(s->world, shape, &mesh));
  int size = weft_comm_size(s->world);
  char line[INFO_LINE_BYTES] = {0};
  format_line(s, mesh, line);
  /* Every rank gathers (P * 512 bytes is tiny); only rank 0 prints. */
  char *all = calloc((size_t)size, INFO_LINE_BYTES);
  weft_status_t st = all ? WEFT_OK : WEFT_ERR_NO_MEMORY;
  if (st == WEFT_OK)
    st = weft_comm_allgather(s->world, line, all, INFO_LINE_BYTES / sizeof(int32_t), WEFT_DTYPE_I32,
                             WEFT_MEM_HOST);
  if (st == WEFT_OK && weft_comm_rank(s->world) == 0) {
    print_header(s, mesh);
    for (int r = 0; r < size; r++) printf("%s\n", all + (size_t)r * INFO_LINE_BYTES);
    fflush(stdout);
  }
  free(all);
  weft_mesh_destroy(mesh);
  return st;
}

int weft_cmd_info(int argc, char **argv) {
  const char *device = "auto";
  long dp = 0, sp = 0, ep = 0, ulysses = 0;
  const weft_cli_flag_t flags[] = {
      {"device", 0, WEFT_CLI_STRING, &device, "auto|cpu|cuda", "device each rank opens (auto)"},
      {"dp", 0, WEFT_CLI_INT, &dp, "N", "data-parallel degree (default: world / sp)"},
      {"sp", 0, WEFT_CLI_INT, &sp, "N", "sequence-parallel degree (default 1)"},
      {"ep", 0, WEFT_CLI_INT, &ep, "N", "expert-parallel degree (default 1)"},
      {"ulysses", 0, WEFT_CLI_INT, &ulysses, "N", "Ulysses degree inside sp (default 1)"},
  };
  bool help = false;
  if (weft_cli_parse(weft_cli_find("info"), flags, sizeof flags / sizeof flags[0], argc, argv,
                     &help) != WEFT_OK)
    return WEFT_EXIT_USAGE;
  if (help) return WEFT_EXIT_OK;
  weft_session_t session;
  weft_session_start(&session, "info", &argc, &argv, device);
  weft_mesh_shape_t shape = {(int)dp, (int)sp, (int)ep, (int)ulysses};
  return weft_session_end(&session, info_run(&session, shape));
}
