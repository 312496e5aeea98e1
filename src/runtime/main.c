/* weft: entry point and subcommand dispatch. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const weft_cli_command_t k_commands[] = {
    {"train", "Train the model (docs/model.md) with data, sequence and expert parallelism.",
     "[flags] (see docs/training.md)", weft_cmd_train},
    {"finetune", "Fine-tune a checkpoint on new data (--from CKPT, --freeze GROUPS).",
     "--from CKPT --data PATH [flags]", weft_cmd_finetune},
    {"eval", "Validation loss of a checkpoint (--from) or parameters (--params).", "[flags]",
     weft_cmd_eval},
    {"generate", "Generate text from a checkpoint (KV cache; greedy or top-k sampling).",
     "--ckpt FILE.h5 --prompt TEXT [flags] (see docs/generation.md)", weft_cmd_generate},
    {"ckpt", "Inspect, verify or export a checkpoint: `weft ckpt info|verify|export PATH`.",
     "info|verify|export PATH [--output OUT.h5]", weft_cmd_ckpt},
    {"info", "Print each rank's host, local rank, device, transports and mesh.",
     "[--device auto|cpu|cuda] [--dp N --sp N --ep N --ulysses N]", weft_cmd_info},
    {"env", "List every WEFT_* environment variable with its value, default and help.", "",
     weft_cmd_env},
    {"bench", "Run a benchmark: `weft bench comm|linear|attention|moe`.",
     "comm|linear|attention|moe [flags]", weft_cmd_bench},
    {"check", "Check an algorithm against file inputs: `weft check attention|moe|model|...`.",
     "linear-attention|attention|moe|model [flags]", weft_cmd_check},
};
#define COMMAND_COUNT (sizeof k_commands / sizeof k_commands[0])

const weft_cli_command_t *weft_cli_find(const char *name) {
  for (size_t i = 0; i < COMMAND_COUNT; i++)
    if (strcmp(k_commands[i].name, name) == 0) return &k_commands[i];
  return NULL;
}

static void print_usage(FILE *out) {
  fprintf(out,
          "weft %s: distributed long-context transformer runtime\n\n"
          "usage: weft <command> [flags]   (under mpirun or srun for several ranks)\n\n"
          "commands:\n",
          WEFT_VERSION);
  for (size_t i = 0; i < COMMAND_COUNT; i++)
    fprintf(out, "  %-8s %s\n", k_commands[i].name, k_commands[i].summary);
  fprintf(out, "\n`weft <command> --help` shows the flags of a command.\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? WEFT_EXIT_USAGE : WEFT_EXIT_OK;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("weft %s\n", WEFT_VERSION);
    return WEFT_EXIT_OK;
  }
  const weft_cli_command_t *command = weft_cli_find(argv[1]);
  if (!command) {
    fprintf(stderr, "weft: unknown command '%s' (see weft --help)\n", argv[1]);
    return WEFT_EXIT_USAGE;
  }
  return command->run(argc - 1, argv + 1);
}
