/* Monotonic clock. CLOCK_MONOTONIC, not gettimeofday: deadlines must survive NTP steps. */
#include <time.h>

#include "weft/timer.h"

double weft_time_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
