// cac_bench epoch: whole epochs of cac_train's loop on synthetic data of a benchmark's shape, and
// the wall time of the paper's protocol projected from them.
#include "bench/kernels.h"

#include <algorithm>
#include <cstdio>
#include <fmt/format.h>
#include <numeric>

#include "apps/run.h"
#include "apps/train.h"
#include "core/rng.h"
#include "data/benchmarks.h"

namespace cac::bench {

namespace {
// The shape of each trained benchmark of Table 1 (CIFAR+50 is evaluated with the CIFAR+10
// networks): known classes per trial, the training images of one class (SVHN: the mean of its
// uneven classes, 73,257 / 10) and the stored image size.
struct Shape {
  const char* name;
  int known, per_class, stored;
};
constexpr Shape kShapes[] = {
    {"MNIST", 6, 6000, 28},   {"FashionMNIST", 6, 6000, 28}, {"SVHN", 6, 7326, 32},
    {"CIFAR10", 6, 5000, 32}, {"CIFAR+10", 4, 5000, 32},     {"TinyImageNet", 20, 500, 64},
};
const Shape& shape_of(const std::string& name) {
  for (const Shape& s : kShapes)
    if (name == s.name) return s;
  fail("cac_bench epoch: no shape for '{}' (MNIST, FashionMNIST, SVHN, CIFAR10, CIFAR+10, TinyImageNet or all)", name);
}

// Random images of the benchmark's shape, split into training and validation as the protocol does.
data::OpenSetData synthetic(const Shape& s, double scale, uint64_t seed) {
  const data::DatasetDefaults def = data::dataset_defaults(s.name);
  const int64_t n = std::max<int64_t>(s.known * 2, int64_t(double(s.known) * s.per_class * scale));
  auto set = std::make_shared<data::ImageSet>();
  set->name = std::string("synthetic ") + s.name;
  set->images = Tensor::empty({n, s.stored, s.stored, def.channels}, DType::U8);
  set->labels = Tensor::empty({n}, DType::I64);
  Generator g(seed);
  uint8_t* px = set->images.data<uint8_t>();
  for (int64_t i = 0; i < set->images.numel(); ++i) px[i] = uint8_t(g.next_u64());
  data::OpenSetData d;
  d.benchmark = s.name;
  d.defaults = def;
  for (int k = 0; k < s.known; ++k) d.classes.known.push_back(k);
  const int64_t n_val = int64_t(double(n) * def.val_fraction);
  for (int64_t i = 0; i < n; ++i) {
    set->labels.data<int64_t>()[i] = i % s.known;
    data::Subset& part = i < n_val ? d.val : d.train;
    part.source = set.get();
    part.indices.push_back(i);
    part.labels.push_back(i % s.known);
  }
  d.norm.mean.assign(size_t(def.channels), 0.5f);
  d.norm.std.assign(size_t(def.channels), 0.25f);
  d.storage.push_back(set);
  return d;
}

// Seconds of one steady epoch (training + validation) of `name`, after printing every epoch.
double time_benchmark(const EpochOptions& o, const std::string& name) {
  const Shape& s = shape_of(name);
  app::RunConfig c;
  c.dataset = s.name;
  c.device = app::parse_device_choice(o.device);
  c.workers = o.workers;
  c.seed = 1;
  app::apply_dataset_defaults(c, false, false, false, false);
  c.epochs = {o.epochs};
  c.lrs = {c.lrs.front()};
  const data::OpenSetData d = synthetic(s, o.scale, 7);
  const std::vector<app::EpochTiming> t = app::time_epochs(c, d, o.epochs);
  for (size_t e = 0; e < t.size(); ++e)
    std::printf("%-13s epoch %zu: train %7.2f s (%8.0f images/s, %lld images)  validation %6.2f s (%lld images)\n",
                s.name, e + 1, t[e].train_s, double(t[e].train_images) / t[e].train_s,
                static_cast<long long>(t[e].train_images), t[e].val_s, static_cast<long long>(t[e].val_images));
  // The first epoch measures convolution algorithms and warms caches: the steady ones project.
  const size_t from = t.size() > 1 ? 1 : 0;
  double sum = 0;
  for (size_t e = from; e < t.size(); ++e) sum += t[e].train_s + t[e].val_s;
  return sum / double(t.size() - from) / o.scale;
}
}  // namespace

int run_epoch(const EpochOptions& o) {
  std::vector<std::string> names;
  if (o.dataset == "all") {
    for (const Shape& s : kShapes)
      if (std::string(s.name) != "FashionMNIST") names.push_back(s.name);  // Table 1's trained five
  } else {
    names.push_back(o.dataset);
  }
  double total = 0;
  std::printf("projected: the paper's protocol, 5 trials x {CAC, CE} at configs/datasets.json's epochs, one run at a "
              "time%s\n", o.scale < 1 ? fmt::format(" (from {:g} of each training set, scaled up)", o.scale).c_str() : "");
  for (const std::string& name : names) {
    const double epoch_s = time_benchmark(o, name);
    const std::vector<int> stages = data::dataset_defaults(name).cac_epochs;
    const int epochs = std::accumulate(stages.begin(), stages.end(), 0);
    const double run_s = epoch_s * epochs;
    total += 10 * run_s;
    std::printf("%-13s %.2f s per epoch x %d epochs = %.1f min per run; 10 runs %.1f min\n", name.c_str(), epoch_s,
                epochs, run_s / 60, 10 * run_s / 60);
  }
  if (names.size() > 1) std::printf("all: %.1f min (%.2f h)\n", total / 60, total / 3600);
  return 0;
}

}  // namespace cac::bench
