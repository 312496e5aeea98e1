/* `weft bench <what>`: dispatch to the benchmark drivers. */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "cli.h"

int weft_cmd_bench(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    printf(
        "usage: weft bench <benchmark> [flags]\n\nbenchmarks:\n"
        "  comm       allreduce, allgather, alltoall and sendrecv over a sweep of sizes\n"
        "  linear     linear-attention state hand-off (All-Scan, all-gather, ring) and layer time\n"
        "  attention  sequence-parallel softmax attention: time, bytes and cost model\n"
        "  moe        expert-parallel MoE: layer, dispatch+combine bandwidth, experts vs GEMM\n"
        "  train      training tokens/s and the compute/communication split of a step\n"
        "  ckpt       checkpoint save/load GB/s next to raw sequential write/read\n");
    return argc < 2 ? WEFT_EXIT_USAGE : WEFT_EXIT_OK;
  }
  if (strcmp(argv[1], "comm") == 0) return weft_bench_comm(argc - 1, argv + 1);
  if (strcmp(argv[1], "linear") == 0) return weft_bench_linear(argc - 1, argv + 1);
  if (strcmp(argv[1], "attention") == 0) return weft_bench_attention(argc - 1, argv + 1);
  if (strcmp(argv[1], "moe") == 0) return weft_bench_moe(argc - 1, argv + 1);
  if (strcmp(argv[1], "train") == 0) return weft_bench_train(argc - 1, argv + 1);
  if (strcmp(argv[1], "ckpt") == 0) return weft_bench_ckpt(argc - 1, argv + 1);
  fprintf(stderr, "weft bench: unknown benchmark '%s' (see weft bench --help)\n", argv[1]);
  return WEFT_EXIT_USAGE;
}
