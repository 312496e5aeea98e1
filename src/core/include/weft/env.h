/* Registry of WEFT_* environment variables.
 *
 * Each module declares its variables in one table (name, default, help) and registers it;
 * lookups go through the registry, so every variable weft reads is documented, `weft env`
 * can print them all, and a misspelt WEFT_* name in the environment gets a warning instead
 * of being silently ignored. Reading an unregistered name is a bug and is reported as
 * WEFT_ERR_INTERNAL. */
#ifndef WEFT_ENV_H
#define WEFT_ENV_H

#include <stddef.h>
#include <stdio.h>

#include "weft/status.h"

typedef struct weft_env_var {
  const char *name;          /* e.g. "WEFT_COMM_TIMEOUT_S" */
  const char *default_value; /* used when the variable is unset or empty */
  const char *help;          /* one sentence, with the unit */
} weft_env_var_t;

typedef struct weft_env_table {
  const char *module; /* "core", "comm", ... */
  const weft_env_var_t *vars;
  size_t count;
} weft_env_table_t;

/* Adds a table; registering the same table twice is a no-op. Not thread-safe: register
 * during start-up. */
weft_status_t weft_env_register(const weft_env_table_t *table);

/* Value of a registered variable (its default when unset). [out] value_p: never NULL. */
weft_status_t weft_env_get_str(const char *name, const char **value_p);
/* Parses as an integer / a floating-point number; a malformed value is WEFT_ERR_INVALID_ARG
 * naming the variable and the value. */
weft_status_t weft_env_get_long(const char *name, long *value_p);
weft_status_t weft_env_get_double(const char *name, double *value_p);

/* Logs a warning for every WEFT_* variable in the environment that no table declares.
 * Returns how many were found. */
int weft_env_warn_unknown(void);

/* Prints every registered variable: name, current value, default and help. */
void weft_env_print(FILE *out);

#endif /* WEFT_ENV_H */
