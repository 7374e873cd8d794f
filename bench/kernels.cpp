// cac_bench kernels: each hand-written CUDA kernel at the real classifier32 shapes, first checked
// against its CPU twin, then timed with CUDA events (warm, and with the L2 flushed before each
// run), reported in GB/s of the minimal traffic and as a fraction of the measured D2D copy rate.
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/kernels.h"
#include "core/cuda_runtime.h"
#include "core/rng.h"
#include "core/bf16.h"
#include "kernels/batchnorm.h"
#include "kernels/batchnorm_nhwc.h"
#include "kernels/batchnorm_paths.h"
#include "kernels/distance.h"
#include "kernels/elementwise.h"
#include "kernels/losses.h"
#include "tests/op_cases.h"

namespace cac::bench {

namespace {

Tensor randn(const Shape& s, uint64_t seed, double lo = 0, double hi = 0) {
  Generator g(seed, 5);
  std::vector<float> v(size_t(shape_numel(s)));
  for (auto& x : v) x = float(hi > lo ? lo + (hi - lo) * g.uniform() : g.normal());
  return Tensor::from_vector(v, s);
}
Tensor labels(int64_t B, int64_t K, uint64_t seed) {
  Generator g(seed, 6);
  std::vector<int64_t> v(size_t(B), 0);
  for (auto& x : v) x = int64_t(g.below(uint64_t(K)));
  return Tensor::from_vector(v, {B});
}

// Max over elements of |gpu - cpu| / (atol + rtol |cpu|): <= 1 passes.
double worst(const Tensor& gpu, const Tensor& cpu, int64_t reduction) {
  const testing::Tolerance tol = testing::f32_tolerance(reduction);
  std::vector<double> a = gpu.to(DType::F64).to_vector<double>(), r = cpu.to(DType::F64).to_vector<double>();
  double w = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(a[i] - r[i]) / (tol.atol + tol.rtol * std::abs(r[i]));
    w = std::max(w, std::isnan(e) ? 1e30 : e);
  }
  return w;
}

struct Row {
  std::string name, shape;
  int launches;
  double bytes, check, warm_us, cold_us;
  std::string strategy = {};  // batch norm rows: the path that ran (the rule's choice for the defaults)
};

double of_copy_percent(const Row& r, double copy_gbs) {
  return r.bytes > 0 ? 100.0 * r.bytes / (r.warm_us * 1e-6) / 1e9 / copy_gbs : 0.0;
}

void print(const std::vector<Row>& rows, double copy_gbs) {
  std::printf("\n%-54s %-14s %8s %10s %10s %9s %9s %8s\n", "kernel", "shape", "launches", "warm us",
              "cold us", "GB/s", "of copy", "check");
  for (const Row& r : rows) {
    const double gbs = r.bytes > 0 ? r.bytes / (r.warm_us * 1e-6) / 1e9 : 0;
    std::printf("%-54s %-14s %8d %10.2f %10.2f %9.0f %8.0f%% %8s\n", r.name.c_str(), r.shape.c_str(),
                r.launches, r.warm_us, r.cold_us, gbs, of_copy_percent(r, copy_gbs),
                r.check <= 1 ? "pass" : "FAIL");
  }
  std::printf("(GB/s counts the fewest bytes each kernel must move; 'of copy' compares with the "
              "measured device-to-device copy, %.0f GB/s read+write; 'cold' flushes the L2 first)\n",
              copy_gbs);
}

// Issue 25's target: the bf16 channels-last batch norm at >= 70% of the copy rate.
void print_bf16_targets(const std::vector<Row>& rows, double copy_gbs) {
  for (const Row& r : rows)
    if (r.name.rfind("bf16 nhwc", 0) == 0)
      std::printf("  %-34s %-14s %5.1f%% of copy (>= 70%%): %s\n", r.name.c_str(), r.shape.c_str(),
                  of_copy_percent(r, copy_gbs), of_copy_percent(r, copy_gbs) >= 70 && r.check <= 1 ? "met" : "MISSED");
}

// Issue 3's targets read off the rows: batch norm forward and backward >= 60% of the copy rate
// (the default rows, and the fastest configuration that passed its check, for the sweep), the CAC
// head in <= 2 launches and < 20 us.
void print_targets(const std::vector<Row>& rows, double copy_gbs) {
  std::printf("\ntargets:\n");
  for (const std::string dir : {"forward (train)", "backward"}) {
    const Row* best = nullptr;
    for (const Row& r : rows) {
      if (r.name.rfind("batchnorm", 0) != 0 || r.name.find(dir) == std::string::npos || r.check > 1) continue;
      if (!best || r.warm_us < best->warm_us) best = &r;
      if (r.name == "batchnorm " + dir || r.name == "batchnorm+leaky " + dir) {
        const double pc = of_copy_percent(r, copy_gbs);
        std::printf("  %-34s %-14s %5.1f%% of copy (>= 60%%): %s (ran: %s)\n", r.name.c_str(),
                    r.shape.c_str(), pc, pc >= 60 ? "met" : "MISSED", r.strategy.c_str());
      }
    }
    if (best)
      std::printf("  fastest batch norm %s: '%s' %.2f us, %.1f%% of copy\n", dir.c_str(), best->name.c_str(),
                  best->warm_us, of_copy_percent(*best, copy_gbs));
  }
  for (const Row& r : rows)
    if (r.name.rfind("cac head", 0) == 0)
      std::printf("  %-34s %-14s %d launches, %.2f us (<= 2 launches, < 20 us): %s\n", r.name.c_str(),
                  r.shape.c_str(), r.launches, r.warm_us,
                  r.launches <= 2 && r.warm_us < 20 && r.check <= 1 ? "met" : "MISSED");
}

// The rows measured so far; each kernel is checked against its CPU twin before it is timed.
struct Bench {
  const KernelOptions& o;
  std::vector<Row> rows;
  void time_both(Row r, const std::function<void()>& fn) {
    r.warm_us = 1e3 * cuda::time_ms(fn, 5, o.iters, false);
    r.cold_us = 1e3 * cuda::time_ms(fn, 2, o.iters, true);
    rows.push_back(std::move(r));
  }
};

// Batch norm (+ LeakyReLU) at the conv2 activation shape on one of the library's paths (Rule: the
// default rows); the lab (dev/bn_lab) sweeps every candidate and launch configuration.
void bench_batchnorm(Bench& bench, bool fused, kernels::BnPath fwd, kernels::BnPath bwd, bool with_eval) {
  const KernelOptions& o = bench.o;
  auto time_both = [&](Row r, const std::function<void()>& fn) { bench.time_both(std::move(r), fn); };
  const kernels::BnActivation leaky{true, 0.2};
  const std::string suffix = fwd == kernels::BnPath::Rule ? "" : std::string(" ") + kernels::bn_path_name(fwd);
  const kernels::BnActivation act = fused ? leaky : kernels::BnActivation{};
  const Shape s{o.batch, 64, 32, 32};
  const int64_t C = 64, n = shape_numel(s), M = n / C;
  Tensor x = randn(s, 1), gy = randn(s, 2), gamma = randn({C}, 3, 0.5, 1.5), beta = randn({C}, 4);
  Tensor rm_c = Tensor::zeros({C}), rv_c = Tensor::full({C}, 1.0), y_c = Tensor::empty(s);
  Tensor m_c = Tensor::empty({C}), is_c = Tensor::empty({C});
  kernels::cpu::batchnorm_forward_train(x, gamma, beta, rm_c, rv_c, 0.1, 1e-5, act, y_c, m_c, is_c);
  Tensor xg = x.to(Device::CUDA), gyg = gy.to(Device::CUDA), gg = gamma.to(Device::CUDA), bg = beta.to(Device::CUDA);
  Tensor rm = Tensor::zeros({C}, DType::F32, Device::CUDA), rv = Tensor::full({C}, 1.0, DType::F32, Device::CUDA);
  Tensor y = Tensor::empty(s, DType::F32, Device::CUDA), m = Tensor::empty({C}, DType::F32, Device::CUDA),
         is = Tensor::empty({C}, DType::F32, Device::CUDA);
  const kernels::BnPath ran_fwd = kernels::batchnorm_forward_train_via(fwd, xg, gg, bg, rm, rv, 0.1, 1e-5, act, y, m, is);
  const int launches_f = kernels::bn_launches(ran_fwd);
  const std::string ran_f = kernels::bn_path_name(ran_fwd);
  const double check_f = std::max({worst(y, y_c, M), worst(m, m_c, M), worst(rv, rv_c, M)});
  const std::string tag = (fused ? "batchnorm+leaky" : "batchnorm");
  const std::string shape = fmt::format("{}x64x32x32", o.batch);
  time_both({tag + " forward (train)" + suffix, shape, launches_f, 2.0 * n * 4, check_f, 0, 0, ran_f},
            [&] { kernels::batchnorm_forward_train_via(fwd, xg, gg, bg, rm, rv, 0.1, 1e-5, act, y, m, is); });
  Tensor gx_c = Tensor::empty(s), ggam_c = Tensor::empty({C}), gbet_c = Tensor::empty({C});
  kernels::cpu::batchnorm_backward(x, gamma, beta, m_c, is_c, gy, act, true, &gx_c, ggam_c, gbet_c);
  Tensor gx = Tensor::empty(s, DType::F32, Device::CUDA), ggam = Tensor::empty({C}, DType::F32, Device::CUDA),
         gbet = Tensor::empty({C}, DType::F32, Device::CUDA);
  Tensor mc = m_c.to(Device::CUDA), isc = is_c.to(Device::CUDA);
  const kernels::BnPath ran_bwd = kernels::batchnorm_backward_via(bwd, xg, gg, bg, mc, isc, gyg, act, true, &gx, ggam, gbet);
  const int launches_b = kernels::bn_launches(ran_bwd);
  const std::string ran_b = kernels::bn_path_name(ran_bwd);
  const double check_b = std::max({worst(gx, gx_c, M), worst(ggam, ggam_c, M), worst(gbet, gbet_c, M)});
  const std::string bsuffix = bwd == kernels::BnPath::Rule ? "" : std::string(" ") + kernels::bn_path_name(bwd);
  time_both({tag + " backward" + bsuffix, shape, launches_b, 3.0 * n * 4, check_b, 0, 0, ran_b},
            [&] { kernels::batchnorm_backward_via(bwd, xg, gg, bg, mc, isc, gyg, act, true, &gx, ggam, gbet); });
  if (with_eval) {
    Tensor ye_c = Tensor::empty(s), ye = Tensor::empty(s, DType::F32, Device::CUDA);
    kernels::cpu::batchnorm_forward_eval(x, gamma, beta, m_c, rv_c, 1e-5, act, ye_c);
    Tensor rvc = rv_c.to(Device::CUDA);
    kernels::batchnorm_forward_eval(xg, gg, bg, mc, rvc, 1e-5, act, ye);
    time_both({tag + " forward (eval)" + suffix, shape, 1, 2.0 * n * 4, worst(ye, ye_c, 1), 0, 0},
              [&] { kernels::batchnorm_forward_eval(xg, gg, bg, mc, rvc, 1e-5, act, ye); });
  }
}

// The CAC head: distance + loss forward and backward (2 launches), at the classifier32 setting
// (K = 6) and TinyImageNet's (K = 20).
void bench_cac_head(Bench& bench) {
  const KernelOptions& o = bench.o;
  for (int K : {6, 20}) {
    const int64_t B = o.batch;
    Tensor z = randn({B, K}, 7), c = Tensor::zeros({K, K});
    {
      std::vector<float> eye(size_t(K) * K, 0.f);
      for (int i = 0; i < K; ++i) eye[size_t(i) * K + i] = 10.f;
      c = Tensor::from_vector(eye, {K, K});
    }
    Tensor y = labels(B, K, 8), gl = Tensor::full({}, 1.0);
    Tensor d_c = Tensor::empty({B, K}), out_c = Tensor::empty({3}), gz_c = Tensor::empty({B, K}), gc_c = Tensor::empty({K, K});
    kernels::cpu::cac_head_forward(z, c, y, 0.1, d_c, out_c);
    kernels::cpu::cac_head_backward(z, c, d_c, y, 0.1, gl, &gz_c, &gc_c);
    Tensor zg = z.to(Device::CUDA), cg = c.to(Device::CUDA), yg = y.to(Device::CUDA), glg = gl.to(Device::CUDA);
    Tensor d = Tensor::empty({B, K}, DType::F32, Device::CUDA), out = Tensor::empty({3}, DType::F32, Device::CUDA);
    Tensor gz = Tensor::empty({B, K}, DType::F32, Device::CUDA), gc = Tensor::empty({K, K}, DType::F32, Device::CUDA);
    kernels::cac_head_forward(zg, cg, yg, 0.1, d, out);
    kernels::cac_head_backward(zg, cg, d, yg, 0.1, glg, &gz, &gc);
    const double check = std::max({worst(d, d_c, K), worst(out, out_c, B), worst(gz, gz_c, K), worst(gc, gc_c, B)});
    bench.time_both({"cac head fwd+bwd (dist+CAC loss)", fmt::format("B={} K={}", B, K), 2, 0, check, 0, 0}, [&] {
      kernels::cac_head_forward(zg, cg, yg, 0.1, d, out);
      kernels::cac_head_backward(zg, cg, d, yg, 0.1, glg, &gz, &gc);
    });
  }

}

// Max over elements of |gpu - cpu| / (2^-7 |cpu| + 2^-12 max |cpu|) for bf16 outputs: one bf16 step of
// each value (the GPU's statistics differ from the twin's by float rounding, which can move a value
// across a rounding boundary), plus a floor for small differences of larger terms. <= 1 passes.
double worst_bf16(const Tensor& gpu, const Tensor& cpu) {
  const std::vector<double> a = gpu.to(DType::F64).to_vector<double>(), r = cpu.to(DType::F64).to_vector<double>();
  double largest = 0, w = 0;
  for (double v : r) largest = std::max(largest, std::abs(v));
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(a[i] - r[i]) / (std::ldexp(std::abs(r[i]), -7) + std::ldexp(largest, -12));
    w = std::max(w, std::isnan(e) ? 1e30 : e);
  }
  return w;
}

// Issue 25's batch norm + LeakyReLU on channels-last bf16 at the conv2 activation (128x32x32x64):
// checked against the CPU twin, then timed; bytes are one read of each input and one write of each
// output (2 bytes an element).
void bench_batchnorm_nhwc(Bench& bench) {
  const KernelOptions& o = bench.o;
  const int64_t C = 64;
  const Shape s{o.batch, 32, 32, C};
  const int64_t n = shape_numel(s), M = n / C;
  const kernels::BnActivation act{true, 0.2};
  const Tensor x = randn(s, 21).to(DType::BF16), gy = randn(s, 22).to(DType::BF16);
  const Tensor gamma = randn({C}, 23, 0.5, 1.5), beta = randn({C}, 24);
  Tensor rm_c = Tensor::zeros({C}), rv_c = Tensor::full({C}, 1.0), y_c = Tensor::empty(s, DType::BF16);
  Tensor m_c = Tensor::empty({C}), is_c = Tensor::empty({C});
  kernels::cpu::batchnorm_nhwc_forward_train(x, gamma, beta, rm_c, rv_c, 0.1, 1e-5, act, y_c, m_c, is_c);
  Tensor gx_c = Tensor::empty(s, DType::BF16), gg_c = Tensor::empty({C}), gb_c = Tensor::empty({C});
  kernels::cpu::batchnorm_nhwc_backward(x, gamma, beta, m_c, is_c, gy, act, gx_c, gg_c, gb_c);
  auto dev = [](const Tensor& t) { return t.to(Device::CUDA); };
  const Tensor xg = dev(x), gyg = dev(gy), gamg = dev(gamma), betg = dev(beta);
  Tensor rm = dev(Tensor::zeros({C})), rv = dev(Tensor::full({C}, 1.0)), y = Tensor::empty(s, DType::BF16, Device::CUDA);
  Tensor m = Tensor::empty({C}, DType::F32, Device::CUDA), is = Tensor::empty({C}, DType::F32, Device::CUDA);
  kernels::batchnorm_nhwc_forward_train(xg, gamg, betg, rm, rv, 0.1, 1e-5, act, y, m, is);
  const double check_f = std::max({worst_bf16(y, y_c), worst(m, m_c, M), worst(is, is_c, M), worst(rv, rv_c, M)});
  const std::string shape = fmt::format("{}x32x32x64", o.batch);
  bench.time_both({"bf16 nhwc batchnorm+leaky forward (train)", shape, 3, 2.0 * n * 2, check_f, 0, 0},
                  [&] { kernels::batchnorm_nhwc_forward_train(xg, gamg, betg, rm, rv, 0.1, 1e-5, act, y, m, is); });
  Tensor gx = Tensor::empty(s, DType::BF16, Device::CUDA), gg = Tensor::empty({C}, DType::F32, Device::CUDA),
         gb = Tensor::empty({C}, DType::F32, Device::CUDA);
  const Tensor mc = dev(m_c), isc = dev(is_c);  // the twin's statistics, so both backward passes see the same
  kernels::batchnorm_nhwc_backward(xg, gamg, betg, mc, isc, gyg, act, gx, gg, gb);
  const double check_b = std::max({worst_bf16(gx, gx_c), worst(gg, gg_c, M), worst(gb, gb_c, M)});
  bench.time_both({"bf16 nhwc batchnorm+leaky backward", shape, 3, 3.0 * n * 2, check_b, 0, 0},
                  [&] { kernels::batchnorm_nhwc_backward(xg, gamg, betg, mc, isc, gyg, act, gx, gg, gb); });
}

// LeakyReLU and Dropout2d at the conv2 shape; SGD over a classifier32-sized slab.
void bench_elementwise_and_sgd(Bench& bench) {
  const KernelOptions& o = bench.o;
  {
    const Shape s{o.batch, 64, 32, 32};
    const int64_t n = shape_numel(s);
    Tensor x = randn(s, 11), y_c = Tensor::empty(s), mask_c = Tensor::empty({s[0], s[1]});
    Tensor xg = x.to(Device::CUDA), y = Tensor::empty(s, DType::F32, Device::CUDA),
           mask = Tensor::empty({s[0], s[1]}, DType::F32, Device::CUDA);
    kernels::cpu::leaky_relu_forward(x, 0.2, y_c);
    kernels::leaky_relu_forward(xg, 0.2, y);
    bench.time_both({"leaky_relu forward", "128x64x32x32", 1, 2.0 * n * 4, worst(y, y_c, 1), 0, 0},
              [&] { kernels::leaky_relu_forward(xg, 0.2, y); });
    kernels::cpu::dropout2d_forward(x, 0.2, 5, 9, nullptr, y_c, mask_c);
    kernels::dropout2d_forward(xg, 0.2, 5, 9, nullptr, y, mask);
    bench.time_both({"dropout2d forward", "128x64x32x32", 1, 2.0 * n * 4, std::max(worst(y, y_c, 1), worst(mask, mask_c, 1)), 0, 0},
              [&] { kernels::dropout2d_forward(xg, 0.2, 5, 9, nullptr, y, mask); });
  }
  {
    const int64_t n = o.slab;
    Tensor p = randn({n}, 12), g = randn({n}, 13), b = randn({n}, 14);
    Tensor pg = p.to(Device::CUDA), gg = g.to(Device::CUDA), bg = b.to(Device::CUDA);
    const Tensor lr = Tensor::from_vector(std::vector<double>{0.01}, {}), lr_g = lr.to(Device::CUDA);
    kernels::cpu::sgd_step(p, g, b, lr, 0.9, 5e-4, nullptr);
    kernels::sgd_step(pg, gg, bg, lr_g, 0.9, 5e-4, nullptr);
    const double check = std::max(worst(pg, p, 1), worst(bg, b, 1));
    bench.time_both({"sgd step (whole slab, 1 launch)", fmt::format("{} params", n), 1, 5.0 * n * 4, check, 0, 0},
              [&] { kernels::sgd_step(pg, gg, bg, lr_g, 0.9, 5e-4, nullptr); });
  }
}

}  // namespace

int run_kernels(const KernelOptions& o) {
  std::string why;
  if (!cuda::device_available(&why)) {
    std::fprintf(stderr, "cac_bench kernels: no usable CUDA device: %s\n", why.c_str());
    return 2;
  }
  cuda::set_allow_tf32(false);
  std::printf("device: %s\n", cuda::device_description().c_str());
  const double copy_gbs = cuda::copy_bandwidth_gbs(size_t(1) << 30);
  std::printf("device-to-device copy: %.0f GB/s (1 GiB, read + write)\n", copy_gbs);
  Bench bench{o, {}};
  // The default (the library's rule), then each of the library's paths for comparison (a path that
  // cannot run here falls back and says so in the strategy column).
  using kernels::BnPath;
  for (bool fused : {false, true}) bench_batchnorm(bench, fused, BnPath::Rule, BnPath::Rule, fused);
  bench_batchnorm(bench, true, BnPath::Reread, BnPath::SingleLaunch, false);
  bench_batchnorm(bench, true, BnPath::Cluster, BnPath::SingleLaunch, false);
  bench_batchnorm(bench, true, BnPath::TwoPass, BnPath::TwoPass, false);
  bench_batchnorm(bench, true, BnPath::Flat, BnPath::Flat, false);
  bench_batchnorm_nhwc(bench);
  bench_cac_head(bench);
  bench_elementwise_and_sgd(bench);
  print(bench.rows, copy_gbs);
  print_targets(bench.rows, copy_gbs);
  print_bf16_targets(bench.rows, copy_gbs);
  for (const Row& r : bench.rows)
    if (r.check > 1) return 1;
  return 0;
}

}  // namespace cac::bench
