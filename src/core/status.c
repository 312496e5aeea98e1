/* Status names and the logging half of the CHECK macros. */
#include "weft/status.h"
#include "weft/check.h"

const char *weft_status_str(weft_status_t status) {
  switch (status) {
  case WEFT_OK: return "ok";
  case WEFT_ERR_INVALID_ARG: return "invalid argument";
  case WEFT_ERR_NO_MEMORY: return "out of memory";
  case WEFT_ERR_IO: return "I/O error";
  case WEFT_ERR_DEVICE: return "device error";
  case WEFT_ERR_COMM: return "communication error";
  case WEFT_ERR_PEER_LOST: return "peer lost";
  case WEFT_ERR_TIMEOUT: return "timeout";
  case WEFT_ERR_CORRUPT: return "corrupt data";
  case WEFT_ERR_UNSUPPORTED: return "unsupported";
  case WEFT_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

weft_status_t weft_check_fail(weft_status_t status, const char *lib, long code, const char *msg,
                              const char *expr, const char *file, int line) {
  weft_log(WEFT_LOG_LEVEL_ERROR, "check", "%s error %ld (%s) in %s at %s:%d", lib, code,
           msg ? msg : "no message", expr, file, line);
  return status;
}

void weft_check_trace(weft_status_t status, const char *expr, const char *file, int line) {
  WEFT_DEBUG("check", "  passed up %s from %s at %s:%d", weft_status_str(status), expr, file, line);
}
