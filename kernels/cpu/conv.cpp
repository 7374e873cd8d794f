// CPU twins of kernels/conv.h: convolution as im2col + GEMM over chunks of images, so that each
// GEMM has a few thousand columns even for the late 4x4 layers (per-image GEMMs would be tiny).
#include <algorithm>
#include <vector>

#include "kernels/conv.h"
#include "kernels/layout.h"
#include "kernels/cpu/blas.h"

namespace cac::kernels::cpu {

namespace {

struct Dims {
  int B, C, H, W, O, kh, kw, s, p, Ho, Wo;
  int64_t K() const { return int64_t(C) * kh * kw; }
  int64_t HWo() const { return int64_t(Ho) * Wo; }
  int64_t CHW() const { return int64_t(C) * H * W; }
  // Images per chunk: about 4096 GEMM columns, so late 4x4 layers still make wide GEMMs (on the
  // 2-core dev machine 4096 and 2048 measured alike within noise, 1024 slower; docs/performance.md).
  int chunk() const { return int(std::clamp<int64_t>(4096 / std::max<int64_t>(HWo(), 1), 1, B)); }
};

Dims dims_of(const Tensor& x, const Tensor& w, ConvGeometry g) {
  Dims d{};
  d.B = int(x.dim(0)); d.C = int(x.dim(1)); d.H = int(x.dim(2)); d.W = int(x.dim(3));
  d.O = int(w.dim(0)); d.kh = int(w.dim(2)); d.kw = int(w.dim(3));
  d.s = g.stride; d.p = g.pad;
  d.Ho = (d.H + 2 * d.p - d.kh) / d.s + 1;
  d.Wo = (d.W + 2 * d.p - d.kw) / d.s + 1;
  return d;
}

int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output columns ow whose input column ow*s - p + kj lies inside [0, W): the range [lo, hi).
std::pair<int, int> valid_columns(const Dims& d, int kj) {
  const int lo = std::clamp(floor_div(d.p - kj + d.s - 1, d.s), 0, d.Wo);
  const int hi = std::clamp(floor_div(d.W - 1 + d.p - kj, d.s) + 1, lo, d.Wo);
  return {lo, hi};
}

// Scratch that grows and is reused: big im2col buffers would otherwise be mmap'd every call.
template <class T>
T* scratch(int slot, size_t n) {
  thread_local std::vector<T> buffers[3];
  auto& b = buffers[slot];
  if (b.size() < n) b.resize(n);
  return b.data();
}

// col[r][gi*HWo + oh*Wo + ow] = x[gi][c][oh*s - p + ki][ow*s - p + kj], r = (c*kh + ki)*kw + kj.
template <class T>
void im2col(const T* x, int g, const Dims& d, T* col) {
  const int64_t ncols = g * d.HWo(), K = d.K();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < K; ++r) {
    const int c = int(r / (d.kh * d.kw)), ki = int(r / d.kw % d.kh), kj = int(r % d.kw);
    T* dst = col + r * ncols;
    const auto [lo, hi] = valid_columns(d, kj);
    for (int gi = 0; gi < g; ++gi) {
      const T* src = x + gi * d.CHW() + int64_t(c) * d.H * d.W;
      for (int oh = 0; oh < d.Ho; ++oh) {
        T* out = dst + gi * d.HWo() + int64_t(oh) * d.Wo;
        const int ih = oh * d.s - d.p + ki;
        if (ih < 0 || ih >= d.H) {
          std::fill_n(out, d.Wo, T(0));
          continue;
        }
        const T* row = src + int64_t(ih) * d.W;
        std::fill_n(out, lo, T(0));
        if (d.s == 1) {
          std::copy_n(row + lo - d.p + kj, hi - lo, out + lo);
        } else {
          for (int ow = lo; ow < hi; ++ow) out[ow] = row[ow * d.s - d.p + kj];
        }
        std::fill_n(out + hi, d.Wo - hi, T(0));
      }
    }
  }
}

// The adjoint of im2col: gx (zeroed by the caller) += scattered columns. Parallel over input
// channels, since all rows of one channel write to the same plane.
template <class T>
void col2im(const T* col, int g, const Dims& d, T* gx) {
  const int64_t ncols = g * d.HWo();
#pragma omp parallel for schedule(static)
  for (int c = 0; c < d.C; ++c) {
    for (int ki = 0; ki < d.kh; ++ki)
      for (int kj = 0; kj < d.kw; ++kj) {
        const T* src = col + ((int64_t(c) * d.kh + ki) * d.kw + kj) * ncols;
        const auto [lo, hi] = valid_columns(d, kj);
        for (int gi = 0; gi < g; ++gi) {
          T* plane = gx + gi * d.CHW() + int64_t(c) * d.H * d.W;
          for (int oh = 0; oh < d.Ho; ++oh) {
            const int ih = oh * d.s - d.p + ki;
            if (ih < 0 || ih >= d.H) continue;
            const T* in = src + gi * d.HWo() + int64_t(oh) * d.Wo;
            T* row = plane + int64_t(ih) * d.W;
            for (int ow = lo; ow < hi; ++ow) row[ow * d.s - d.p + kj] += in[ow];
          }
        }
      }
  }
}

template <class T>
void conv_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Dims& d, Tensor& y) {
  const int G = d.chunk();
  const int64_t K = d.K(), HWo = d.HWo();
  T* col = scratch<T>(0, size_t(K * G * HWo));
  T* tmp = scratch<T>(1, size_t(d.O) * G * HWo);
  const T* xp = x.data<T>();
  const T* wp = w.data<T>();
  T* yp = y.data<T>();
  const T* bp = bias.defined() ? bias.data<T>() : nullptr;
  for (int n0 = 0; n0 < d.B; n0 += G) {
    const int g = std::min(G, d.B - n0);
    im2col(xp + n0 * d.CHW(), g, d, col);
    T* yc = yp + int64_t(n0) * d.O * HWo;
    T* out = g == 1 ? yc : tmp;  // one image: GEMM straight into y
    gemm(false, false, d.O, int(g * HWo), int(K), T(1), wp, int(K), col, int(g * HWo), T(0), out,
         int(g * HWo));
#pragma omp parallel for collapse(2) schedule(static)
    for (int gi = 0; gi < g; ++gi)
      for (int o = 0; o < d.O; ++o) {
        T* dst = yc + (int64_t(gi) * d.O + o) * HWo;
        const T* src = out + int64_t(o) * g * HWo + gi * HWo;
        const T b = bp ? bp[o] : T(0);
        if (g == 1) {
          if (bp) for (int64_t i = 0; i < HWo; ++i) dst[i] += b;
        } else {
          for (int64_t i = 0; i < HWo; ++i) dst[i] = src[i] + b;
        }
      }
  }
}

template <class T>
void conv_backward(const Tensor& x, const Tensor& w, const Tensor& gy, const Dims& d, Tensor* gx,
                   Tensor* gw, Tensor* gbias) {
  const int G = d.chunk();
  const int64_t K = d.K(), HWo = d.HWo();
  const T* xp = x.data<T>();
  const T* wp = w.data<T>();
  const T* gyp = gy.data<T>();
  if (gbias) {
    T* gb = gbias->data<T>();
    for (int o = 0; o < d.O; ++o) {
      Acc<T> s = 0;
      for (int n = 0; n < d.B; ++n) {
        const T* src = gyp + (int64_t(n) * d.O + o) * HWo;
        for (int64_t i = 0; i < HWo; ++i) s += src[i];
      }
      gb[o] = T(s);
    }
  }
  if (!gx && !gw) return;
  T* col = scratch<T>(0, size_t(K * G * HWo));
  T* gyc = scratch<T>(1, size_t(d.O) * G * HWo);
  T* gcol = gx ? scratch<T>(2, size_t(K * G * HWo)) : nullptr;
  if (gx) gx->zero_();
  for (int n0 = 0; n0 < d.B; n0 += G) {
    const int g = std::min(G, d.B - n0);
    const int64_t ncols = g * HWo;
    const T* gsrc = gyp + int64_t(n0) * d.O * HWo;
    const T* gmat = gsrc;  // [O, g*HWo] view of the chunk's output gradient
    if (g > 1) {
#pragma omp parallel for collapse(2) schedule(static)
      for (int gi = 0; gi < g; ++gi)
        for (int o = 0; o < d.O; ++o)
          std::copy_n(gsrc + (int64_t(gi) * d.O + o) * HWo, HWo, gyc + int64_t(o) * ncols + gi * HWo);
      gmat = gyc;
    }
    if (gw) {
      im2col(xp + n0 * d.CHW(), g, d, col);
      gemm(false, true, d.O, int(K), int(ncols), T(1), gmat, int(ncols), col, int(ncols),
           n0 == 0 ? T(0) : T(1), gw->data<T>(), int(K));
    }
    if (gx) {
      gemm(true, false, int(K), int(ncols), d.O, T(1), wp, int(K), gmat, int(ncols), T(0), gcol,
           int(ncols));
      col2im(gcol, g, d, gx->data<T>() + n0 * d.CHW());
    }
  }
}

// bf16 channels-last (kernels/conv.h): the float32 twin on the same values in NCHW, each output
// rounded to bf16 once and put back channels-last.
Tensor nchw_f32(const Tensor& nhwc) {
  Tensor out = Tensor::empty({nhwc.dim(0), nhwc.dim(3), nhwc.dim(1), nhwc.dim(2)});
  cpu::nhwc_bf16_to_nchw(nhwc, out);
  return out;
}
void store_nhwc_bf16(const Tensor& nchw, Tensor& out) { cpu::nchw_to_nhwc_bf16(nchw, out); }
Tensor nchw_like(const Tensor& nhwc) { return Tensor::empty({nhwc.dim(0), nhwc.dim(3), nhwc.dim(1), nhwc.dim(2)}); }

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, ConvGeometry g, Tensor& y) {
  if (x.dtype() == DType::BF16) {
    Tensor y32 = nchw_like(y);
    cpu::conv2d_forward(nchw_f32(x), nchw_f32(w), bias, g, y32);
    return store_nhwc_bf16(y32, y);
  }
  Dims d = dims_of(x, w, g);
  dispatch_floating("conv2d", x.dtype(), [&](auto tag) {
    conv_forward<decltype(tag)>(x, w, bias, d, y);
  });
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& gy, ConvGeometry g, Tensor* gx,
                     Tensor* gw, Tensor* gbias) {
  if (x.dtype() == DType::BF16) {
    Tensor gx32 = gx ? nchw_like(*gx) : Tensor(), gw32 = gw ? nchw_like(*gw) : Tensor();
    cpu::conv2d_backward(nchw_f32(x), nchw_f32(w), nchw_f32(gy), g, gx ? &gx32 : nullptr, gw ? &gw32 : nullptr,
                         nullptr);
    if (gx) store_nhwc_bf16(gx32, *gx);
    if (gw) store_nhwc_bf16(gw32, *gw);
    return;
  }
  Dims d = dims_of(x, w, g);
  dispatch_floating("conv2d_backward", x.dtype(), [&](auto tag) {
    conv_backward<decltype(tag)>(x, w, gy, d, gx, gw, gbias);
  });
}

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  dispatch_floating("linear", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int B = int(x.dim(0)), in = int(x.dim(1)), out = int(w.dim(0));
    T* yp = y.data<T>();
    gemm(false, true, B, out, in, T(1), x.data<T>(), in, w.data<T>(), in, T(0), yp, out);
    if (bias.defined()) {
      const T* b = bias.data<T>();
      for (int i = 0; i < B; ++i)
        for (int j = 0; j < out; ++j) yp[int64_t(i) * out + j] += b[j];
    }
  });
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& gy, Tensor* gx, Tensor* gw,
                     Tensor* gbias) {
  dispatch_floating("linear_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int B = int(x.dim(0)), in = int(x.dim(1)), out = int(w.dim(0));
    const T* g = gy.data<T>();
    if (gx) gemm(false, false, B, in, out, T(1), g, out, w.data<T>(), in, T(0), gx->data<T>(), in);
    if (gw) gemm(true, false, out, in, B, T(1), g, out, x.data<T>(), in, T(0), gw->data<T>(), in);
    if (gbias) {
      T* gb = gbias->data<T>();
      for (int j = 0; j < out; ++j) {
        Acc<T> s = 0;
        for (int i = 0; i < B; ++i) s += g[int64_t(i) * out + j];
        gb[j] = T(s);
      }
    }
  });
}

}  // namespace cac::kernels::cpu
