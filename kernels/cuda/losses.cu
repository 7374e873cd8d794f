// CUDA versions of kernels/losses.h (f32). Losses over a batch run in one block: at training sizes
// (B = 128, K <= 200) a single block finishes in microseconds and needs no second pass to average.
// Out-of-range labels cannot throw on the device: the loss becomes NaN, which the trainer's
// finite-loss check reports (the data pipeline validates labels before they get here).
#include <cfloat>
#include <map>

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

__global__ void cac_loss_fwd(const float* d, const int64_t* labels, int B, int K, float lambda, float* out) {
  cac_loss_rows(d, labels, B, K, lambda, out);
}

__global__ void cac_loss_bwd(const float* d, const int64_t* labels, int B, int K, float lambda,
                             const float* gloss, float* gd) {
  const float scale = gloss[0] / float(B);
  for (int b = threadIdx.x; b < B; b += blockDim.x)
    cac_grad_row(d + int64_t(b) * K, labels[b], K, lambda, scale, gd + int64_t(b) * K);
}

// ---- the fused CAC head (distance + CAC loss), one block per direction --------------------------
// At training sizes the whole head is a few KB (B = 128, K = N = 20: z, the centres and d are 22 KB),
// so each kernel first copies its operands into shared memory ("staged") and then reads only from
// there: the serial loops over N, K and B then wait on shared memory, not on L2. Rows of z and of the
// centres get an odd stride (N | 1), so the threads of a warp reading different centres hit different
// banks. Where the operands do not fit in a block's shared memory the same code reads global memory
// (ld = N; the backward's w then lives in a scratch tensor). The rows of the loss are done one warp
// per row (lane k, k + 32, ...; shuffles for the row's max and sum).

// Copies a rows x cols row-major matrix into shared memory with row stride ld (the whole block).
__device__ void stage_rows(const float* __restrict__ src, int rows, int cols, float* dst, int ld) {
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) {
    const int r = i / cols;
    dst[r * ld + (i - r * cols)] = src[i];
  }
}

// logsumexp(-row) of a K-entry row by one warp (lane reads k = lane, lane + 32, ...), in every lane.
__device__ float warp_logsumexp_neg(const float* row, int K, int lane) {
  float m = -FLT_MAX;
  for (int k = lane; k < K; k += 32) m = fmaxf(m, -row[k]);
  m = warp_max(m);
  float s = 0.f;
  for (int k = lane; k < K; k += 32) s += expf(-row[k] - m);
  return m + logf(warp_sum(s));
}

__host__ __device__ inline int head_stride(int N, bool staged) { return staged ? (N | 1) : N; }
// Shared-memory floats of a staged head: z (B rows) and the centres (K rows) at stride N | 1, and
// one B x K matrix (d in the forward, d then w in place in the backward).
int64_t head_staged_floats(int B, int K, int N) {
  return (int64_t(B) + K) * head_stride(N, true) + int64_t(B) * K;
}

// Forward: d[b, k] = |z_b - c_k| for all (b, k), then the loss terms over the rows into out[0..2].
__global__ void cac_head_fwd(const float* __restrict__ z, const float* __restrict__ c,
                             const int64_t* __restrict__ labels, int B, int K, int N, float lambda,
                             float* d, float* __restrict__ out, bool staged) {
  extern __shared__ float smem[];
  const int ld = head_stride(N, staged);
  const float* zs = z;
  const float* cs = c;
  float* ds = d;  // where the rows of the loss read d back
  if (staged) {
    zs = smem;
    cs = smem + B * ld;
    ds = smem + (B + K) * ld;
    stage_rows(z, B, N, smem, ld);
    stage_rows(c, K, N, smem + B * ld, ld);
    __syncthreads();
  }
  for (int idx = threadIdx.x; idx < B * K; idx += blockDim.x) {
    const int b = idx / K, k = idx - b * K;
    const float* zr = zs + b * ld;
    const float* cr = cs + k * ld;
    float s = 0.f;
    for (int n = 0; n < N; ++n) {
      const float diff = zr[n] - cr[n];
      s = fmaf(diff, diff, s);
    }
    const float dist = sqrtf(s);
    d[idx] = dist;
    if (staged) ds[idx] = dist;
  }
  __syncthreads();  // the rows below read distances other threads wrote
  __shared__ double scratch[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  double tuplet = 0, anchor = 0;  // summed in lane 0 of each warp
  for (int b = warp; b < B; b += warps) {
    const float* row = ds + b * K;
    const float lse = warp_logsumexp_neg(row, K, lane);
    if (lane == 0) {
      const int64_t y = labels[b];
      const float dy = (y >= 0 && y < K) ? row[y] : NAN;
      tuplet += double(dy + lse);
      anchor += double(dy);
    }
  }
  tuplet = block_sum(tuplet, scratch);
  anchor = block_sum(anchor, scratch);
  if (threadIdx.x == 0) {
    out[1] = float(tuplet / B);
    out[2] = float(anchor / B);
    out[0] = float((tuplet + double(lambda) * anchor) / B);
  }
}

// Backward: w[b, k] = dloss/dd[b, k] / d[b, k] (0 at d = 0, the subgradient), then
// gz[b, n] = sum_k w[b, k] (z[b, n] - c[k, n]) and gc[k, n] = -sum_b w[b, k] (z[b, n] - c[k, n]).
// Staged, w overwrites the shared copy of d in place (each lane rewrites only the entries it read).
__global__ void cac_head_bwd(const float* __restrict__ z, const float* __restrict__ c,
                             const float* __restrict__ d, const int64_t* __restrict__ labels, int B,
                             int K, int N, float lambda, const float* __restrict__ gloss,
                             float* w_scratch, float* __restrict__ gz, float* __restrict__ gc, bool staged) {
  extern __shared__ float smem[];
  const int ld = head_stride(N, staged);
  const float* zs = z;
  const float* cs = c;
  const float* drows = d;
  float* ws = w_scratch;
  if (staged) {
    zs = smem;
    cs = smem + B * ld;
    ws = smem + (B + K) * ld;
    drows = ws;
    stage_rows(z, B, N, smem, ld);
    stage_rows(c, K, N, smem + B * ld, ld);
    stage_rows(d, B, K, ws, K);
    __syncthreads();
  }
  const float scale = gloss[0] / float(B);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int b = warp; b < B; b += warps) {
    const float* row = drows + b * K;
    const float lse = warp_logsumexp_neg(row, K, lane);
    const int64_t y = labels[b];
    const float bad = (y >= 0 && y < K) ? 0.f : NAN;  // an out-of-range label poisons its row
    for (int k = lane; k < K; k += 32) {
      const float dist = row[k];
      const float gd = scale * ((k == y ? 1.f + lambda : 0.f) - expf(-dist - lse)) + bad;
      ws[b * K + k] = dist > 0.f ? gd / dist : 0.f;
    }
  }
  __syncthreads();
  // The centres' sums (B terms each) first, so the longest items start first.
  const int nc = gc ? K * N : 0, nz = gz ? B * N : 0;
  for (int idx = threadIdx.x; idx < nc + nz; idx += blockDim.x) {
    if (idx < nc) {
      const int k = idx / N, n = idx - k * N;
      const float ckn = cs[k * ld + n];
      float s = 0.f;
      for (int b = 0; b < B; ++b) s = fmaf(-ws[b * K + k], zs[b * ld + n] - ckn, s);
      gc[idx] = s;
    } else {
      const int j = idx - nc, b = j / N, n = j - b * N;
      const float zbn = zs[b * ld + n];
      float s = 0.f;
      for (int k = 0; k < K; ++k) s = fmaf(ws[b * K + k], zbn - cs[k * ld + n], s);
      gz[j] = s;
    }
  }
}

__global__ void ce_fwd(const float* z, const int64_t* labels, int B, int K, float* out) {
  __shared__ double scratch[32];
  double s = 0;
  for (int b = threadIdx.x; b < B; b += blockDim.x) {
    const float* row = z + int64_t(b) * K;
    const int64_t y = labels[b];
    s += double(row_logsumexp(row, K, 1.f) - ((y >= 0 && y < K) ? row[y] : NAN));
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) out[0] = float(s / B);
}

__global__ void ce_bwd(const float* z, const int64_t* labels, int B, int K, const float* gloss, float* g) {
  const float scale = gloss[0] / float(B);
  for (int b = threadIdx.x; b < B; b += blockDim.x) {
    const float* row = z + int64_t(b) * K;
    const int64_t y = labels[b];
    const float lse = row_logsumexp(row, K, 1.f);
    for (int k = 0; k < K; ++k)
      g[int64_t(b) * K + k] = scale * (expf(row[k] - lse) - (k == y ? 1.f : 0.f)) +
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

__global__ void gamma_bwd(const float* d, const float* gg, int B, int K, float* gd) {
  for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < B; b += gridDim.x * blockDim.x) {
    const float* row = d + int64_t(b) * K;
    const float* g = gg + int64_t(b) * K;
    const float lse = row_logsumexp(row, K, -1.f);
    float dot = 0.f;
    for (int j = 0; j < K; ++j) dot += g[j] * row[j] * expf(-row[j] - lse);
    for (int k = 0; k < K; ++k) {
      const float s = expf(-row[k] - lse);
      gd[int64_t(b) * K + k] = g[k] * (1.f - s) + g[k] * row[k] * s - s * dot;
    }
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

void cac_loss_forward(const Tensor& d, const Tensor& labels, double lambda, Tensor& out) {
  require_f32("cac_loss", d);
  cac_loss_fwd<<<1, kBlock, 0, stream()>>>(d.data<float>(), labels.data<int64_t>(), int(d.dim(0)),
                                           int(d.dim(1)), float(lambda), out.data<float>());
  CUDA_CHECK_LAUNCH();
}

void cac_loss_backward(const Tensor& d, const Tensor& labels, double lambda, const Tensor& gloss, Tensor& gd) {
  require_f32("cac_loss_backward", d);
  cac_loss_bwd<<<1, kBlock, 0, stream()>>>(d.data<float>(), labels.data<int64_t>(), int(d.dim(0)),
                                           int(d.dim(1)), float(lambda), gloss.data<float>(),
                                           gd.data<float>());
  CUDA_CHECK_LAUNCH();
}

// Dynamic shared memory for a staged head launch of `kernel`, or 0 where its operands do not fit
// in what a block may have on this GPU (the kernel then reads global memory).
size_t head_staging_bytes(const void* kernel, int B, int K, int N) {
  static std::map<const void*, int> limit_of;  // the two head kernels, set up once
  auto it = limit_of.find(kernel);
  if (it == limit_of.end()) it = limit_of.emplace(kernel, allow_all_shared_memory(kernel)).first;
  const int64_t bytes = head_staged_floats(B, K, N) * int64_t(sizeof(float));
  return bytes > 0 && bytes <= it->second ? size_t(bytes) : 0;
}

void cac_head_forward(const Tensor& z, const Tensor& centres, const Tensor& labels, double lambda,
                      Tensor& d, Tensor& out) {
  require_f32("cac_head", z);
  const int B = int(z.dim(0)), K = int(centres.dim(0)), N = int(z.dim(1));
  const size_t smem = head_staging_bytes(reinterpret_cast<const void*>(cac_head_fwd), B, K, N);
  cac_head_fwd<<<1, kHeadBlock, smem, stream()>>>(z.data<float>(), centres.data<float>(), labels.data<int64_t>(),
                                                  B, K, N, float(lambda), d.data<float>(), out.data<float>(),
                                                  smem > 0);
  CUDA_CHECK_LAUNCH();
}

void cac_head_backward(const Tensor& z, const Tensor& centres, const Tensor& d, const Tensor& labels,
                       double lambda, const Tensor& gloss, Tensor* gz, Tensor* gc) {
  require_f32("cac_head_backward", z);
  const int B = int(z.dim(0)), K = int(centres.dim(0)), N = int(z.dim(1));
  const size_t smem = head_staging_bytes(reinterpret_cast<const void*>(cac_head_bwd), B, K, N);
  Tensor w;  // unstaged only: w in global memory, from the caching allocator
  if (smem == 0) w = Tensor::empty(d.shape(), DType::F32, Device::CUDA);
  cac_head_bwd<<<1, kHeadBlock, smem, stream()>>>(z.data<float>(), centres.data<float>(), d.data<float>(),
                                                  labels.data<int64_t>(), B, K, N, float(lambda),
                                                  gloss.data<float>(), smem > 0 ? nullptr : w.data<float>(),
                                                  gz ? gz->data<float>() : nullptr,
                                                  gc ? gc->data<float>() : nullptr, smem > 0);
  CUDA_CHECK_LAUNCH();
}

void cross_entropy_forward(const Tensor& logits, const Tensor& labels, Tensor& out) {
  require_f32("cross_entropy", logits);
  ce_fwd<<<1, kBlock, 0, stream()>>>(logits.data<float>(), labels.data<int64_t>(), int(logits.dim(0)),
                                     int(logits.dim(1)), out.data<float>());
  CUDA_CHECK_LAUNCH();
}

void cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& gloss, Tensor& glogits) {
  require_f32("cross_entropy_backward", logits);
  ce_bwd<<<1, kBlock, 0, stream()>>>(logits.data<float>(), labels.data<int64_t>(), int(logits.dim(0)),
                                     int(logits.dim(1)), gloss.data<float>(), glogits.data<float>());
  CUDA_CHECK_LAUNCH();
}

void open_set_score_forward(const Tensor& d, Tensor& gamma) {
  require_f32("open_set_score", d);
  const int B = int(d.dim(0));
  if (B == 0) return;
  gamma_fwd<<<rows_grid(B), kBlock, 0, stream()>>>(d.data<float>(), B, int(d.dim(1)), gamma.data<float>());
  CUDA_CHECK_LAUNCH();
}

void open_set_score_backward(const Tensor& d, const Tensor& ggamma, Tensor& gd) {
  require_f32("open_set_score_backward", d);
  const int B = int(d.dim(0));
  if (B == 0) return;
  gamma_bwd<<<rows_grid(B), kBlock, 0, stream()>>>(d.data<float>(), ggamma.data<float>(), B,
                                                   int(d.dim(1)), gd.data<float>());
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
