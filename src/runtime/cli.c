/* Flag parsing and help for every subcommand (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const weft_cli_flag_t *find_flag(const weft_cli_flag_t *flags, size_t count,
                                        const char *arg) {
  for (size_t i = 0; i < count; i++) {
    if (arg[1] == '-' && strcmp(arg + 2, flags[i].name) == 0) return &flags[i];
    if (arg[1] != '-' && flags[i].short_name && arg[1] == flags[i].short_name && arg[2] == '\0')
      return &flags[i];
  }
  return NULL;
}

weft_status_t weft_cli_parse_size(const char *text, size_t *bytes_p) {
  char *end = NULL;
  errno = 0;
  double value = strtod(text, &end);
  if (errno != 0 || end == text || value < 0) return WEFT_ERR_INVALID_ARG;
  double scale = 1;
  switch (*end) {
  case '\0': break;
  case 'k':
  case 'K':
    scale = 1024.0;
    end++;
    break;
  case 'm':
  case 'M':
    scale = 1024.0 * 1024;
    end++;
    break;
  case 'g':
  case 'G':
    scale = 1024.0 * 1024 * 1024;
    end++;
    break;
  default: return WEFT_ERR_INVALID_ARG;
  }
  if (*end == 'B' || *end == 'b') end++;
  if (*end != '\0') return WEFT_ERR_INVALID_ARG;
  *bytes_p = (size_t)(value * scale);
  return WEFT_OK;
}

static weft_status_t set_value(const weft_cli_command_t *command, const weft_cli_flag_t *flag,
                               const char *value) {
  char *end = NULL;
  errno = 0;
  switch (flag->type) {
  case WEFT_CLI_BOOL: *(bool *)flag->dest = true; return WEFT_OK;
  case WEFT_CLI_STRING: *(const char **)flag->dest = value; return WEFT_OK;
  case WEFT_CLI_INT: {
    long v = strtol(value, &end, 10);
    if (errno == 0 && end != value && *end == '\0') {
      *(long *)flag->dest = v;
      return WEFT_OK;
    }
    break;
  }
  case WEFT_CLI_DOUBLE: {
    double v = strtod(value, &end);
    if (errno == 0 && end != value && *end == '\0') {
      *(double *)flag->dest = v;
      return WEFT_OK;
    }
    break;
  }
  case WEFT_CLI_SIZE:
    if (weft_cli_parse_size(value, (size_t *)flag->dest) == WEFT_OK) return WEFT_OK;
    break;
  }
  static const char *const expected[] = {"", "an integer", "a number", "a size such as 64K", ""};
  fprintf(stderr, "weft %s: --%s expects %s, got '%s'\n", command->name, flag->name,
          expected[flag->type], value);
  return WEFT_ERR_INVALID_ARG;
}

weft_status_t weft_cli_parse(const weft_cli_command_t *command, const weft_cli_flag_t *flags,
                             size_t flag_count, int argc, char **argv, bool *help_p) {
  *help_p = false;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      weft_cli_print_help(command, flags, flag_count);
      *help_p = true;
      return WEFT_OK;
    }
    if (arg[0] != '-' || arg[1] == '\0') {
      fprintf(stderr, "weft %s: unexpected argument '%s' (see weft %s --help)\n", command->name,
              arg, command->name);
      return WEFT_ERR_INVALID_ARG;
    }
    /* --name=value is accepted as well as --name value. */
    char name[64];
    const char *inline_value = NULL;
    const char *eq = strchr(arg, '=');
    if (eq && arg[1] == '-' && (size_t)(eq - arg) < sizeof name) {
      snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
      inline_value = eq + 1;
      arg = name;
    }
    const weft_cli_flag_t *flag = find_flag(flags, flag_count, arg);
    if (!flag) {
      fprintf(stderr, "weft %s: unknown flag '%s' (see weft %s --help)\n", command->name, argv[i],
              command->name);
      return WEFT_ERR_INVALID_ARG;
    }
    const char *value = inline_value;
    if (flag->type != WEFT_CLI_BOOL && !value) {
      if (i + 1 >= argc) {
        fprintf(stderr, "weft %s: --%s needs a value\n", command->name, flag->name);
        return WEFT_ERR_INVALID_ARG;
      }
      value = argv[++i];
    }
    if (set_value(command, flag, value) != WEFT_OK) return WEFT_ERR_INVALID_ARG;
  }
  return WEFT_OK;
}

weft_status_t weft_cli_set_flag(const weft_cli_command_t *command, const weft_cli_flag_t *flags,
                                size_t flag_count, const char *name, const char *value) {
  for (size_t i = 0; i < flag_count; i++) {
    if (strcmp(flags[i].name, name) != 0) continue;
    if (flags[i].type == WEFT_CLI_BOOL) {
      if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0) {
        fprintf(stderr, "weft %s: %s expects true or false, got '%s'\n", command->name, name,
                value);
        return WEFT_ERR_INVALID_ARG;
      }
      *(bool *)flags[i].dest = strcmp(value, "true") == 0;
      return WEFT_OK;
    }
    return set_value(command, &flags[i], value);
  }
  fprintf(stderr, "weft %s: unknown setting '%s'\n", command->name, name);
  return WEFT_ERR_INVALID_ARG;
}

void weft_cli_print_help(const weft_cli_command_t *command, const weft_cli_flag_t *flags,
                         size_t flag_count) {
  printf("usage: weft %s %s\n\n%s\n\n", command->name, command->usage, command->summary);
  if (flag_count) printf("flags:\n");
  for (size_t i = 0; i < flag_count; i++) {
    char left[64];
    if (flags[i].short_name)
      snprintf(left, sizeof left, "-%c, --%s%s%s", flags[i].short_name, flags[i].name,
               flags[i].metavar ? " " : "", flags[i].metavar ? flags[i].metavar : "");
    else
      snprintf(left, sizeof left, "    --%s%s%s", flags[i].name, flags[i].metavar ? " " : "",
               flags[i].metavar ? flags[i].metavar : "");
    printf("  %-28s %s\n", left, flags[i].help);
  }
  printf("  %-28s %s\n", "-h, --help", "show this help");
}
