/* Logging with a `host:pid:rank[dev]` prefix and level / subsystem filters.
 *
 * The filter reads its two variables with getenv rather than through the env registry: the
 * registry itself logs, and a logger that depends on it could recurse. Both variables are
 * still declared in the core table (core_env.c) so they are documented and not "unknown". */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "weft/log.h"

#define WEFT_LOG_SUBSYS_MAX 16

static struct {
  pthread_once_t once;
  weft_log_level_t level;
  bool exclude;     /* "^a,b": everything but these subsystems */
  int subsys_count; /* 0: all subsystems */
  char subsys[WEFT_LOG_SUBSYS_MAX][32];
  char host[64];
  int rank;
  char device[32];
} g_log = {.once = PTHREAD_ONCE_INIT, .level = WEFT_LOG_LEVEL_WARN, .rank = -1};

static const char *const k_level_names[] = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"};

static void log_parse_subsys(const char *text) {
  g_log.subsys_count = 0;
  g_log.exclude = false;
  if (!text || !*text || strcmp(text, "all") == 0) return;
  if (*text == '^') {
    g_log.exclude = true;
    text++;
  }
  char copy[512];
  snprintf(copy, sizeof copy, "%s", text);
  char *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok && g_log.subsys_count < WEFT_LOG_SUBSYS_MAX;
       tok = strtok_r(NULL, ",", &save)) {
    snprintf(g_log.subsys[g_log.subsys_count++], sizeof g_log.subsys[0], "%s", tok);
  }
}

void weft_log_configure(void) {
  const char *level = getenv("WEFT_LOG_LEVEL");
  g_log.level = WEFT_LOG_LEVEL_WARN;
  if (level && *level) {
    bool known = false;
    for (int i = 0; i <= WEFT_LOG_LEVEL_TRACE; i++) {
      if (strcasecmp(level, k_level_names[i]) == 0) {
        g_log.level = (weft_log_level_t)i;
        known = true;
      }
    }
    if (!known)
      fprintf(stderr,
              "weft: WEFT_LOG_LEVEL='%s' is not one of error|warn|info|debug|trace; "
              "using warn\n",
              level);
  }
  log_parse_subsys(getenv("WEFT_LOG_SUBSYS"));
  if (gethostname(g_log.host, sizeof g_log.host) != 0) snprintf(g_log.host, sizeof g_log.host, "?");
  char *dot = strchr(g_log.host, '.'); /* short host name, as in NCCL's logs */
  if (dot) *dot = '\0';
}

static void log_init_once(void) { weft_log_configure(); }

void weft_log_set_identity(int rank, const char *device) {
  pthread_once(&g_log.once, log_init_once);
  g_log.rank = rank;
  snprintf(g_log.device, sizeof g_log.device, "%s", device ? device : "");
}

bool weft_log_enabled(weft_log_level_t level, const char *subsys) {
  pthread_once(&g_log.once, log_init_once);
  if (level > g_log.level) return false;
  if (level == WEFT_LOG_LEVEL_ERROR || g_log.subsys_count == 0) return true;
  bool listed = false;
  for (int i = 0; i < g_log.subsys_count; i++)
    if (subsys && strcmp(subsys, g_log.subsys[i]) == 0) listed = true;
  return listed != g_log.exclude;
}

void weft_log(weft_log_level_t level, const char *subsys, const char *fmt, ...) {
  pthread_once(&g_log.once, log_init_once);
  char line[2048];
  int len;
  if (g_log.rank >= 0)
    len = snprintf(line, sizeof line, "%s:%d:%d[%s] %s %s: ", g_log.host, (int)getpid(), g_log.rank,
                   g_log.device, k_level_names[level], subsys ? subsys : "-");
  else
    len = snprintf(line, sizeof line, "%s:%d:-[-] %s %s: ", g_log.host, (int)getpid(),
                   k_level_names[level], subsys ? subsys : "-");
  va_list ap;
  va_start(ap, fmt);
  if (len > 0 && (size_t)len < sizeof line)
    len += vsnprintf(line + len, sizeof line - len, fmt, ap);
  va_end(ap);
  if (len < 0) return;
  if ((size_t)len >= sizeof line - 1) len = (int)sizeof line - 2; /* truncated: keep newline */
  line[len++] = '\n';
  /* One write per line keeps lines from different threads and ranks whole. */
  ssize_t written = write(STDERR_FILENO, line, (size_t)len);
  (void)written;
}
