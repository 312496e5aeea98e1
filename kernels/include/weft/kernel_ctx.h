/* Kernel context: everything a compute kernel needs besides its operands, for one device.
 *
 * A context binds a device and a stream, and owns the per-device state that must not be
 * created per call: the cuBLAS handle (bound to the stream, with its own workspace) on CUDA,
 * and grow-once scratch workspaces (host memory on the CPU device, device memory on CUDA) that
 * kernels use for conversions and temporaries. After the first call of a given size no kernel
 * allocates, so hot loops stay allocation-free (design.md section 2).
 *
 * Every kernel taking a context is ordered on the context's stream: on CUDA it returns once
 * the work is queued (call weft_kernel_ctx_synchronize before reading results on the host);
 * on the CPU device it has finished on return. A context is used by one thread at a time;
 * give each thread (or each stream) its own.
 *
 * Rejected: a global per-device singleton (hides which stream a kernel runs on, and breaks
 * the compute/communication overlap that needs several streams), and passing raw cuBLAS
 * handles through the API (would put CUDA types into headers that CPU-only code includes). */
#ifndef WEFT_KERNEL_CTX_H
#define WEFT_KERNEL_CTX_H

#include <stdbool.h>
#include <stddef.h>

#include "weft/device.h"
#include "weft/status.h"

typedef struct weft_kernel_ctx weft_kernel_ctx_t;

/* Creates a kernel context on `device`.
 * [in] device: an open device; borrowed, must outlive the context.
 * [in] stream: stream of `device` that all kernels of this context are queued on; borrowed.
 *              NULL: the context creates and owns a stream of its own.
 * [out] ctx_p: the new context.
 * Errors: WEFT_ERR_INVALID_ARG (NULL device), WEFT_ERR_NO_MEMORY, WEFT_ERR_DEVICE (cuBLAS or
 * CUDA setup failed), WEFT_ERR_UNSUPPORTED (CUDA device in a build without CUDA). */
weft_status_t weft_kernel_ctx_create(const weft_device_t *device, weft_stream_t *stream,
                                     weft_kernel_ctx_t **ctx_p);
/* Waits for the context's queued work, then frees what it owns. NULL is a no-op. */
void weft_kernel_ctx_destroy(weft_kernel_ctx_t *ctx);

const weft_device_t *weft_kernel_ctx_device(const weft_kernel_ctx_t *ctx);
weft_stream_t *weft_kernel_ctx_stream(const weft_kernel_ctx_t *ctx);
/* Waits until every kernel queued through this context has finished. */
weft_status_t weft_kernel_ctx_synchronize(weft_kernel_ctx_t *ctx);
/* Bytes of scratch workspace the context holds now (all slots; not the fixed cuBLAS
 * workspace). Constant once every kernel has run at its largest size. */
size_t weft_kernel_ctx_workspace_bytes(const weft_kernel_ctx_t *ctx);

/* Sets how many threads CPU kernels (OpenBLAS included) may use in this process. Several
 * ranks share a node's cores, and OpenBLAS would otherwise start one thread per core in every
 * rank; the runtime calls this once at start-up with cores / local ranks. threads >= 1. */
void weft_kernels_set_cpu_threads(int threads);
int weft_kernels_cpu_threads(void);
/* The CPU core OpenBLAS chose kernels for ("SkylakeX", "Haswell", ...). */
const char *weft_kernels_cpu_blas_core(void);
/* true when OpenBLAS fell back to SSE-era kernels on a CPU that has AVX2: OpenBLAS did not
 * recognise the CPU (common on VMs); OPENBLAS_CORETYPE=Haswell or SkylakeX fixes it. */
bool weft_kernels_cpu_blas_core_is_fallback(void);

#endif /* WEFT_KERNEL_CTX_H */
