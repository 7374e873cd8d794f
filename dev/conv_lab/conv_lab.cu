// conv_lab: which memory layout cuDNN's convolutions are fastest in, at the networks' shapes (issue
// 25: channels-last where cuDNN is faster with it, measured for both dtypes). Every convolution of
// classifier32 and ResNet-18 at batch 128 runs in four settings -- float32 NCHW and NHWC on TF32
// tensor cores (the engine's default precision), bf16 NCHW and NHWC (float32 accumulation) -- each
// direction (forward, input gradient, weight gradient) with the algorithm cudnnFind measures fastest
// under the library's workspace cap. Each result is first checked against float32 FMA NCHW, then
// timed with CUDA events (median). The totals weigh each shape by how often the network has it.
// Scratch space (dev/), built in CI so it keeps compiling; never linked into the library.
//   conv_lab                     both networks    --net classifier32|resnet18   --iters N   --batch B
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <cudnn.h>

#include "core/bf16.h"
#include "core/cuda/check.h"
#include "core/cuda_runtime.h"
#include "core/rng.h"

namespace {

struct Shape {
  const char* net;
  const char* name;
  int count;  // how many convolutions of the network have this shape
  int c, k, h, w, r, stride;
  int ho() const { return (h + 2 * (r / 2) - r) / stride + 1; }
  int wo() const { return (w + 2 * (r / 2) - r) / stride + 1; }
};

// classifier32: nine 3x3 convolutions, strides 1, 1, 2 per group of three. ResNet-18 (CIFAR stem):
// four stages of two basic blocks, 1x1 stride-2 shortcuts into stages two to four.
const std::vector<Shape> kShapes = {
    {"classifier32", "conv1", 1, 3, 64, 32, 32, 3, 1},     {"classifier32", "conv2", 1, 64, 64, 32, 32, 3, 1},
    {"classifier32", "conv3", 1, 64, 128, 32, 32, 3, 2},   {"classifier32", "conv4-5", 2, 128, 128, 16, 16, 3, 1},
    {"classifier32", "conv6", 1, 128, 128, 16, 16, 3, 2},  {"classifier32", "conv7-8", 2, 128, 128, 8, 8, 3, 1},
    {"classifier32", "conv9", 1, 128, 128, 8, 8, 3, 2},    {"resnet18", "stem", 1, 3, 64, 32, 32, 3, 1},
    {"resnet18", "layer1", 4, 64, 64, 32, 32, 3, 1},       {"resnet18", "layer2.0.conv1", 1, 64, 128, 32, 32, 3, 2},
    {"resnet18", "layer2", 3, 128, 128, 16, 16, 3, 1},     {"resnet18", "layer2 shortcut", 1, 64, 128, 32, 32, 1, 2},
    {"resnet18", "layer3.0.conv1", 1, 128, 256, 16, 16, 3, 2}, {"resnet18", "layer3", 3, 256, 256, 8, 8, 3, 1},
    {"resnet18", "layer3 shortcut", 1, 128, 256, 16, 16, 1, 2}, {"resnet18", "layer4.0.conv1", 1, 256, 512, 8, 8, 3, 2},
    {"resnet18", "layer4", 3, 512, 512, 4, 4, 3, 1},       {"resnet18", "layer4 shortcut", 1, 256, 512, 8, 8, 1, 2},
};

enum class Setting { F32Nchw, F32Nhwc, Bf16Nchw, Bf16Nhwc };
constexpr Setting kSettings[] = {Setting::F32Nchw, Setting::F32Nhwc, Setting::Bf16Nchw, Setting::Bf16Nhwc};
const char* setting_name(Setting s) {
  switch (s) {
    case Setting::F32Nchw: return "tf32 NCHW";
    case Setting::F32Nhwc: return "tf32 NHWC";
    case Setting::Bf16Nchw: return "bf16 NCHW";
    case Setting::Bf16Nhwc: return "bf16 NHWC";
  }
  return "?";
}
bool is_bf16(Setting s) { return s == Setting::Bf16Nchw || s == Setting::Bf16Nhwc; }
bool is_nhwc(Setting s) { return s == Setting::F32Nhwc || s == Setting::Bf16Nhwc; }
// Checked against float32 FMA: 8 unit roundoffs of the inputs' format (TF32 2^-11, bf16 2^-9, the
// bf16 output rounded once more) of the reference's largest magnitude. Random-sign sums grow their
// error and their largest value alike, as sqrt(reduction length).
double tolerance(Setting s) { return is_bf16(s) ? 8 * std::ldexp(1.0, -9) + std::ldexp(1.0, -8) : 8 * std::ldexp(1.0, -11); }

enum class Dir { Forward, InputGrad, WeightGrad };
constexpr Dir kDirs[] = {Dir::Forward, Dir::InputGrad, Dir::WeightGrad};
const char* dir_name(Dir d) { return d == Dir::Forward ? "forward" : d == Dir::InputGrad ? "input grad" : "weight grad"; }

// One tensor in NCHW logical order on the host; on the device in the setting's layout and dtype.
struct DeviceTensor {
  void* p = nullptr;
  size_t bytes = 0;
  DeviceTensor(size_t elems, bool bf16) : bytes(elems * (bf16 ? 2 : 4)) { CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~DeviceTensor() { cudaFree(p); }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;
};

// NCHW index of (n, c, y, x) -> its place in the setting's layout.
size_t place(bool nhwc, int n, int c, int y, int x, int C, int H, int W) {
  return nhwc ? ((size_t(n) * H + y) * W + x) * C + c : ((size_t(n) * C + c) * H + y) * W + x;
}

// Host NCHW floats [N, C, H, W] into the device tensor (layout, dtype), or back.
void upload(const std::vector<float>& v, int N, int C, int H, int W, Setting s, DeviceTensor& d) {
  std::vector<uint16_t> b16(v.size());
  std::vector<float> f32(v.size());
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          const float e = v[place(false, n, c, y, x, C, H, W)];
          const size_t i = place(is_nhwc(s), n, c, y, x, C, H, W);
          f32[i] = e;
          b16[i] = cac::bf16_bits(e);
        }
  CUDA_CHECK(cudaMemcpy(d.p, is_bf16(s) ? static_cast<const void*>(b16.data()) : f32.data(), d.bytes,
                        cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaDeviceSynchronize());  // before the compute stream reads it
}
std::vector<float> download(const DeviceTensor& d, int N, int C, int H, int W, Setting s) {
  const size_t n_elems = size_t(N) * C * H * W;
  std::vector<uint16_t> b16(n_elems);
  std::vector<float> f32(n_elems), out(n_elems);
  CUDA_CHECK(cudaDeviceSynchronize());  // the compute stream's results
  CUDA_CHECK(cudaMemcpy(is_bf16(s) ? static_cast<void*>(b16.data()) : f32.data(), d.p, d.bytes, cudaMemcpyDeviceToHost));
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          const size_t i = place(is_nhwc(s), n, c, y, x, C, H, W);
          out[place(false, n, c, y, x, C, H, W)] = is_bf16(s) ? cac::bf16_to_float(b16[i]) : f32[i];
        }
  return out;
}

// The cuDNN descriptors of one shape in one setting (reference: float32 NCHW with FMA math).
struct Descs {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Descs(const Shape& sh, int batch, Setting s, bool reference) {
    const cudnnDataType_t t = is_bf16(s) ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    const cudnnTensorFormat_t f = is_nhwc(s) ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, f, t, batch, sh.c, sh.h, sh.w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, f, t, batch, sh.k, sh.ho(), sh.wo()));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, t, f, sh.k, sh.c, sh.r, sh.r));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, sh.r / 2, sh.r / 2, sh.stride, sh.stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv, reference ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
  }
  ~Descs() {
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyConvolutionDescriptor(conv);
  }
  Descs(const Descs&) = delete;
  Descs& operator=(const Descs&) = delete;
};

// One shape's buffers in one setting, and the workspace shared by every run.
struct Buffers {
  DeviceTensor x, w, y, gy, gx, gw;
  Buffers(const Shape& sh, int batch, Setting s)
      : x(size_t(batch) * sh.c * sh.h * sh.w, is_bf16(s)),
        w(size_t(sh.k) * sh.c * sh.r * sh.r, is_bf16(s)),
        y(size_t(batch) * sh.k * sh.ho() * sh.wo(), is_bf16(s)),
        gy(size_t(batch) * sh.k * sh.ho() * sh.wo(), is_bf16(s)),
        gx(size_t(batch) * sh.c * sh.h * sh.w, is_bf16(s)),
        gw(size_t(sh.k) * sh.c * sh.r * sh.r, is_bf16(s)) {}
};
struct Workspace {
  void* p = nullptr;
  size_t bytes;
  explicit Workspace(size_t b) : bytes(b) { CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~Workspace() { cudaFree(p); }
};

// Runs `dir` once with the algorithm cudnnFind measures fastest (found on the first call).
struct Runner {
  const Descs& d;
  Buffers& b;
  Workspace& ws;
  int algo = -1;
  bool found = false;
  // False where cuDNN has no algorithm for this setting.
  bool run(Dir dir) {
    cudnnHandle_t h = cac::cuda::cudnn();
    const float one = 1.f, zero = 0.f;
    if (!found) find(dir), found = true;
    if (algo < 0) return false;
    switch (dir) {
      case Dir::Forward:
        CUDNN_CHECK(cudnnConvolutionForward(h, &one, d.x, b.x.p, d.w, b.w.p, d.conv, cudnnConvolutionFwdAlgo_t(algo),
                                            ws.p, ws.bytes, &zero, d.y, b.y.p));
        break;
      case Dir::InputGrad:
        CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, d.w, b.w.p, d.y, b.gy.p, d.conv,
                                                 cudnnConvolutionBwdDataAlgo_t(algo), ws.p, ws.bytes, &zero, d.x, b.gx.p));
        break;
      case Dir::WeightGrad:
        CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, d.x, b.x.p, d.y, b.gy.p, d.conv,
                                                   cudnnConvolutionBwdFilterAlgo_t(algo), ws.p, ws.bytes, &zero, d.w,
                                                   b.gw.p));
        break;
    }
    return true;
  }
  void find(Dir dir) {
    cudnnHandle_t h = cac::cuda::cudnn();
    int n = 0;
    switch (dir) {
      case Dir::Forward: {
        cudnnConvolutionFwdAlgoPerf_t perf[8];
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, d.x, b.x.p, d.w, b.w.p, d.conv, d.y, b.y.p, 8, &n, perf,
                                                           ws.p, ws.bytes));
        algo = first_usable(perf, n);
        break;
      }
      case Dir::InputGrad: {
        cudnnConvolutionBwdDataAlgoPerf_t perf[8];
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, d.w, b.w.p, d.y, b.gy.p, d.conv, d.x, b.gx.p, 8, &n,
                                                                perf, ws.p, ws.bytes));
        algo = first_usable(perf, n);
        break;
      }
      case Dir::WeightGrad: {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[8];
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, d.x, b.x.p, d.y, b.gy.p, d.conv, d.w, b.gw.p, 8,
                                                                  &n, perf, ws.p, ws.bytes));
        algo = first_usable(perf, n);
        break;
      }
    }
  }
  template <class Perf>
  static int first_usable(const Perf* perf, int n) {
    for (int i = 0; i < n; ++i)
      if (perf[i].status == CUDNN_STATUS_SUCCESS) return int(perf[i].algo);
    return -1;
  }
};

double median_ms(Runner& r, Dir dir, int iters) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) r.run(dir);
  std::vector<float> t(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    CUDA_CHECK(cudaEventRecord(a, cac::cuda::compute_stream()));
    r.run(dir);
    CUDA_CHECK(cudaEventRecord(b, cac::cuda::compute_stream()));
    CUDA_CHECK(cudaEventSynchronize(b));
    CUDA_CHECK(cudaEventElapsedTime(&t[size_t(i)], a, b));
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct HostData {
  std::vector<float> x, w, gy;                     // NCHW inputs, random normal
  std::vector<float> y_ref, gx_ref, gw_ref;        // float32 FMA NCHW results
};

// Largest |got - want| over the largest |want|.
double worst(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, top = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::fabs(double(got[i]) - want[i]));
    top = std::max(top, std::fabs(double(want[i])));
  }
  return top > 0 ? err / top : err;
}

}  // namespace

namespace lab {

struct Options {
  std::string net;  // empty: both
  int batch = 128, iters = 20;
};

// The inputs, and the reference results from float32 FMA NCHW.
HostData make_inputs(const Shape& sh, int batch, Workspace& ws) {
  cac::Generator gen(7);
  HostData h;
  auto fill = [&](std::vector<float>& v, size_t n) {
    v.resize(n);
    for (float& e : v) e = float(gen.normal());
  };
  fill(h.x, size_t(batch) * sh.c * sh.h * sh.w);
  fill(h.w, size_t(sh.k) * sh.c * sh.r * sh.r);
  fill(h.gy, size_t(batch) * sh.k * sh.ho() * sh.wo());
  Descs d(sh, batch, Setting::F32Nchw, true);
  Buffers b(sh, batch, Setting::F32Nchw);
  upload(h.x, batch, sh.c, sh.h, sh.w, Setting::F32Nchw, b.x);
  upload(h.w, sh.k, sh.c, sh.r, sh.r, Setting::F32Nchw, b.w);
  upload(h.gy, batch, sh.k, sh.ho(), sh.wo(), Setting::F32Nchw, b.gy);
  for (Dir dir : kDirs) Runner{d, b, ws}.run(dir);
  h.y_ref = download(b.y, batch, sh.k, sh.ho(), sh.wo(), Setting::F32Nchw);
  h.gx_ref = download(b.gx, batch, sh.c, sh.h, sh.w, Setting::F32Nchw);
  h.gw_ref = download(b.gw, sh.k, sh.c, sh.r, sh.r, Setting::F32Nchw);
  return h;
}

// One shape in one setting: each direction checked against the reference, then timed. Returns
// the milliseconds of forward + input grad (not for a stem: its input needs none) + weight grad.
double measure(const Shape& sh, Setting s, const HostData& h, const Options& o, Workspace& ws, bool* ok) {
  Descs d(sh, o.batch, s, false);
  Buffers b(sh, o.batch, s);
  upload(h.x, o.batch, sh.c, sh.h, sh.w, s, b.x);
  upload(h.w, sh.k, sh.c, sh.r, sh.r, s, b.w);
  upload(h.gy, o.batch, sh.k, sh.ho(), sh.wo(), s, b.gy);
  const double flops = 2.0 * o.batch * sh.k * sh.ho() * sh.wo() * sh.c * sh.r * sh.r;
  double total = 0;
  for (Dir dir : kDirs) {
    Runner r{d, b, ws};
    if (!r.run(dir)) {
      std::printf("  %-16s %-11s %-9s no cuDNN algorithm\n", sh.name, dir_name(dir), setting_name(s));
      return NAN;
    }
    const std::vector<float> got =
        dir == Dir::Forward ? download(b.y, o.batch, sh.k, sh.ho(), sh.wo(), s)
        : dir == Dir::InputGrad ? download(b.gx, o.batch, sh.c, sh.h, sh.w, s) : download(b.gw, sh.k, sh.c, sh.r, sh.r, s);
    const double err = worst(got, dir == Dir::Forward ? h.y_ref : dir == Dir::InputGrad ? h.gx_ref : h.gw_ref);
    const bool good = err <= tolerance(s);
    *ok = *ok && good;
    const double ms = median_ms(r, dir, o.iters);
    if (!(dir == Dir::InputGrad && sh.c == 3)) total += ms;
    std::printf("  %-16s %-11s %-9s %8.4f ms %7.1f TFLOP/s  error %.1e%s\n", sh.name, dir_name(dir), setting_name(s),
                ms, flops / (ms * 1e-3) / 1e12, err, good ? "" : "  OVER TOLERANCE");
  }
  return total;
}

// Every shape of `net` in every setting; the network's totals and which layout wins per dtype.
bool run_net(const std::string& net, const Options& o, Workspace& ws) {
  std::printf("== %s, batch %d: cuDNN convolutions, fastest algorithm by cudnnFind (median of %d runs)\n",
              net.c_str(), o.batch, o.iters);
  double total[4] = {0, 0, 0, 0};
  bool ok = true;
  for (const Shape& sh : kShapes) {
    if (net != sh.net) continue;
    const HostData h = make_inputs(sh, o.batch, ws);
    for (Setting s : kSettings) total[int(s)] += sh.count * measure(sh, s, h, o, ws, &ok);
  }
  for (Setting s : kSettings)
    std::printf("%s convolutions, one training step (forward, input and weight gradients): %s %.3f ms\n", net.c_str(),
                setting_name(s), total[int(s)]);
  std::printf("%s: NHWC / NCHW time: tf32 %.2f, bf16 %.2f (below 1: channels-last is faster)\n", net.c_str(),
              total[int(Setting::F32Nhwc)] / total[int(Setting::F32Nchw)],
              total[int(Setting::Bf16Nhwc)] / total[int(Setting::Bf16Nchw)]);
  return ok;
}

}  // namespace lab

int main(int argc, char** argv) {
  lab::Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--net" && has_value) o.net = argv[++i];
    else if (a == "--iters" && has_value) o.iters = std::atoi(argv[++i]);
    else if (a == "--batch" && has_value) o.batch = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: conv_lab [--net classifier32|resnet18] [--iters N] [--batch B]\n");
      return 2;
    }
  }
  if (o.iters < 1 || o.batch < 1 || (!o.net.empty() && o.net != "classifier32" && o.net != "resnet18")) {
    std::fprintf(stderr, "conv_lab: --iters and --batch must be positive, --net classifier32 or resnet18\n");
    return 2;
  }
  std::string why;
  if (!cac::cuda::device_available(&why)) {
    std::fprintf(stderr, "conv_lab: no usable CUDA device: %s\n", why.c_str());
    return 2;
  }
  std::printf("%s\n", cac::cuda::device_description().c_str());
  Workspace ws(cac::cuda::cudnn_workspace_limit());
  bool ok = true;
  for (const char* net : {"classifier32", "resnet18"})
    if (o.net.empty() || o.net == net) ok = lab::run_net(net, o, ws) && ok;
  if (!ok) std::printf("conv_lab: some results were over tolerance (marked above): their times do not count\n");
  return ok ? 0 : 1;
}
