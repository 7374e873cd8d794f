// CUDA versions of kernels/losses.h (f32). Losses over a batch run in one block: at training sizes
// (B = 128, K <= 200) a single block finishes in microseconds and needs no second pass to average.
// Out-of-range labels cannot throw on the device: the loss becomes NaN, which the trainer's
// finite-loss check reports (the data pipeline validates labels before they get here).
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/losses.h"

namespace cac::kernels::cuda {

namespace {
constexpr int kBlock = 256;
constexpr int kHeadBlock = 512;  // the fused head's single block: more threads for B*K and B*N items

// logsumexp(sign * row) with the row extremum subtracted first (no overflow at d = 100+).
__device__ float row_logsumexp(const float* row, int K, float sign) {
  float m = -FLT_MAX;
  for (int k = 0; k < K; ++k) m = fmaxf(m, sign * row[k]);
  float s = 0.f;
  for (int k = 0; k < K; ++k) s += expf(sign * row[k] - m);
  return m + logf(s);
}

// Per-row CAC terms accumulated over the batch into out[0..2].
__device__ void cac_loss_rows(const float* d, const int64_t* labels, int B, int K, float lambda,
                              float* out) {
  __shared__ double scratch[32];
  double tuplet = 0, anchor = 0;
  for (int b = threadIdx.x; b < B; b += blockDim.x) {
    const float* row = d + int64_t(b) * K;
    const int64_t y = labels[b];
    const float dy = (y >= 0 && y < K) ? row[y] : NAN;
    tuplet += double(dy + row_logsumexp(row, K, -1.f));
    anchor += double(dy);
  }
  tuplet = block_sum(tuplet, scratch);
  anchor = block_sum(anchor, scratch);
  if (threadIdx.x == 0) {
    out[1] = float(tuplet / B);
    out[2] = float(anchor / B);
    out[0] = float((tuplet + double(lambda) * anchor) / B);
  }
}

// gd[b, k] = gloss/B * ((1 + lambda) [k == y] - softmax(-d)_k); returns nothing, writes gd.
__device__ void cac_grad_row(const float* row, int64_t y, int K, float lambda, float scale, float* gd) {
  const float lse = row_logsumexp(row, K, -1.f);
  for (int k = 0; k < K; ++k) {
    const float softmin = expf(-row[k] - lse);
    gd[k] = scale * ((k == y ? 1.f + lambda : 0.f) - softmin) + (y >= 0 && y < K ? 0.f : NAN);
  }
}

// Fused head, forward: distances for all (b, k), then the loss over the rows. One block.
__global__ void cac_head_fwd(const float* __restrict__ z, const float* __restrict__ c,
                             const int64_t* __restrict__ labels, int B, int K, int N, float lambda,
                             float* __restrict__ d, float* __restrict__ out) {
  for (int idx = threadIdx.x; idx < B * K; idx += blockDim.x) {
    const int b = idx / K, k = idx % K;
    float s = 0.f;
    for (int n = 0; n < N; ++n) {
      const float diff = z[b * N + n] - c[k * N + n];
      s = fmaf(diff, diff, s);
    }
    d[idx] = sqrtf(s);
  }
  __syncthreads();  // d is read back by other threads of this block below
  cac_loss_rows(d, labels, B, K, lambda, out);
}

// Fused head, backward: w = gd/d per (b, k) into a scratch, then gz and gc. One block.
__global__ void cac_head_bwd(const float* __restrict__ z, const float* __restrict__ c,
                             const float* __restrict__ d, const int64_t* __restrict__ labels, int B,
                             int K, int N, float lambda, const float* __restrict__ gloss,
                             float* __restrict__ w, float* __restrict__ gz, float* __restrict__ gc) {
  const float scale = gloss[0] / float(B);
  for (int b = threadIdx.x; b < B; b += blockDim.x) {
    float* wr = w + b * K;
    cac_grad_row(d + b * K, labels[b], K, lambda, scale, wr);
    for (int k = 0; k < K; ++k) {
      const float dist = d[b * K + k];
      wr[k] = dist > 0.f ? wr[k] / dist : 0.f;  // subgradient 0 at d = 0
    }
  }
  __syncthreads();
  const int nz = gz ? B * N : 0, nc = gc ? K * N : 0;
  for (int idx = threadIdx.x; idx < nz + nc; idx += blockDim.x) {
    if (idx < nz) {
      const int b = idx / N, n = idx % N;
      float s = 0.f;
      for (int k = 0; k < K; ++k) s = fmaf(w[b * K + k], z[idx] - c[k * N + n], s);
      gz[idx] = s;
    } else {
      const int j = idx - nz, k = j / N, n = j % N;
      float s = 0.f;
      for (int b = 0; b < B; ++b) s = fmaf(-w[b * K + k], z[b * N + n] - c[j], s);
      gc[j] = s;
    }
  }
}

__global__ void ce_fwd(const float* z, const int64_t* labels, int B, int K, float eps, float* out) {
  __shared__ double scratch[32];
  double s = 0;
  for (int b = threadIdx.x; b < B; b += blockDim.x) {
    const float* row = z + int64_t(b) * K;
    const int64_t y = labels[b];
    float sum = 0;
    for (int k = 0; k < K; ++k) sum += row[k];
    s += double(row_logsumexp(row, K, 1.f) - (1.f - eps) * ((y >= 0 && y < K) ? row[y] : NAN) - eps * sum / float(K));
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) out[0] = float(s / B);
}

__global__ void ce_bwd(const float* z, const int64_t* labels, int B, int K, float eps, const float* gloss, float* g) {
  const float scale = gloss[0] / float(B);
  for (int b = threadIdx.x; b < B; b += blockDim.x) {
    const float* row = z + int64_t(b) * K;
    const int64_t y = labels[b];
    const float lse = row_logsumexp(row, K, 1.f);
    for (int k = 0; k < K; ++k)
      g[int64_t(b) * K + k] = scale * (expf(row[k] - lse) - (k == y ? 1.f - eps : 0.f) - eps / float(K)) +
                              (y >= 0 && y < K ? 0.f : NAN);
  }
}

__global__ void gamma_fwd(const float* d, int B, int K, float* gamma) {
  for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < B; b += gridDim.x * blockDim.x) {
    const float* row = d + int64_t(b) * K;
    const float lse = row_logsumexp(row, K, -1.f);
    for (int k = 0; k < K; ++k) gamma[int64_t(b) * K + k] = row[k] * (1.f - expf(-row[k] - lse));
  }
}

template <bool kMin>
__global__ void arg_rows(const float* x, int B, int K, int64_t* index) {
  for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < B; b += gridDim.x * blockDim.x) {
    const float* row = x + int64_t(b) * K;
    int best = 0;  // first index wins ties; NaN never wins (comparisons are false)
    for (int k = 1; k < K; ++k)
      if (kMin ? row[k] < row[best] : row[k] > row[best]) best = k;
    index[b] = best;
  }
}

__global__ void count_eq(const int64_t* pred, const int64_t* labels, int64_t n, int64_t* counter) {
  __shared__ unsigned long long scratch[32];
  unsigned long long c = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) c += pred[i] == labels[i];
  c = block_sum(c, scratch);
  if (threadIdx.x == 0) atomicAdd(reinterpret_cast<unsigned long long*>(counter), c);
}

int rows_grid(int B) { return (B + kBlock - 1) / kBlock; }
}  // namespace

void cac_head_forward(const Tensor& z, const Tensor& centres, const Tensor& labels, double lambda,
                      Tensor& d, Tensor& out) {
  require_f32("cac_head", z);
  cac_head_fwd<<<1, kHeadBlock, 0, stream()>>>(z.data<float>(), centres.data<float>(),
                                           labels.data<int64_t>(), int(z.dim(0)), int(centres.dim(0)),
                                           int(z.dim(1)), float(lambda), d.data<float>(), out.data<float>());
  CUDA_CHECK_LAUNCH();
}

void cac_head_backward(const Tensor& z, const Tensor& centres, const Tensor& d, const Tensor& labels,
                       double lambda, const Tensor& gloss, Tensor* gz, Tensor* gc) {
  require_f32("cac_head_backward", z);
  Tensor w = Tensor::empty(d.shape(), DType::F32, Device::CUDA);  // from the caching allocator
  cac_head_bwd<<<1, kHeadBlock, 0, stream()>>>(z.data<float>(), centres.data<float>(), d.data<float>(),
                                           labels.data<int64_t>(), int(z.dim(0)), int(centres.dim(0)),
                                           int(z.dim(1)), float(lambda), gloss.data<float>(),
                                           w.data<float>(), gz ? gz->data<float>() : nullptr,
                                           gc ? gc->data<float>() : nullptr);
  CUDA_CHECK_LAUNCH();
}

void cross_entropy_forward(const Tensor& logits, const Tensor& labels, double eps, Tensor& out) {
  require_f32("cross_entropy", logits);
  ce_fwd<<<1, kBlock, 0, stream()>>>(logits.data<float>(), labels.data<int64_t>(), int(logits.dim(0)),
                                     int(logits.dim(1)), float(eps), out.data<float>());
  CUDA_CHECK_LAUNCH();
}

void cross_entropy_backward(const Tensor& logits, const Tensor& labels, double eps, const Tensor& gloss, Tensor& glogits) {
  require_f32("cross_entropy_backward", logits);
  ce_bwd<<<1, kBlock, 0, stream()>>>(logits.data<float>(), labels.data<int64_t>(), int(logits.dim(0)),
                                     int(logits.dim(1)), float(eps), gloss.data<float>(), glogits.data<float>());
  CUDA_CHECK_LAUNCH();
}

void open_set_score_forward(const Tensor& d, Tensor& gamma) {
  require_f32("open_set_score", d);
  const int B = int(d.dim(0));
  if (B == 0) return;
  gamma_fwd<<<rows_grid(B), kBlock, 0, stream()>>>(d.data<float>(), B, int(d.dim(1)), gamma.data<float>());
  CUDA_CHECK_LAUNCH();
}

void argmin_rows(const Tensor& x, Tensor& index) {
  require_f32("argmin", x);
  const int B = int(x.dim(0));
  if (B == 0) return;
  arg_rows<true><<<rows_grid(B), kBlock, 0, stream()>>>(x.data<float>(), B, int(x.dim(1)), index.data<int64_t>());
  CUDA_CHECK_LAUNCH();
}

void argmax_rows(const Tensor& x, Tensor& index) {
  require_f32("argmax", x);
  const int B = int(x.dim(0));
  if (B == 0) return;
  arg_rows<false><<<rows_grid(B), kBlock, 0, stream()>>>(x.data<float>(), B, int(x.dim(1)), index.data<int64_t>());
  CUDA_CHECK_LAUNCH();
}

void count_correct(const Tensor& pred, const Tensor& labels, Tensor& counter) {
  count_eq<<<1, kBlock, 0, stream()>>>(pred.data<int64_t>(), labels.data<int64_t>(), pred.numel(),
                                       counter.data<int64_t>());
  CUDA_CHECK_LAUNCH();
}

}  // namespace cac::kernels::cuda
