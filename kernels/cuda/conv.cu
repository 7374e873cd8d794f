// CUDA versions of kernels/conv.h: convolutions through cuDNN (algorithm chosen once per shape by
// measurement under a workspace cap, cached, with a heuristic fallback) and the linear layer
// through cuBLAS (row-major handled by swapping operands, no transposed copies). bf16 convolutions
// (kernels/conv.h) are cuDNN's NHWC bf16 ones with float32 compute on tensor cores.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "core/cuda_runtime.h"
#include "kernels/conv.h"
#include "kernels/cuda/common.cuh"

namespace cac::kernels::cuda {

namespace {

// ---- RAII descriptors -------------------------------------------------------------------------
// Float32 NCHW, or bf16 channels-last (`bf16`); dimensions are given in N, C, H, W order either way.
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc(int n, int c, int h, int w, bool bf16 = false) {
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, bf16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
                                           bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT, n, c, h, w));
  }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};
struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc(int o, int c, int h, int w, bool bf16) {
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&d));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(d, bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT,
                                           bf16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW, o, c, h, w));
  }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};
struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc(int pad, int stride, bool tf32, bool bf16) {
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d, pad, pad, stride, stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    // FMA math keeps full float32 (what the tests compare against the CPU twin); TF32 tensor
    // cores are PyTorch's default for cuDNN convolutions and are on unless set_allow_tf32(false).
    // bf16 data runs on tensor cores, accumulating in float32 (the compute type above).
    CUDNN_CHECK(cudnnSetConvolutionMathType(d, bf16 || tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// ---- one plan per shape: descriptors and the three chosen algorithms ----------------------------
using Key = std::tuple<int, int, int, int, int, int, int, int, int, bool, bool, bool>;

struct ConvPlan {
  TensorDesc x, y, bias;
  FilterDesc w;
  ConvDesc conv;
  bool have_fwd = false, have_bwd_data = false, have_bwd_filter = false;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t fwd_ws = 0, bwd_data_ws = 0, bwd_filter_ws = 0;
  ConvPlan(int n, int c, int h, int w_, int o, int kh, int kw, int ho, int wo, int pad, int stride, bool tf32,
           bool bf16)
      : x(n, c, h, w_, bf16), y(n, o, ho, wo, bf16), bias(1, o, 1, 1), w(o, c, kh, kw, bf16), conv(pad, stride, tf32, bf16) {}
};

ConvPlan& plan_for(const Tensor& x, const Tensor& w, ConvGeometry g) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<ConvPlan>> plans;
  const bool bf16 = x.dtype() == DType::BF16;  // channels-last: x [N, H, W, C], w [O, KH, KW, C]
  const int n = int(x.dim(0)), c = int(x.dim(bf16 ? 3 : 1)), h = int(x.dim(bf16 ? 1 : 2)), wd = int(x.dim(bf16 ? 2 : 3));
  const int o = int(w.dim(0)), kh = int(w.dim(bf16 ? 1 : 2)), kw = int(w.dim(bf16 ? 2 : 3));
  const bool tf32 = cac::cuda::allow_tf32();
  Key key{n, c, h, wd, o, kh, kw, g.stride, g.pad, tf32, cac::cuda::strict_conv_algorithms(), bf16};
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans.find(key);
  if (it != plans.end()) return *it->second;
  const int ho = (h + 2 * g.pad - kh) / g.stride + 1, wo = (wd + 2 * g.pad - kw) / g.stride + 1;
  auto plan = std::make_unique<ConvPlan>(n, c, h, wd, o, kh, kw, ho, wo, g.pad, g.stride, tf32, bf16);
  return *plans.emplace(key, std::move(plan)).first->second;
}

// cudnnFind* runs the candidates on the real buffers (outputs get overwritten, which is fine: the
// call that follows writes them again) and returns them fastest first.
bool gemm_based(cudnnConvolutionFwdAlgo_t a) {
  return a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM;
}
bool gemm_based(cudnnConvolutionBwdDataAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
}
bool gemm_based(cudnnConvolutionBwdFilterAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
         a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
}

// CAC_CUDNN_VERBOSE=1 prints each choice (shape, direction, algorithm, workspace, measured time).
template <class Perf>
bool pick(const Perf* perf, int count, size_t cap, decltype(Perf{}.algo)* algo, size_t* ws,
          const char* what, const Tensor& x, const Tensor& w) {
  const bool strict = cac::cuda::strict_conv_algorithms();
  for (int i = 0; i < count; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= cap && (!strict || gemm_based(perf[i].algo))) {
      *algo = perf[i].algo;
      *ws = perf[i].memory;
      static const bool verbose = std::getenv("CAC_CUDNN_VERBOSE") != nullptr;
      if (verbose)
        std::fprintf(stderr, "cac: conv2d %s x%s w%s -> algorithm %d, workspace %zu B, %.4f ms\n", what,
                     shape_str(x.shape()).c_str(), shape_str(w.shape()).c_str(), int(perf[i].algo),
                     perf[i].memory, double(perf[i].time));
      return true;
    }
  return false;
}

// Once per plan and direction: cudnnFind* (measured on the real buffers), else the heuristic _v7
// query; the first candidate `pick` accepts becomes the plan's algorithm.
template <class Perf, class Find, class Heuristic>
void choose_algorithm(bool* have, decltype(Perf{}.algo)* algo, size_t* ws, size_t cap, const char* what,
                      const Tensor& x, const Tensor& w, Find find, Heuristic heuristic) {
  if (*have) return;
  Perf perf[8];
  int count = 0;
  if (find(perf, &count) != CUDNN_STATUS_SUCCESS || !pick(perf, count, cap, algo, ws, what, x, w)) {
    CUDNN_CHECK(heuristic(perf, &count));
    CAC_CHECK(pick(perf, count, cap, algo, ws, what, x, w), "conv2d: cuDNN offers no {} algorithm for input {} and "
              "weight {}", what, shape_str(x.shape()), shape_str(w.shape()));
  }
  *have = true;
}

void require_conv_dtype(const char* op, const Tensor& x, const Tensor& w) {
  CAC_CHECK((x.dtype() == DType::F32 || x.dtype() == DType::BF16) && w.dtype() == x.dtype(),
            "{} (CUDA): f32 NCHW or bf16 channels-last input and weight, got {} and {}", op, x.str(), w.str());
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, ConvGeometry g, Tensor& y) {
  require_conv_dtype("conv2d", x, w);
  ConvPlan& p = plan_for(x, w, g);
  cudnnHandle_t h = cac::cuda::cudnn();
  const size_t cap = cac::cuda::cudnn_workspace_limit();
  choose_algorithm<cudnnConvolutionFwdAlgoPerf_t>(
      &p.have_fwd, &p.fwd, &p.fwd_ws, cap, "forward", x, w,
      [&](auto* perf, int* count) {
        return cudnnFindConvolutionForwardAlgorithmEx(h, p.x.d, x.raw(), p.w.d, w.raw(), p.conv.d,
                                                      p.y.d, y.raw(), 8, count, perf,
                                                      cac::cuda::cudnn_workspace(cap), cap);
      },
      [&](auto* perf, int* count) {
        return cudnnGetConvolutionForwardAlgorithm_v7(h, p.x.d, p.w.d, p.conv.d, p.y.d, 8, count, perf);
      });
  const float one = 1.f, zero = 0.f;
  CUDNN_CHECK(cudnnConvolutionForward(h, &one, p.x.d, x.raw(), p.w.d, w.raw(), p.conv.d,
                                      p.fwd, cac::cuda::cudnn_workspace(p.fwd_ws), p.fwd_ws, &zero,
                                      p.y.d, y.raw()));
  if (bias.defined())
    CUDNN_CHECK(cudnnAddTensor(h, &one, p.bias.d, bias.raw(), &one, p.y.d, y.raw()));
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& gy, ConvGeometry g, Tensor* gx,
                     Tensor* gw, Tensor* gbias) {
  require_conv_dtype("conv2d_backward", x, w);
  ConvPlan& p = plan_for(x, w, g);
  cudnnHandle_t h = cac::cuda::cudnn();
  const size_t cap = cac::cuda::cudnn_workspace_limit();
  const float one = 1.f, zero = 0.f;
  if (gbias)
    CUDNN_CHECK(cudnnConvolutionBackwardBias(h, &one, p.y.d, gy.raw(), &zero, p.bias.d,
                                             gbias->raw()));
  if (gx) {
    choose_algorithm<cudnnConvolutionBwdDataAlgoPerf_t>(
        &p.have_bwd_data, &p.bwd_data, &p.bwd_data_ws, cap, "backward-data", x, w,
        [&](auto* perf, int* count) {
          return cudnnFindConvolutionBackwardDataAlgorithmEx(h, p.w.d, w.raw(), p.y.d, gy.raw(),
                                                             p.conv.d, p.x.d, gx->raw(), 8, count, perf,
                                                             cac::cuda::cudnn_workspace(cap), cap);
        },
        [&](auto* perf, int* count) {
          return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p.w.d, p.y.d, p.conv.d, p.x.d, 8, count, perf);
        });
    CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, p.w.d, w.raw(), p.y.d, gy.raw(),
                                             p.conv.d, p.bwd_data, cac::cuda::cudnn_workspace(p.bwd_data_ws),
                                             p.bwd_data_ws, &zero, p.x.d, gx->raw()));
  }
  if (gw) {
    choose_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t>(
        &p.have_bwd_filter, &p.bwd_filter, &p.bwd_filter_ws, cap, "backward-filter", x, w,
        [&](auto* perf, int* count) {
          return cudnnFindConvolutionBackwardFilterAlgorithmEx(h, p.x.d, x.raw(), p.y.d, gy.raw(),
                                                               p.conv.d, p.w.d, gw->raw(), 8, count, perf,
                                                               cac::cuda::cudnn_workspace(cap), cap);
        },
        [&](auto* perf, int* count) {
          return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x.d, p.y.d, p.conv.d, p.w.d, 8, count, perf);
        });
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, p.x.d, x.raw(), p.y.d, gy.raw(),
                                               p.conv.d, p.bwd_filter,
                                               cac::cuda::cudnn_workspace(p.bwd_filter_ws), p.bwd_filter_ws,
                                               &zero, p.w.d, gw->raw()));
  }
}

// ---- linear -------------------------------------------------------------------------------------
namespace {
__global__ void add_bias_rows(float* __restrict__ y, const float* __restrict__ b, int rows, int cols) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < int64_t(rows) * cols;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] += b[i % cols];
}
// One thread per column: adjacent threads read adjacent addresses of each row (coalesced).
__global__ void column_sums(const float* __restrict__ g, float* __restrict__ out, int rows, int cols) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int i = 0; i < rows; ++i) s += g[int64_t(i) * cols + j];
    out[j] = s;
  }
}
}  // namespace

// Row-major A[r][c] is column-major A^T, so y = x W^T (row-major) is y^T = W x^T (column-major):
// cuBLAS gets W with op T and x with op N, and writes y in place; likewise for the gradients.
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  require_f32("linear", x);
  const int B = int(x.dim(0)), in = int(x.dim(1)), out = int(w.dim(0));
  const float one = 1.f, zero = 0.f;
  CUBLAS_CHECK(cublasSgemm(cac::cuda::cublas(), CUBLAS_OP_T, CUBLAS_OP_N, out, B, in, &one,
                           w.data<float>(), in, x.data<float>(), in, &zero, y.data<float>(), out));
  if (bias.defined() && B > 0) {
    add_bias_rows<<<grid_for(int64_t(B) * out, 256), 256, 0, stream()>>>(y.data<float>(), bias.data<float>(), B, out);
    CUDA_CHECK_LAUNCH();
  }
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& gy, Tensor* gx, Tensor* gw,
                     Tensor* gbias) {
  require_f32("linear_backward", x);
  const int B = int(x.dim(0)), in = int(x.dim(1)), out = int(w.dim(0));
  const float one = 1.f, zero = 0.f;
  cublasHandle_t h = cac::cuda::cublas();
  if (gx)  // gx^T (in x B) = W^T (in x out) gy^T (out x B)
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, in, B, out, &one, w.data<float>(), in,
                             gy.data<float>(), out, &zero, gx->data<float>(), in));
  if (gw)  // gW^T (in x out) = x^T (in x B) gy (B x out)
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, in, out, B, &one, x.data<float>(), in,
                             gy.data<float>(), out, &zero, gw->data<float>(), in));
  if (gbias) {
    column_sums<<<(out + 255) / 256, 256, 0, stream()>>>(gy.data<float>(), gbias->data<float>(), B, out);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace cac::kernels::cuda
