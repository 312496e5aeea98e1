/* Environment variables read by src/core. */
#include "weft/env.h"

static const weft_env_var_t k_core_vars[] = {
    {"WEFT_LOG_LEVEL", "warn", "Log threshold: error, warn, info, debug or trace."},
    {"WEFT_LOG_SUBSYS", "all",
     "Subsystems to log, comma separated (e.g. comm,ckpt); a leading ^ excludes them. Errors "
     "are always logged."},
};

const weft_env_table_t weft_core_env_table = {"core", k_core_vars,
                                              sizeof k_core_vars / sizeof k_core_vars[0]};
