/* Minimal test helpers: assertions that print the rank, file and line, and a failure count
 * that the test's main turns into its exit code. Multi-rank tests call weft_test_set_rank so
 * messages say which rank failed. */
#ifndef WEFT_TEST_UTIL_H
#define WEFT_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#define WEFT_TEST_SKIP 77 /* ctest SKIP_RETURN_CODE */

void weft_test_set_rank(int rank);
/* Records a failure and prints "FAIL rank R file:line: message". */
void weft_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int weft_test_failures(void);
/* 0 when no failure was recorded, 1 otherwise; prints a one-line summary. */
int weft_test_exit_code(const char *test_name);
/* Max |a - b| / (atol + rtol * |b|) over n floats: <= 1 means within tolerance. */
double weft_test_max_rel_err(const float *a, const float *b, size_t n, double atol, double rtol);

#define WT_CHECK(cond, ...)                                       \
  do {                                                            \
    if (!(cond)) weft_test_fail(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)
#define WT_CHECK_OK(expr)                                                                   \
  do {                                                                                      \
    weft_status_t wt_st_ = (expr);                                                          \
    if (wt_st_ != WEFT_OK)                                                                  \
      weft_test_fail(__FILE__, __LINE__, "%s returned %s", #expr, weft_status_str(wt_st_)); \
  } while (0)
#define WT_CHECK_STATUS(expr, expected)                                        \
  do {                                                                         \
    weft_status_t wt_st_ = (expr);                                             \
    if (wt_st_ != (expected))                                                  \
      weft_test_fail(__FILE__, __LINE__, "%s returned %s, expected %s", #expr, \
                     weft_status_str(wt_st_), weft_status_str(expected));      \
  } while (0)

#endif /* WEFT_TEST_UTIL_H */
