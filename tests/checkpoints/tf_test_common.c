/* Tensor-file test helpers (see tf_test_common.h). */
#include "tf_test_common.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "weft/bf16.h"

int64_t tf_test_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  return n;
}

void tf_test_value(weft_dtype_t dtype, int64_t lin, int salt, void *out) {
  switch (dtype) {
  case WEFT_DTYPE_F32: { /* quarter steps: exact in f32, and distinct per element */
    float v = (float)(lin % 100003) * 0.25f - 3.0f + (float)salt;
    memcpy(out, &v, sizeof v);
    break;
  }
  case WEFT_DTYPE_BF16: { /* 8 significant bits at most, so exact in bf16 */
    weft_bf16_t v = weft_f32_to_bf16((float)(lin % 251) * 0.5f - 60.0f + (float)salt);
    memcpy(out, &v, sizeof v);
    break;
  }
  case WEFT_DTYPE_I32: {
    int32_t v = (int32_t)(lin * 7 - 11 + salt);
    memcpy(out, &v, sizeof v);
    break;
  }
  case WEFT_DTYPE_I64: { /* above 2^32: catches a truncation to 32 bits */
    int64_t v = lin * 1000003 + ((int64_t)1 << 40) + salt;
    memcpy(out, &v, sizeof v);
    break;
  }
  case WEFT_DTYPE_F16: memset(out, 0, 2); break;
  }
}

/* Calls fn for each element of the block in row-major order with its global linear index. */
typedef void (*tf_visit_fn)(int64_t local, int64_t lin, void *ctx);

static void tf_visit(int ndim, const int64_t *global, const int64_t *start, const int64_t *count,
                     tf_visit_fn fn, void *ctx) {
  int64_t g[4] = {1, 1, 1, 1}, s[4] = {0, 0, 0, 0}, c[4] = {1, 1, 1, 1};
  for (int d = 0; d < ndim; d++) {
    g[4 - ndim + d] = global[d];
    s[4 - ndim + d] = start ? start[d] : 0;
    c[4 - ndim + d] = start ? count[d] : global[d];
  }
  int64_t local = 0;
  for (int64_t i = 0; i < c[0]; i++)
    for (int64_t j = 0; j < c[1]; j++)
      for (int64_t k = 0; k < c[2]; k++)
        for (int64_t l = 0; l < c[3]; l++) {
          int64_t lin = (((s[0] + i) * g[1] + s[1] + j) * g[2] + s[2] + k) * g[3] + s[3] + l;
          fn(local++, lin, ctx);
        }
}

typedef struct tf_fill_ctx {
  weft_dtype_t dtype;
  int salt;
  unsigned char *buf;
  size_t esize;
  int64_t wrong;
  int64_t first_bad;
} tf_fill_ctx_t;

static void tf_fill_one(int64_t local, int64_t lin, void *data) {
  tf_fill_ctx_t *ctx = data;
  tf_test_value(ctx->dtype, lin, ctx->salt, ctx->buf + (size_t)local * ctx->esize);
}

static void tf_check_one(int64_t local, int64_t lin, void *data) {
  tf_fill_ctx_t *ctx = data;
  unsigned char want[8];
  tf_test_value(ctx->dtype, lin, ctx->salt, want);
  if (memcmp(want, ctx->buf + (size_t)local * ctx->esize, ctx->esize) != 0) {
    if (ctx->wrong == 0) ctx->first_bad = lin;
    ctx->wrong++;
  }
}

void tf_test_fill(weft_dtype_t dtype, int salt, int ndim, const int64_t *global,
                  const int64_t *start, const int64_t *count, void *buf) {
  tf_fill_ctx_t ctx = {dtype, salt, buf, weft_dtype_size(dtype), 0, -1};
  tf_visit(ndim, global, start, count, tf_fill_one, &ctx);
}

int64_t tf_test_check(weft_dtype_t dtype, int salt, int ndim, const int64_t *global,
                      const int64_t *start, const int64_t *count, const void *buf,
                      const char *what) {
  tf_fill_ctx_t ctx = {dtype, salt, (unsigned char *)buf, weft_dtype_size(dtype), 0, -1};
  tf_visit(ndim, global, start, count, tf_check_one, &ctx);
  WT_CHECK(ctx.wrong == 0, "%s: %lld wrong %s elements, first at global index %lld", what,
           (long long)ctx.wrong, weft_dtype_name(dtype), (long long)ctx.first_bad);
  return ctx.wrong;
}

char *tf_test_mkdtemp(void) {
  char tmpl[] = "tf-XXXXXX";
  if (!mkdtemp(tmpl)) return NULL;
  char cwd[4096];
  if (!getcwd(cwd, sizeof cwd)) return NULL;
  size_t n = strlen(cwd) + strlen(tmpl) + 2;
  char *path = malloc(n);
  if (path) snprintf(path, n, "%s/%s", cwd, tmpl);
  return path;
}

void tf_test_rmtree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char path[4096];
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

static int g_saved_stderr = -1;
static FILE *g_capture;

void tf_test_capture_begin(void) {
  fflush(stderr);
  g_capture = tmpfile();
  if (!g_capture) return;
  g_saved_stderr = dup(STDERR_FILENO);
  dup2(fileno(g_capture), STDERR_FILENO);
}

char *tf_test_capture_end(void) {
  fflush(stderr);
  if (!g_capture) return calloc(1, 1);
  dup2(g_saved_stderr, STDERR_FILENO);
  close(g_saved_stderr);
  /* The log wrote through the descriptor, not the FILE, so ask the descriptor. */
  int fd = fileno(g_capture);
  off_t size = lseek(fd, 0, SEEK_END);
  char *text = calloc((size_t)(size > 0 ? size : 0) + 1, 1);
  if (text && size > 0 && pread(fd, text, (size_t)size, 0) != (ssize_t)size) text[0] = 0;
  fclose(g_capture);
  g_capture = NULL;
  /* Echo what was captured, so the test log still shows the error lines. */
  if (text) fputs(text, stderr);
  return text;
}
