/* Helpers shared by the tensor-file tests: a value pattern defined by the global linear index
 * of each element (so any block of any dataset can be generated and checked on its own, which
 * is what resharding tests need), a scratch directory under the ctest working directory, and
 * stderr capture to check what an error message says. */
#ifndef WEFT_TF_TEST_COMMON_H
#define WEFT_TF_TEST_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "weft/tensor.h"

int64_t tf_test_numel(int ndim, const int64_t *shape);
/* The element at global linear index `lin` of a dataset of `dtype`; `salt` varies the pattern
 * between datasets. bf16 values are exact in bf16. */
void tf_test_value(weft_dtype_t dtype, int64_t lin, int salt, void *out);
/* Fills buf [count...] with the block (start, count) of the global pattern [global...].
 * start == NULL: the whole tensor. */
void tf_test_fill(weft_dtype_t dtype, int salt, int ndim, const int64_t *global,
                  const int64_t *start, const int64_t *count, void *buf);
/* Checks every element of the block against the pattern; returns the number of wrong
 * elements and records a test failure (naming `what` and the first bad index) if any. */
int64_t tf_test_check(weft_dtype_t dtype, int salt, int ndim, const int64_t *global,
                      const int64_t *start, const int64_t *count, const void *buf,
                      const char *what);

/* Creates a fresh directory "tf-XXXXXX" in the working directory (the build tree under
 * ctest); returns a malloc'd path or NULL. */
char *tf_test_mkdtemp(void);
/* Removes the regular files in `dir`, then `dir` itself. */
void tf_test_rmtree(const char *dir);

/* Redirects stderr into a temporary file until tf_test_capture_end, which returns what was
 * written (malloc'd, NUL-terminated; the caller frees it). */
void tf_test_capture_begin(void);
char *tf_test_capture_end(void);

#endif /* WEFT_TF_TEST_COMMON_H */
