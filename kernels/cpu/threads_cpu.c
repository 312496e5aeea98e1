/* Thread budget of CPU kernels. OpenBLAS keeps its own pool; its thread count is the only
 * knob it has, so weft forwards the budget there (and later CPU kernels read it back). Also
 * which GEMM kernels OpenBLAS picked for this CPU. */
#include <cblas.h>
#include <stdbool.h>
#include <strings.h>

#include "weft/kernel_ctx.h"

/* Declared by OpenBLAS's cblas.h; repeated here for CBLAS headers that omit it. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_corename(void);

static int g_cpu_threads;

void weft_kernels_set_cpu_threads(int threads) {
  g_cpu_threads = threads < 1 ? 1 : threads;
  openblas_set_num_threads(g_cpu_threads);
}

int weft_kernels_cpu_threads(void) {
  return g_cpu_threads > 0 ? g_cpu_threads : openblas_get_num_threads();
}

const char *weft_kernels_cpu_blas_core(void) { return openblas_get_corename(); }

/* OpenBLAS names its SSE-era fallback kernels after these cores; on a CPU with AVX2 they are
 * 2-3x slower than the Haswell/SkylakeX ones. Seen on VMs whose CPUID model is generic. */
bool weft_kernels_cpu_blas_core_is_fallback(void) {
#if defined(__x86_64__)
  static const char *const old[] = {"prescott", "core2", "katmai", "coppermine", "northwood",
                                    "banias",   "atom",  "penryn", "dunnington", "nehalem"};
  const char *core = openblas_get_corename();
  if (!core || !__builtin_cpu_supports("avx2")) return false;
  for (unsigned i = 0; i < sizeof old / sizeof old[0]; i++)
    if (strcasecmp(core, old[i]) == 0) return true;
#endif
  return false;
}
