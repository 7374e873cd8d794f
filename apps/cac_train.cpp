// cac_train: trains an open-set classifier with Class Anchor Clustering (or the CE baseline, or
// learnt centres) under the paper's protocol. `cac_train --help` lists every flag and default.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <type_traits>

#include "apps/train.h"
#include "data/benchmarks.h"

using namespace cac;

namespace {
std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == ',') {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  return out;
}
// "a,b,c" -> values, each checked by `ok`; the error names the flag and an example.
template <class T, class Ok>
std::vector<T> parse_list(const char* flag, const std::string& text, const char* example, Ok ok) {
  std::vector<T> out;
  for (const auto& s : split_commas(text)) {
    T v{};
    try {
      size_t used = 0;
      v = std::is_integral_v<T> ? T(std::stoll(s, &used)) : T(std::stod(s, &used));
      if (used != s.size()) throw std::invalid_argument(s);
    } catch (const std::exception&) {
      fail("{}: '{}' is not a valid value (expected e.g. {})", flag, s, example);
    }
    CAC_CHECK(ok(v), "{}: {} is out of range", flag, s);
    out.push_back(v);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cac_train: train a Class Anchor Clustering open-set classifier (classifier32 or ResNet-18)"};
  app.footer("Protocol defaults per dataset come from configs/datasets.json (see docs/reproduce.md).\n"
             "Example: cac_train --dataset FashionMNIST --trial 0 --data-dir /usr/share/datasets/fashion-mnist --out runs/fm0");
  app::RunConfig c;
  std::string epochs, lrs, resume;
  int stop_after = 0;
  app.add_option("--dataset", c.dataset, "MNIST, FashionMNIST, SVHN, CIFAR10, CIFAR+10, CIFAR+50, TinyImageNet, CIFAR10-FP "
                 "(all ten classes known; unknowns SVHN test + nine CIFAR-100 superclasses), or ImageFolder "
                 "(your own data: DIR/train/<class>/*.{jpg,png}, DIR/test/<class>/*.{jpg,png}, with --split)")
      ->check(CLI::IsMember(data::benchmark_names()))->capture_default_str();
  app.add_option("--trial", c.trial, "standard known/unknown trial 0-4")->check(CLI::Range(0, 4))->capture_default_str();
  app.add_option("--split", c.split_json, "a JSON file {\"known\": [...], \"unknown\": [...]} instead of the standard trial "
                 "(class indices; for ImageFolder also sub-folder names)")->check(CLI::ExistingFile);
  auto* isz = app.add_option("--image-size", c.image_size, "resize images to this size (default: the dataset's; "
                             "classifier32 takes 32 or 64)")->check(CLI::Range(8, 1024));
  app.add_option("--data-dir", c.data_dir, "folder with the dataset's files")->check(CLI::ExistingDirectory);
  app.add_option("--method", c.method, "cac (anchored), ce (cross-entropy baseline) or cac-learnt (learnt centres + CE)")
      ->check(CLI::IsMember({"cac", "ce", "cac-learnt"}))->capture_default_str();
  app.add_option("--arch", c.arch, "network: classifier32 or resnet18 (default: the dataset's; resnet18 for CIFAR10-FP)")
      ->check(CLI::IsMember({"classifier32", "resnet18"}));
  app.add_option("--alpha", c.alpha, "anchor magnitude: c_i = alpha * e_i")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--lambda", c.lambda, "weight of the anchor loss")->check(CLI::NonNegativeNumber)->capture_default_str();
  auto* ep = app.add_option("--epochs", epochs, "epochs per learning-rate stage, e.g. 35,35 (default: the dataset's)");
  auto* lr = app.add_option("--lr", lrs, "learning rate per stage, e.g. 0.01,0.001 (default: the dataset's)");
  auto* bs = app.add_option("--batch", c.batch, "batch size (default: the dataset's)")->check(CLI::Range(1, 65536));
  auto* wd = app.add_option("--weight-decay", c.weight_decay, "SGD weight decay (default: the dataset's)")->check(CLI::NonNegativeNumber);
  app.add_option("--device", c.device, "auto (GPU if present), cpu or cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}))->capture_default_str();
  app.add_option("--seed", c.seed, "seed of initialisation, splits, data order and augmentation")->capture_default_str();
  app.add_option("--out", c.out, "run folder to create (config.json, metrics.csv, checkpoints)");
  app.add_option("--resume", resume, "continue the run in this folder at its next epoch")->check(CLI::ExistingDirectory);
  app.add_option("--train-limit", c.train_limit, "use a seeded subset of this many training images (0 = all)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--workers", c.workers, "data loader threads (0 = all cores)")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--init", c.init, "start from the model weights in this safetensors file (a run's best.safetensors, or "
                 "PyTorch weights converted by scripts/torch_interop.py); with --epochs 0 the run holds them as they are, "
                 "for cac_eval")->check(CLI::ExistingFile);
  app.add_option("--stop-after", stop_after, "stop after this many epochs (resumable, as an interruption)")->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    if (resume.empty()) {
      CAC_CHECK(!c.data_dir.empty(), "--data-dir is required (the folder with the dataset's files)");
      CAC_CHECK(!c.out.empty(), "--out is required (the run folder to create)");
      // config.json records absolute paths, so cac_eval and --resume work from any folder.
      c.data_dir = std::filesystem::absolute(c.data_dir).lexically_normal().string();
      if (!c.split_json.empty()) c.split_json = std::filesystem::absolute(c.split_json).lexically_normal().string();
      if (!c.init.empty()) c.init = std::filesystem::absolute(c.init).lexically_normal().string();
      const bool epochs_set = ep->count() > 0, lrs_set = lr->count() > 0;
      if (epochs_set) c.epochs = parse_list<int>("--epochs", epochs, "35,35", [](int v) { return v >= 0; });
      if (lrs_set) c.lrs = parse_list<double>("--lr", lrs, "0.01,0.001", [](double v) { return v > 0; });
      app::apply_dataset_defaults(c, epochs_set, lrs_set, bs->count() > 0, wd->count() > 0, isz->count() > 0);
    }
    return app::run_train(c, resume, stop_after);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cac_train: error: %s\n", e.what());
    return 1;
  }
}
