/* Test helpers (see test_util.h). */
#include "test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "weft/status.h"

static int g_rank = -1;
static int g_failures;

void weft_test_set_rank(int rank) { g_rank = rank; }

void weft_test_fail(const char *file, int line, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "FAIL rank %d %s:%d: %s\n", g_rank, file, line, msg);
  g_failures++;
}

int weft_test_failures(void) { return g_failures; }

int weft_test_exit_code(const char *test_name) {
  if (g_failures) {
    fprintf(stderr, "%s: %d failure(s) on rank %d\n", test_name, g_failures, g_rank);
    return 1;
  }
  if (g_rank <= 0) printf("%s: passed\n", test_name);
  return 0;
}

double weft_test_max_rel_err(const float *a, const float *b, size_t n, double atol, double rtol) {
  double worst = 0.0;
  for (size_t i = 0; i < n; i++) {
    double err = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
    if (isnan(err) || isnan(a[i]) != isnan(b[i])) return INFINITY;
    if (err > worst) worst = err;
  }
  return worst;
}
