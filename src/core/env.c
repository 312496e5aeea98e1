/* WEFT_* environment registry. Tables are few (one per module) and lookups rare (start-up,
 * plan creation), so a linear search over a fixed array is the simple right choice. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "weft/env.h"
#include "weft/log.h"

#define WEFT_ENV_MAX_TABLES 32

extern char **environ;

static const weft_env_table_t *g_tables[WEFT_ENV_MAX_TABLES];
static int g_table_count;

/* core's own table lives in core_env.c; registered on first use so a program that only
 * links core still sees it. */
extern const weft_env_table_t weft_core_env_table;

static void env_register_core(void) {
  if (g_table_count == 0) g_tables[g_table_count++] = &weft_core_env_table;
}

weft_status_t weft_env_register(const weft_env_table_t *table) {
  env_register_core();
  for (int i = 0; i < g_table_count; i++)
    if (g_tables[i] == table) return WEFT_OK;
  if (g_table_count == WEFT_ENV_MAX_TABLES) {
    WEFT_ERROR("env", "too many environment tables (max %d) registering module '%s'",
               WEFT_ENV_MAX_TABLES, table->module);
    return WEFT_ERR_INTERNAL;
  }
  g_tables[g_table_count++] = table;
  return WEFT_OK;
}

static const weft_env_var_t *env_find(const char *name) {
  env_register_core();
  for (int t = 0; t < g_table_count; t++)
    for (size_t i = 0; i < g_tables[t]->count; i++)
      if (strcmp(g_tables[t]->vars[i].name, name) == 0) return &g_tables[t]->vars[i];
  return NULL;
}

weft_status_t weft_env_get_str(const char *name, const char **value_p) {
  const weft_env_var_t *var = env_find(name);
  if (!var) {
    WEFT_ERROR("env", "%s is read but declared in no environment table (a weft bug)", name);
    return WEFT_ERR_INTERNAL;
  }
  const char *value = getenv(name);
  *value_p = (value && *value) ? value : var->default_value;
  return WEFT_OK;
}

weft_status_t weft_env_get_long(const char *name, long *value_p) {
  const char *text;
  weft_status_t st = weft_env_get_str(name, &text);
  if (st != WEFT_OK) return st;
  char *end = NULL;
  errno = 0;
  long value = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') {
    WEFT_ERROR("env", "%s='%s' is not an integer", name, text);
    return WEFT_ERR_INVALID_ARG;
  }
  *value_p = value;
  return WEFT_OK;
}

weft_status_t weft_env_get_double(const char *name, double *value_p) {
  const char *text;
  weft_status_t st = weft_env_get_str(name, &text);
  if (st != WEFT_OK) return st;
  char *end = NULL;
  errno = 0;
  double value = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0') {
    WEFT_ERROR("env", "%s='%s' is not a number", name, text);
    return WEFT_ERR_INVALID_ARG;
  }
  *value_p = value;
  return WEFT_OK;
}

int weft_env_warn_unknown(void) {
  int unknown = 0;
  for (char **entry = environ; entry && *entry; entry++) {
    if (strncmp(*entry, "WEFT_", 5) != 0) continue;
    char name[128];
    size_t len = strcspn(*entry, "=");
    if (len >= sizeof name) len = sizeof name - 1;
    memcpy(name, *entry, len);
    name[len] = '\0';
    if (!env_find(name)) {
      WEFT_WARN("env",
                "unknown environment variable %s is ignored (run `weft env` for the "
                "list)",
                name);
      unknown++;
    }
  }
  return unknown;
}

void weft_env_print(FILE *out) {
  env_register_core();
  for (int t = 0; t < g_table_count; t++) {
    fprintf(out, "# %s\n", g_tables[t]->module);
    for (size_t i = 0; i < g_tables[t]->count; i++) {
      const weft_env_var_t *var = &g_tables[t]->vars[i];
      const char *set = getenv(var->name);
      fprintf(out, "%-26s = %-10s (default %s)\n    %s\n", var->name,
              (set && *set) ? set : var->default_value, var->default_value, var->help);
    }
  }
}
