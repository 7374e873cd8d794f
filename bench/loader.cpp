// cac_bench loader: images/s the data loader delivers with the CIFAR10 training augmentation
// (random resized crop 0.8, flip 0.5, rotation 10 degrees) on synthetic CIFAR-shaped data, and with
// the MNIST augmentation on Fashion-MNIST when the Debian package is installed, for 1, 2 and all
// worker threads.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "bench/kernels.h"
#include "core/rng.h"
#include "data/benchmarks.h"
#include "data/loader.h"
#include "data/readers.h"

namespace cac::bench {

namespace {
double images_per_second(const data::Subset& s, const data::Augment& a, int workers, int batch) {
  data::Loader::Options o;
  o.batch = batch;
  o.workers = workers;
  o.prefetch = 2 * workers + 2;
  data::Loader loader(s, a, o);
  loader.start_epoch(0);
  data::Batch b;
  int64_t n = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (loader.next(&b)) n += b.labels.numel();
  return double(n) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run_set(const char* what, const data::ImageSet& set, const data::DatasetDefaults& d, int batch,
             int randaugment_n = 0, int randaugment_m = 0) {
  std::vector<int64_t> classes;
  for (int64_t c = 0; c < 10; ++c) classes.push_back(c);
  data::Subset all = data::select_classes(set, classes);
  data::Augment a = data::training_augment(d.image_size, d.crop_scale_min, d.flip_p, d.rotate_deg,
                                           data::compute_normalisation(all));
  a.randaugment_n = randaugment_n;
  a.randaugment_m = randaugment_m;
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> counts = {1, 2};
  if (cores > 2) counts.push_back(cores);
  for (int w : counts)
    std::printf("%-44s workers=%-3d %10.0f images/s\n", what, w, images_per_second(all, a, w, batch));
}
}  // namespace

int run_loader(const LoaderOptions& o) {
  std::printf("machine: %u hardware threads\n", std::thread::hardware_concurrency());
  {
    data::ImageSet s;
    s.name = "synthetic CIFAR";
    s.images = Tensor::empty({o.images, 32, 32, 3}, DType::U8);
    s.labels = Tensor::empty({o.images}, DType::I64);
    Generator g(1);
    uint8_t* px = s.images.data<uint8_t>();
    for (int64_t i = 0; i < s.images.numel(); ++i) px[i] = uint8_t(g.next_u64());
    for (int64_t i = 0; i < o.images; ++i) s.labels.data<int64_t>()[i] = i % 10;
    run_set("synthetic CIFAR-shaped, CIFAR10 augmentation", s, data::dataset_defaults("CIFAR10"), o.batch);
    run_set("  the same + RandAugment 2,9", s, data::dataset_defaults("CIFAR10"), o.batch, 2, 9);
  }
  const std::string fm = "/usr/share/datasets/fashion-mnist";
  if (std::filesystem::exists(fm)) {
    data::ImageSet train = data::read_mnist_dir(fm, true, "FashionMNIST");
    run_set("Fashion-MNIST train (60000), MNIST augmentation", train, data::dataset_defaults("FashionMNIST"), o.batch);
  } else {
    std::printf("Fashion-MNIST: %s not present, skipped\n", fm.c_str());
  }
  return 0;
}

}  // namespace cac::bench
