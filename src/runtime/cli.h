/* The `weft` command-line interface: subcommand table and a table-driven flag parser.
 *
 * Every subcommand declares its flags in one table (long name, optional short name, type,
 * destination, help), so `--help` is generated from the same table that parses, and every
 * command rejects unknown flags and malformed values the same way. Exit codes: 0 success,
 * 1 runtime failure, 2 usage error. */
#ifndef WEFT_CLI_H
#define WEFT_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "weft/status.h"

#define WEFT_EXIT_OK      0
#define WEFT_EXIT_FAILURE 1
#define WEFT_EXIT_USAGE   2

typedef enum weft_cli_flag_type {
  WEFT_CLI_BOOL = 0, /* present = true; takes no value */
  WEFT_CLI_INT,      /* long */
  WEFT_CLI_DOUBLE,
  WEFT_CLI_SIZE, /* bytes with an optional K/M/G suffix (powers of 1024) */
  WEFT_CLI_STRING,
} weft_cli_flag_type_t;

typedef struct weft_cli_flag {
  const char *name; /* long name without dashes */
  char short_name;  /* 0 = none */
  weft_cli_flag_type_t type;
  void *dest; /* bool*, long*, double*, size_t*, const char** */
  const char *metavar;
  const char *help;
} weft_cli_flag_t;

typedef struct weft_cli_command {
  const char *name;
  const char *summary;
  const char *usage; /* text after "weft <name> " */
  /* Runs the command; argv[0] is the command name. Returns a process exit code. */
  int (*run)(int argc, char **argv);
} weft_cli_command_t;

/* Parses argv[1..] against `flags`. Prints help and sets *help_p on -h/--help. On a bad flag
 * prints "weft <command>: <problem>" to stderr and returns WEFT_ERR_INVALID_ARG. Positional
 * arguments are refused (no command takes any yet). */
weft_status_t weft_cli_parse(const weft_cli_command_t *command, const weft_cli_flag_t *flags,
                             size_t flag_count, int argc, char **argv, bool *help_p);
/* Sets the flag with long name `name` from `value` as if given on the command line (booleans
 * take "true" or "false"; a string value is kept by pointer). Prints the problem and returns
 * WEFT_ERR_INVALID_ARG for an unknown name or a malformed value. For configuration files. */
weft_status_t weft_cli_set_flag(const weft_cli_command_t *command, const weft_cli_flag_t *flags,
                                size_t flag_count, const char *name, const char *value);
void weft_cli_print_help(const weft_cli_command_t *command, const weft_cli_flag_t *flags,
                         size_t flag_count);

/* Parses "64", "4K", "16M", "1G" (powers of 1024). */
weft_status_t weft_cli_parse_size(const char *text, size_t *bytes_p);

/* Subcommands (one file each). */
int weft_cmd_info(int argc, char **argv);
int weft_cmd_env(int argc, char **argv);
int weft_cmd_bench(int argc, char **argv);
int weft_cmd_check(int argc, char **argv);
int weft_cmd_train(int argc, char **argv);
int weft_cmd_eval(int argc, char **argv);
int weft_cmd_generate(int argc, char **argv);
int weft_cmd_finetune(int argc, char **argv);
int weft_cmd_ckpt(int argc, char **argv);

const weft_cli_command_t *weft_cli_find(const char *name);

#endif /* WEFT_CLI_H */
