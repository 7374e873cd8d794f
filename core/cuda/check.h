#pragma once
// The one family of error-check macros for CUDA, cuBLAS and cuDNN calls. Each reports the failed
// statement, the library's own error text and file:line, and throws cac::Error.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "core/error.h"

namespace cac::cuda::detail {
[[noreturn]] void throw_cuda(cudaError_t e, const char* stmt, const char* file, int line);
[[noreturn]] void throw_cublas(cublasStatus_t s, const char* stmt, const char* file, int line);
[[noreturn]] void throw_cudnn(cudnnStatus_t s, const char* stmt, const char* file, int line);
}  // namespace cac::cuda::detail

#define CUDA_CHECK(stmt)                                                                  \
  do {                                                                                    \
    cudaError_t cac_err_ = (stmt);                                                        \
    if (cac_err_ != cudaSuccess) ::cac::cuda::detail::throw_cuda(cac_err_, #stmt, __FILE__, __LINE__); \
  } while (0)
#define CUBLAS_CHECK(stmt)                                                                \
  do {                                                                                    \
    cublasStatus_t cac_st_ = (stmt);                                                      \
    if (cac_st_ != CUBLAS_STATUS_SUCCESS)                                                 \
      ::cac::cuda::detail::throw_cublas(cac_st_, #stmt, __FILE__, __LINE__);              \
  } while (0)
#define CUDNN_CHECK(stmt)                                                                 \
  do {                                                                                    \
    cudnnStatus_t cac_st_ = (stmt);                                                       \
    if (cac_st_ != CUDNN_STATUS_SUCCESS)                                                  \
      ::cac::cuda::detail::throw_cudnn(cac_st_, #stmt, __FILE__, __LINE__);               \
  } while (0)

// After every kernel launch: the launch error always (cheap, no sync); in debug builds also a
// stream synchronisation so an asynchronous fault is reported at the kernel that caused it.
#ifdef NDEBUG
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
#else
// (not while the stream is being recorded into a graph: a synchronisation would end the recording)
#define CUDA_CHECK_LAUNCH()                                                              \
  do {                                                                                   \
    CUDA_CHECK(cudaGetLastError());                                                      \
    cudaStreamCaptureStatus cac_capture_ = cudaStreamCaptureStatusNone;                  \
    CUDA_CHECK(cudaStreamIsCapturing(::cac::cuda::compute_stream(), &cac_capture_));     \
    if (cac_capture_ == cudaStreamCaptureStatusNone)                                     \
      CUDA_CHECK(cudaStreamSynchronize(::cac::cuda::compute_stream()));                  \
  } while (0)
#endif

namespace cac::cuda {
cudaStream_t compute_stream();
cudaStream_t copy_stream();
cublasHandle_t cublas();
cudnnHandle_t cudnn();
// The one shared cuDNN workspace, grown on demand through the caching allocator.
void* cudnn_workspace(size_t bytes);
size_t cudnn_workspace_limit();  // cap for algorithm choice (bytes)
int sm_count();
}  // namespace cac::cuda
