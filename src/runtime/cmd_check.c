/* `weft check <what>`: dispatch to the correctness drivers (checks.h). Each reads inputs from
 * an HDF5 file, runs one distributed algorithm and writes the results to another, so an
 * outside oracle (tests/ref/, PyTorch) can compare. */
#include <stdio.h>
#include <string.h>

#include "checks.h"
#include "cli.h"

int weft_cmd_check(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    printf(
        "usage: weft check <what> [flags]\n\nchecks:\n"
        "  linear-attention   sequence-parallel gated linear attention (zeco, lasp2, ring),\n"
        "                     forward and backward, from IN.h5 to OUT.h5\n"
        "  attention          sequence-parallel softmax attention (ulysses, ring, tokenring,\n"
        "                     hybrid, auto), forward and backward, from IN.h5 to OUT.h5\n"
        "  moe                expert-parallel mixture of experts (router, dispatch, experts,\n"
        "                     combine), forward and backward, from IN.h5 to OUT.h5\n"
        "  model              the whole model: one step's loss and gradients on a random batch,\n"
        "                     written to OUT.h5 (training flags, see weft check model --help)\n");
    return argc < 2 ? WEFT_EXIT_USAGE : WEFT_EXIT_OK;
  }
  if (strcmp(argv[1], "linear-attention") == 0) return weft_check_linear(argc - 1, argv + 1);
  if (strcmp(argv[1], "attention") == 0) return weft_check_attention(argc - 1, argv + 1);
  if (strcmp(argv[1], "moe") == 0) return weft_check_moe(argc - 1, argv + 1);
  if (strcmp(argv[1], "model") == 0) return weft_check_model(argc - 1, argv + 1);
  fprintf(stderr, "weft check: unknown check '%s' (see weft check --help)\n", argv[1]);
  return WEFT_EXIT_USAGE;
}
