/* `weft env`: every registered WEFT_* variable. Needs no MPI, so it runs anywhere. */
#include <stdio.h>

#include "cli.h"
#include "session.h"
#include "weft/bootstrap.h"
#include "weft/env.h"

int weft_cmd_env(int argc, char **argv) {
  const weft_cli_command_t *command = weft_cli_find("env");
  bool help = false;
  if (weft_cli_parse(command, NULL, 0, argc, argv, &help) != WEFT_OK) return WEFT_EXIT_USAGE;
  if (help) return WEFT_EXIT_OK;
  if (weft_env_register(&weft_comm_env_table) != WEFT_OK ||
      weft_env_register(&weft_runtime_env_table) != WEFT_OK)
    return WEFT_EXIT_FAILURE;
  weft_env_print(stdout);
  int unknown = weft_env_warn_unknown();
  if (unknown) printf("\n%d unknown WEFT_* variable(s) set: see the warnings above\n", unknown);
  return WEFT_EXIT_OK;
}
