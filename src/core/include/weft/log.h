/* Logging: every line starts `host:pid:rank[dev] LEVEL subsys:` like NCCL's, so lines from
 * many ranks can be merged and grepped.
 *
 * WEFT_LOG_LEVEL (error|warn|info|debug|trace, default warn) sets the threshold;
 * WEFT_LOG_SUBSYS (comma list such as "comm,ckpt", or "^comm" to exclude, default all)
 * filters by subsystem. Errors are never filtered by subsystem. Logging is thread-safe: each
 * line is formatted into one buffer and written with one call. */
#ifndef WEFT_LOG_H
#define WEFT_LOG_H

#include <stdbool.h>

typedef enum weft_log_level {
  WEFT_LOG_LEVEL_ERROR = 0,
  WEFT_LOG_LEVEL_WARN = 1,
  WEFT_LOG_LEVEL_INFO = 2,
  WEFT_LOG_LEVEL_DEBUG = 3,
  WEFT_LOG_LEVEL_TRACE = 4,
} weft_log_level_t;

/* Reads WEFT_LOG_LEVEL and WEFT_LOG_SUBSYS. Called lazily by the first log line; call it
 * again after changing those variables (tests do). */
void weft_log_configure(void);
/* Sets the rank and device shown in the prefix (-1 / NULL before bootstrap). */
void weft_log_set_identity(int rank, const char *device);
bool weft_log_enabled(weft_log_level_t level, const char *subsys);
void weft_log(weft_log_level_t level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define WEFT_LOG_(lvl, subsys, ...)                                                \
  do {                                                                             \
    if (weft_log_enabled((lvl), (subsys))) weft_log((lvl), (subsys), __VA_ARGS__); \
  } while (0)
#define WEFT_ERROR(subsys, ...) WEFT_LOG_(WEFT_LOG_LEVEL_ERROR, subsys, __VA_ARGS__)
#define WEFT_WARN(subsys, ...)  WEFT_LOG_(WEFT_LOG_LEVEL_WARN, subsys, __VA_ARGS__)
#define WEFT_INFO(subsys, ...)  WEFT_LOG_(WEFT_LOG_LEVEL_INFO, subsys, __VA_ARGS__)
#define WEFT_DEBUG(subsys, ...) WEFT_LOG_(WEFT_LOG_LEVEL_DEBUG, subsys, __VA_ARGS__)
#define WEFT_TRACE(subsys, ...) WEFT_LOG_(WEFT_LOG_LEVEL_TRACE, subsys, __VA_ARGS__)

#endif /* WEFT_LOG_H */
