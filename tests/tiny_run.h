#pragma once
// The tiny MNIST run the app tests train (tests/fake_datasets.h: write_mnist_idx with 12 images
// per class): 48 training images, batch 16, one epoch per learning-rate stage, seed 5.
#include <string>

#include "apps/run.h"

namespace cac::testing {

inline app::RunConfig tiny_mnist_run(const std::string& data, const std::string& out, const std::string& device) {
  app::RunConfig c;
  c.dataset = "MNIST";
  c.data_dir = data;
  c.out = out;
  c.device = app::parse_device_choice(device);
  c.seed = 5;
  app::apply_dataset_defaults(c, false, false, false, false);
  c.epochs = {1, 1};
  c.batch = 16;
  c.train_limit = 48;
  c.workers = 2;
  return c;
}

}  // namespace cac::testing
