// The layout changes on the GPU: per image, a [C, HW] <-> [HW, C] transpose through 32x32 tiles of
// shared memory, so both the reads and the writes are whole rows of a warp.
#include "core/bf16.h"
#include "kernels/cuda/common.cuh"
#include "kernels/layout.h"

namespace cac::kernels::cuda {

namespace {
constexpr int kTile = 32, kRows = 8;  // a 32x32 tile, 32x8 threads, 4 rows each

// in: [N][A][B] (element i, j of image n at (n * A + i) * B + j) -> out [N][B][A], converted by Cvt.
template <class In, class Out, class Cvt>
__global__ void transpose_tiles(const In* __restrict__ in, Out* __restrict__ out, int64_t A, int64_t B, Cvt cvt) {
  __shared__ float tile[kTile][kTile + 1];  // +1: no bank conflicts on the transposed read
  const int64_t n = blockIdx.z, a0 = int64_t(blockIdx.y) * kTile, b0 = int64_t(blockIdx.x) * kTile;
  const In* src = in + n * A * B;
  Out* dst = out + n * A * B;
  for (int r = threadIdx.y; r < kTile; r += kRows) {
    const int64_t a = a0 + r, b = b0 + threadIdx.x;
    if (a < A && b < B) tile[r][threadIdx.x] = cvt.read(src[a * B + b]);
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kTile; r += kRows) {
    const int64_t b = b0 + r, a = a0 + threadIdx.x;
    if (a < A && b < B) dst[b * A + a] = cvt.write(tile[threadIdx.x][r]);
  }
}
struct ToBf16 {
  __device__ float read(float v) const { return v; }
  __device__ uint16_t write(float v) const { return bf16_bits(v); }
};
struct FromBf16 {
  __device__ float read(uint16_t v) const { return bf16_to_float(v); }
  __device__ float write(float v) const { return v; }
};

template <class In, class Out, class Cvt>
void launch(const In* in, Out* out, int64_t N, int64_t A, int64_t B, Cvt cvt) {
  if (N == 0 || A == 0 || B == 0) return;
  CAC_CHECK(N <= 65535 && (A + kTile - 1) / kTile <= 65535, "layout change (CUDA): {} images of {} x {} exceed the "
            "grid's limits", N, A, B);
  const dim3 grid(unsigned((B + kTile - 1) / kTile), unsigned((A + kTile - 1) / kTile), unsigned(N));
  transpose_tiles<<<grid, dim3(kTile, kRows), 0, stream()>>>(in, out, A, B, cvt);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

void nchw_to_nhwc_bf16(const Tensor& x, Tensor& y) {
  launch(x.data<float>(), reinterpret_cast<uint16_t*>(y.data<bf16>()), x.dim(0), x.dim(1), x.dim(2) * x.dim(3),
         ToBf16{});
}

void nhwc_bf16_to_nchw(const Tensor& x, Tensor& y) {
  launch(reinterpret_cast<const uint16_t*>(x.data<bf16>()), y.data<float>(), x.dim(0), x.dim(1) * x.dim(2), x.dim(3),
         FromBf16{});
}

}  // namespace cac::kernels::cuda
