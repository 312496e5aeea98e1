/* Unit tests of src/core: status strings, env registry, arena, tensor descriptors, the CPU
 * device (copies in every direction, streams, events, pinned memory) and bf16 scalars. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "weft/arena.h"
#include "weft/bf16.h"
#include "weft/device.h"
#include "weft/env.h"
#include "weft/status.h"
#include "weft/tensor.h"
#include "weft/timer.h"

static void test_status(void) {
  WT_CHECK(strcmp(weft_status_str(WEFT_OK), "ok") == 0, "ok string");
  WT_CHECK(strcmp(weft_status_str(WEFT_ERR_TIMEOUT), "timeout") == 0, "timeout string");
  for (int s = WEFT_ERR_INTERNAL; s <= WEFT_OK; s++)
    WT_CHECK(strcmp(weft_status_str((weft_status_t)s), "unknown status") != 0, "status %d named",
             s);
  WT_CHECK(strcmp(weft_status_str((weft_status_t)-99), "unknown status") == 0, "unknown");
}

static const weft_env_var_t k_test_vars[] = {
    {"WEFT_TEST_INT", "42", "an integer for the test"},
    {"WEFT_TEST_REAL", "0.5", "a number for the test"},
};
static const weft_env_table_t k_test_table = {"test", k_test_vars, 2};

static void test_env(void) {
  WT_CHECK_OK(weft_env_register(&k_test_table));
  WT_CHECK_OK(weft_env_register(&k_test_table)); /* twice: no-op */
  long value = 0;
  unsetenv("WEFT_TEST_INT");
  WT_CHECK_OK(weft_env_get_long("WEFT_TEST_INT", &value));
  WT_CHECK(value == 42, "default 42, got %ld", value);
  setenv("WEFT_TEST_INT", "-7", 1);
  WT_CHECK_OK(weft_env_get_long("WEFT_TEST_INT", &value));
  WT_CHECK(value == -7, "set -7, got %ld", value);
  setenv("WEFT_TEST_INT", "12abc", 1);
  WT_CHECK_STATUS(weft_env_get_long("WEFT_TEST_INT", &value), WEFT_ERR_INVALID_ARG);
  double real = 0;
  WT_CHECK_OK(weft_env_get_double("WEFT_TEST_REAL", &real));
  WT_CHECK(real == 0.5, "default 0.5, got %g", real);
  const char *text = NULL;
  WT_CHECK_STATUS(weft_env_get_str("WEFT_NOT_DECLARED", &text), WEFT_ERR_INTERNAL);
  /* Core's own table is always present. */
  WT_CHECK_OK(weft_env_get_str("WEFT_LOG_LEVEL", &text));
  /* Unknown WEFT_* names are counted (and warned about). */
  unsetenv("WEFT_TEST_INT");
  int before = weft_env_warn_unknown();
  setenv("WEFT_TYPO_VARIABLE", "1", 1);
  WT_CHECK(weft_env_warn_unknown() == before + 1, "one more unknown variable");
  unsetenv("WEFT_TYPO_VARIABLE");
}

static void test_arena(void) {
  weft_arena_t *arena = NULL;
  WT_CHECK_OK(weft_arena_create("unit", NULL, 4096, &arena));
  if (!arena) return;
  void *a = NULL, *b = NULL, *c = NULL;
  WT_CHECK_OK(weft_arena_alloc(arena, 10, 0, &a));
  WT_CHECK_OK(weft_arena_alloc(arena, 10, 64, &b));
  WT_CHECK((uintptr_t)a % 256 == 0 && (uintptr_t)b % 64 == 0, "alignment");
  WT_CHECK((char *)b >= (char *)a + 10, "no overlap");
  WT_CHECK_STATUS(weft_arena_alloc(arena, 1, 3, &c), WEFT_ERR_INVALID_ARG);
  size_t mark = weft_arena_mark(arena);
  WT_CHECK_OK(weft_arena_alloc(arena, 1000, 0, &c));
  weft_arena_rewind(arena, mark);
  WT_CHECK(weft_arena_used(arena) == mark, "rewind");
  WT_CHECK(weft_arena_peak(arena) >= mark + 1000, "peak remembers");
  WT_CHECK_STATUS(weft_arena_alloc(arena, 1 << 20, 0, &c), WEFT_ERR_NO_MEMORY);
  weft_tensor_t t;
  int64_t shape[2] = {4, 8};
  WT_CHECK_OK(weft_arena_alloc_tensor(arena, "w", WEFT_DTYPE_F32, 2, shape, &t));
  WT_CHECK(t.data != NULL && weft_tensor_nbytes(&t) == 128, "tensor from arena");
  weft_arena_reset(arena);
  WT_CHECK(weft_arena_used(arena) == 0, "reset");
  weft_arena_destroy(arena);
  weft_arena_destroy(NULL);
}

static void test_tensor(void) {
  weft_tensor_t t;
  int64_t shape[3] = {2, 3, 5};
  WT_CHECK_OK(weft_tensor_init(&t, "x", WEFT_DTYPE_BF16, 3, shape, NULL, NULL));
  WT_CHECK(weft_tensor_numel(&t) == 30 && weft_tensor_nbytes(&t) == 60, "numel/nbytes");
  WT_CHECK(t.strides[2] == 2 && t.strides[1] == 10 && t.strides[0] == 30, "byte strides");
  WT_CHECK(weft_tensor_is_contiguous(&t), "contiguous");
  t.strides[1] = 12;
  WT_CHECK(!weft_tensor_is_contiguous(&t), "padded rows are not contiguous");
  char buf[64];
  WT_CHECK_OK(weft_tensor_init(&t, "x", WEFT_DTYPE_BF16, 3, shape, NULL, NULL));
  WT_CHECK(strcmp(weft_tensor_describe(&t, buf, sizeof buf), "x bf16[2,3,5]") == 0, "describe %s",
           buf);
  WT_CHECK_OK(weft_tensor_init(&t, "s", WEFT_DTYPE_I64, 0, NULL, NULL, NULL));
  WT_CHECK(weft_tensor_numel(&t) == 1, "scalar has one element");
  int64_t bad[1] = {-1};
  WT_CHECK_STATUS(weft_tensor_init(&t, "b", WEFT_DTYPE_F32, 1, bad, NULL, NULL),
                  WEFT_ERR_INVALID_ARG);
  WT_CHECK_STATUS(weft_tensor_init(&t, "b", WEFT_DTYPE_F32, 5, shape, NULL, NULL),
                  WEFT_ERR_INVALID_ARG);
  weft_dtype_t dtype;
  WT_CHECK_OK(weft_dtype_parse("bf16", &dtype));
  WT_CHECK(dtype == WEFT_DTYPE_BF16 && weft_dtype_size(dtype) == 2, "bf16 parse");
  WT_CHECK_STATUS(weft_dtype_parse("f64", &dtype), WEFT_ERR_INVALID_ARG);
}

static void test_cpu_device(void) {
  weft_device_t *dev = NULL;
  WT_CHECK_OK(weft_device_open(WEFT_DEVICE_CPU, 0, &dev));
  if (!dev) return;
  WT_CHECK(dev->memory_bytes > 0 && dev->name[0], "cpu described");
  weft_device_t *bad = NULL;
  WT_CHECK_STATUS(weft_device_open(WEFT_DEVICE_CPU, 1, &bad), WEFT_ERR_INVALID_ARG);
#if !WEFT_HAVE_CUDA
  WT_CHECK_STATUS(weft_device_open(WEFT_DEVICE_CUDA, 0, &bad), WEFT_ERR_UNSUPPORTED);
#endif
  enum { N = 1000 };
  float host[N], back[N];
  for (int i = 0; i < N; i++) host[i] = (float)i * 0.5f;
  float *d1 = NULL, *d2 = NULL, *pinned = NULL;
  WT_CHECK_OK(weft_device_alloc(dev, sizeof host, (void **)&d1));
  WT_CHECK_OK(weft_device_alloc(dev, sizeof host, (void **)&d2));
  WT_CHECK_OK(weft_host_alloc_pinned(dev, sizeof host, (void **)&pinned));
  WT_CHECK((uintptr_t)d1 % 256 == 0, "device alignment");
  weft_stream_t *stream = NULL;
  weft_event_t *start = NULL, *end = NULL;
  WT_CHECK_OK(weft_stream_create(dev, &stream));
  WT_CHECK_OK(weft_event_create(dev, &start));
  WT_CHECK_OK(weft_event_create(dev, &end));
  WT_CHECK_OK(weft_event_record(start, stream));
  WT_CHECK_OK(weft_device_copy(dev, d1, host, sizeof host, WEFT_COPY_HOST_TO_DEVICE));
  WT_CHECK_OK(weft_device_copy_async(dev, d2, d1, sizeof host, WEFT_COPY_DEVICE_TO_DEVICE, stream));
  WT_CHECK_OK(
      weft_device_copy_async(dev, pinned, d2, sizeof host, WEFT_COPY_DEVICE_TO_HOST, stream));
  WT_CHECK_OK(weft_device_copy(dev, back, pinned, sizeof host, WEFT_COPY_HOST_TO_HOST));
  usleep(2000);
  WT_CHECK_OK(weft_event_record(end, stream));
  WT_CHECK_OK(weft_stream_synchronize(stream));
  bool done = false;
  WT_CHECK_OK(weft_stream_query(stream, &done));
  WT_CHECK(done, "cpu stream always drained");
  WT_CHECK(memcmp(host, back, sizeof host) == 0, "copies in every direction round trip");
  float ms = 0;
  WT_CHECK_OK(weft_event_elapsed_ms(start, end, &ms));
  WT_CHECK(ms >= 1.5f && ms < 1000.0f, "event timing %.3f ms covers the 2 ms sleep", ms);
  WT_CHECK_OK(weft_device_memset(dev, d1, 0, sizeof host));
  WT_CHECK(d1[0] == 0.0f && d1[N - 1] == 0.0f, "memset");
  weft_event_destroy(start);
  weft_event_destroy(end);
  weft_stream_destroy(stream);
  weft_host_free_pinned(dev, pinned);
  weft_device_free(dev, d1);
  weft_device_free(dev, d2);
  weft_device_close(dev);
}

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static void test_bf16(void) {
  /* Ties round to even: 0x3F808000 is halfway between 0x3F80 and 0x3F81 -> 0x3F80 (even);
   * 0x3F818000 is halfway between 0x3F81 and 0x3F82 -> 0x3F82. */
  WT_CHECK(weft_f32_to_bf16(float_of(0x3F808000u)) == 0x3F80, "tie to even down");
  WT_CHECK(weft_f32_to_bf16(float_of(0x3F818000u)) == 0x3F82, "tie to even up");
  WT_CHECK(weft_f32_to_bf16(float_of(0x3F808001u)) == 0x3F81, "above half rounds up");
  WT_CHECK(weft_f32_to_bf16(INFINITY) == 0x7F80, "inf");
  WT_CHECK(weft_f32_to_bf16(float_of(0x7F7FFFFFu)) == 0x7F80, "max float overflows to inf");
  uint16_t nan = weft_f32_to_bf16(NAN);
  WT_CHECK((nan & 0x7F80) == 0x7F80 && (nan & 0x7F) != 0, "NaN stays NaN");
  WT_CHECK(weft_bf16_to_f32(0xC040) == -3.0f, "bf16 -> f32");
  WT_CHECK(bits_of(weft_bf16_to_f32(weft_f32_to_bf16(1.5f))) == bits_of(1.5f), "exact round trip");
}

int main(void) {
  test_status();
  test_env();
  test_arena();
  test_tensor();
  test_cpu_device();
  test_bf16();
  return weft_test_exit_code("test_core");
}
