// cac_train: trains an open-set classifier with Class Anchor Clustering (or the CE baseline, or
// learnt centres) under the paper's protocol. `cac_train --help` lists every flag and default.
#include <CLI/CLI.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <type_traits>

#include "apps/device_option.h"
#include "core/build_info.h"
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
// "a,b,c" -> values, each parsed whole into a wide type and checked by `ok` before it is narrowed
// to T (a huge integer must not wrap around); `range` says in words what `ok` accepts.
template <class T, class Ok>
std::vector<T> parse_list(const char* flag, const std::string& text, const char* example, const char* range, Ok ok) {
  using Wide = std::conditional_t<std::is_integral_v<T>, long long, double>;
  std::vector<T> out;
  for (const auto& s : split_commas(text)) {
    Wide v{};
    try {
      size_t used = 0;
      if constexpr (std::is_integral_v<T>) v = std::stoll(s, &used);
      else v = std::stod(s, &used);
      if (used != s.size()) throw std::invalid_argument(s);
    } catch (const std::exception&) {
      fail("{}: '{}' is not a valid value (expected e.g. {})", flag, s, example);
    }
    CAC_CHECK(ok(v), "{}: {} is outside {}", flag, s, range);
    out.push_back(T(v));
  }
  return out;
}

// A CLI11 check in words: `ok` of the parsed number, else "<what> (got <text>)".
template <class Ok>
CLI::Validator number_check(const std::string& what, Ok ok) {
  return CLI::Validator(
      [what, ok](std::string& text) -> std::string {
        double v = 0;
        try {
          size_t used = 0;
          v = std::stod(text, &used);
          if (used != text.size()) throw std::invalid_argument(text);
        } catch (const std::exception&) {
          return what + " (got '" + text + "', not a number)";
        }
        return ok(v) ? std::string() : what + " (got " + text + ")";
      },
      what);
}

// --seed: a whole number that fits 64 bits unsigned (CLI11 would wrap -1 to 2^64 - 1).
CLI::Validator seed_check() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (text.empty() || ec != std::errc() || end != text.data() + text.size())
          return "'" + text + "' is not a whole number from 0 to 18446744073709551615";
        return "";
      },
      "0 to 2^64-1");
}

// The flags beyond the run's settings, and the options whose use the code asks about.
struct Flags {
  std::string epochs, lrs, resume, config_file, method = "cac", arch, device = "auto", stage2 = "reload", split_set = "current";
  std::string lr_schedule = "step", randaugment, data_on_device = "auto", graph = "auto", precision = "tf32";
  int stop_after = 0;
  bool print_config = false, force_train = false, overwrite = false;
  CLI::Option *dd = nullptr, *me = nullptr, *ar = nullptr, *ep = nullptr, *lr = nullptr, *dv = nullptr, *wk = nullptr,
              *s2 = nullptr, *ss = nullptr, *ls = nullptr, *ra = nullptr, *dd_dev = nullptr,
              *gr = nullptr, *pr = nullptr;
};

// The strong-baseline recipe (Vaze et al. 2022): off by default, so a run follows the CAC protocol.
void add_recipe_flags(CLI::App& app, app::RunConfig& c, Flags& f) {
  f.ls = app.add_option("--lr-schedule", f.lr_schedule, "step (each --epochs stage at its --lr: the protocol) or cosine "
                         "(one schedule over the total of --epochs from the first --lr: linear warm-up, then cosine "
                         "annealing to lr/1000, restarting --restarts times)")
             ->check(CLI::IsMember({"step", "cosine"}))->capture_default_str();
  app.add_option("--warmup-epochs", c.warmup_epochs, "cosine: epochs of linear warm-up (lr (e+1)/N of the base)")
      ->check(CLI::Range(0, 100000));
  app.add_option("--restarts", c.restarts, "cosine: warm restarts (the epochs after warm-up split into restarts + 1 cycles)")
      ->check(CLI::Range(0, 1000));
  app.add_option("--label-smoothing", c.label_smoothing, "CE baseline: train against (1 - EPS) onehot + EPS / K")
      ->check(number_check("label smoothing must be in [0, 1)", [](double v) { return v >= 0 && v < 1; }));
  f.ra = app.add_option("--randaugment", f.randaugment, "N,M: RandAugment on the training images, N operations of 14 "
                         "(torchvision's) at magnitude M of 0-30, e.g. 2,9");
}

void add_flags(CLI::App& app, app::RunConfig& c, Flags& f) {
  app.add_option("--dataset", c.dataset, "MNIST, FashionMNIST, SVHN, CIFAR10, CIFAR+10, CIFAR+50, TinyImageNet, CIFAR10-FP "
                 "(all ten classes known; unknowns SVHN test + nine CIFAR-100 superclasses), or ImageFolder "
                 "(your own data: DIR/train/<class>/*.{jpg,png}, DIR/test/<class>/*.{jpg,png}, with --split)")
      ->check(CLI::IsMember(data::benchmark_names()))->capture_default_str();
  app.add_option("--trial", c.trial, "standard known/unknown trial 0-4")->check(CLI::Range(0, 4))->capture_default_str();
  app.add_option("--split", c.split_json, "a JSON file {\"known\": [...], \"unknown\": [...]} instead of the standard trial "
                 "(class indices; for ImageFolder also sub-folder names)")->check(CLI::ExistingFile);
  app.add_option("--image-size", c.image_size, "resize images to this size (default: the dataset's; "
                             "classifier32 takes 32 or 64)")->check(CLI::Range(8, 1024));
  f.dd = app.add_option("--data-dir", c.data_dir, "folder with the dataset's files")->check(CLI::ExistingDirectory);
  f.me = app.add_option("--method", f.method, "cac (anchored), ce (cross-entropy baseline) or cac-learnt (learnt centres + CE)")
      ->check(CLI::IsMember({"cac", "ce", "cac-learnt"}))->capture_default_str();
  f.ar = app.add_option("--arch", f.arch, "network: classifier32 or resnet18 (default: the dataset's; resnet18 for CIFAR10-FP)")
      ->check(CLI::IsMember({"classifier32", "resnet18"}));
  app.add_option("--alpha", c.alpha, "anchor magnitude: c_i = alpha * e_i")->check(number_check("alpha must be > 0", [](double v) { return v > 0 && std::isfinite(v); }))->capture_default_str();
  app.add_option("--lambda", c.lambda, "weight of the anchor loss")
      ->check(number_check("lambda must be >= 0", [](double v) { return v >= 0 && std::isfinite(v); }))->capture_default_str();
  f.ep = app.add_option("--epochs", f.epochs, "epochs per learning-rate stage, e.g. 35,35 (default: the dataset's)");
  f.lr = app.add_option("--lr", f.lrs, "learning rate per stage, e.g. 0.01,0.001 (default: the dataset's)");
  app.add_option("--batch", c.batch, "batch size (default: the dataset's)")->check(CLI::Range(1, 65536));
  app.add_option("--weight-decay", c.weight_decay, "SGD weight decay (default: the dataset's)")->check(CLI::NonNegativeNumber);
  f.dv = app.add_option("--device", f.device, "auto (GPU if present), cpu or cuda")->check(cac::app::device_choice())->capture_default_str();
  app.add_option("--seed", c.seed, "seed of initialisation, splits, data order and augmentation")
      ->check(seed_check())->capture_default_str();
  app.add_option("--out", c.out, "run folder to create (config.json, metrics.csv, checkpoints); a folder that already "
                 "holds a run is refused (see --resume, --overwrite)");
  app.add_flag("--overwrite", f.overwrite, "train into --out even though it holds a run: that run's checkpoints, "
               "metrics, logs, deploy.json and evaluation files are deleted first");
  app.add_option("--resume", f.resume, "continue the run in this folder at its next epoch, with its settings (config.json); --data-dir, "
                 "--device and --workers may change")->check(CLI::ExistingDirectory);
  app.add_option("--train-limit", c.train_limit, "use a seeded subset of this many training images (0 = all)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  f.wk = app.add_option("--workers", c.workers, "data loader threads (0 = all cores)")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--init", c.init, "start from the model weights in this safetensors file (a run's best.safetensors, or "
                 "PyTorch weights converted by scripts/torch_interop.py); with --epochs 0 the run holds them as they are, "
                 "for cac_eval")->check(CLI::ExistingFile);
  f.ss = app.add_option("--split-set", f.split_set, "which table of standard trials: current, or 2020 (the CAC "
                         "authors' splits before November 2021, which their released weights were trained on; "
                         "configs/splits-2020.json)")->check(CLI::IsMember({"current", "2020"}))->capture_default_str();
  f.s2 = app.add_option("--stage2", f.stage2, "what each later learning-rate stage starts from: reload (the best "
                         "checkpoint so far, fresh momentum, the kept checkpoint is the best of that stage: the CAC "
                         "authors' release) or continue (the last epoch, momentum kept, best over all stages)")
              ->check(CLI::IsMember({"reload", "continue"}))->capture_default_str();
  add_recipe_flags(app, c, f);
  f.dd_dev = app.add_option("--data-on-device", f.data_on_device, "auto: a GPU run holds its training images on the "
                             "GPU and augments each batch there (where they take at most a quarter of its free "
                             "memory and RandAugment is off); off: the host loader threads")
                 ->check(CLI::IsMember({"auto", "off"}))->capture_default_str();
  f.gr = app.add_option("--graph", f.graph, "auto: a GPU run records its training step and validation forward into "
                        "CUDA graphs after two eager batches and replays them (train.log says so, or why not); off: "
                        "every step eagerly")
             ->check(CLI::IsMember({"auto", "off"}))->capture_default_str();
  f.pr = app.add_option("--precision", f.precision, "fp32, tf32 (TF32 tensor-core convolutions on a GPU, as PyTorch) "
                        "or bf16 (the convolution stack on bf16 channels-last activations; float32 master weights, "
                        "statistics, head and checkpoints)")
             ->check(CLI::IsMember({"fp32", "tf32", "bf16"}))->capture_default_str();
  app.add_option("--stop-after", f.stop_after, "stop after this many epochs (resumable, as an interruption)")->check(CLI::NonNegativeNumber);
  auto* cf = app.add_option("--config", f.config_file, "settings from a JSON file: a run's config.json (to repeat or vary "
                            "that run) or any part of one, e.g. {\"dropout\": 0.3, \"rotate_deg\": 10}; it overrides "
                            "the dataset's defaults, the flags given here override it; its \"out\" is not used, and "
                            "relative paths in it are relative to its folder")->check(CLI::ExistingFile);
  app.add_flag("--skip-bad-images", c.skip_bad_images, "ImageFolder: leave out images that cannot be read, and say how "
               "many (default: stop at the first, naming it)");
  app.add_flag("--force-train", f.force_train, "train a CIFAR+50 network of its own (the protocol evaluates the CIFAR+10 "
               "networks against the CIFAR+50 unknowns instead: cac_eval --benchmark CIFAR+50)");
  app.add_flag("--print-config", f.print_config, "print the settings the run would use (its config.json) and exit without training");
  cf->excludes("--resume");
}

// A new run's settings: built-in defaults < the dataset's < a --config file < the flags given.
void merge_new_run_settings(CLI::App& app, app::RunConfig& c, const Flags& f) {
  namespace fs = std::filesystem;
  // A run's config.json names its own folder.
  // The fields set on the command line: the config file does not override them.
  std::set<std::string> keep = {"out"};
  for (const auto& [flag, field] : app::run_config_flags())
    if (app.get_option(flag)->count() > 0) keep.insert(field);
  if (f.me->count() > 0) c.method = parse_method(f.method);
  if (f.ar->count() > 0) c.arch = parse_arch(f.arch);
  if (f.dv->count() > 0) c.device = app::parse_device_choice(f.device);
  if (f.s2->count() > 0) c.stage2 = app::parse_stage2(f.stage2);
  if (f.ss->count() > 0) c.split_set = data::parse_split_set(f.split_set);
  if (f.ls->count() > 0) c.lr_schedule = app::parse_lr_shape(f.lr_schedule);
  if (f.dd_dev->count() > 0) c.data_on_device = app::parse_data_on_device(f.data_on_device);
  if (f.gr->count() > 0) c.graph = app::parse_graph_use(f.graph);
  if (f.pr->count() > 0) c.precision = app::parse_precision(f.precision);
  if (f.ra->count() > 0) {
    c.randaugment = parse_list<int>("--randaugment", f.randaugment, "2,9", "N 1-14 then M 0-30",
                                    [](long long v) { return v >= 0 && v <= 30; });
    CAC_CHECK(c.randaugment.size() == 2 && c.randaugment[0] >= 1 && c.randaugment[0] <= 14,
              "--randaugment {}: give N,M: N operations (1-14) at magnitude M (0-30), e.g. 2,9", f.randaugment);
  }
  const std::string config_text = f.config_file.empty() ? "" : app::read_text(f.config_file);
  std::set<std::string> from_file;
  // Twice: first for what decides the dataset's defaults (dataset, method, arch, the lists),
  // then again over those defaults, which would otherwise replace the file's dropout,
  // augmentation and so on.
  auto overlay = [&] {
    if (f.config_file.empty()) return;
    for (const auto& key : c.overlay_json(config_text, f.config_file, keep)) from_file.insert(key);
  };
  overlay();
  auto given = [&](const char* field) { return keep.count(field) > 0 || from_file.count(field) > 0; };
  if (f.ep->count() > 0)
    c.epochs = parse_list<int>("--epochs", f.epochs, "35,35", "0-100000", [](long long v) { return v >= 0 && v <= 100000; });
  if (f.lr->count() > 0)
    c.lrs = parse_list<double>("--lr", f.lrs, "0.01,0.001", "the positive finite numbers",
                               [](double v) { return v > 0 && std::isfinite(v); });
  app::apply_dataset_defaults(c, given("epochs"), given("lrs"), given("batch"), given("weight_decay"),
              given("image_size"));
  overlay();
  // Channels follow from the dataset: a file may repeat them, not change them.
  const int dataset_channels = data::dataset_defaults(c.dataset).channels;
  CAC_CHECK(!from_file.count("channels") || c.channels == dataset_channels,
        "{}: channels {} does not match {}'s images ({} channels); remove it from the file", f.config_file,
        c.channels, c.dataset, dataset_channels);
  // Relative paths in the file are relative to the file; config.json records absolute paths,
  // so cac_eval and --resume work from any folder.
  const fs::path config_dir = f.config_file.empty() ? fs::path() : fs::absolute(f.config_file).parent_path();
  auto absolute = [&](std::string& path, const char* field) {
    if (path.empty()) return;
    fs::path p(path);
    if (p.is_relative() && from_file.count(field)) p = config_dir / p;  // (flags are never in from_file)
    path = fs::absolute(p).lexically_normal().string();
  };
  absolute(c.data_dir, "data_dir");
  absolute(c.split_json, "split_json");
  absolute(c.init, "init");
  c.check(f.config_file.empty() ? std::string("cac_train") : f.config_file + " (with the flags given)");
}

// --resume with --print-config: the settings as resuming would record them.
int print_resumed_config(const app::RunConfig& c, const Flags& f) {
  const std::string where = f.resume + "/config.json";
  app::RunConfig r = app::RunConfig::from_json(app::read_text(where, " (is this a cac_train run folder?)"), where);
  if (f.dd->count() > 0) r.data_dir = std::filesystem::absolute(c.data_dir).lexically_normal().string();
  if (f.dv->count() > 0) r.device = app::parse_device_choice(f.device);
  if (f.wk->count() > 0) r.workers = c.workers;
  std::fputs(r.to_json().c_str(), stdout);
  return 0;
}

// A resumed run keeps its settings (config.json); only where the data is and what runs it may change.
void check_resume_flags(const CLI::App& app, const std::string& resume) {
  const std::set<std::string> allowed = {"--resume", "--stop-after", "--print-config", "--data-dir", "--device", "--workers"};
  for (const CLI::Option* opt : app.get_options())
    if (opt->count() > 0 && !allowed.count(opt->get_name()))
      fail("{} cannot be changed when resuming: --resume continues the run as {}/config.json describes it (with it "
           "only --data-dir, --device, --workers and --stop-after). For a new run from its settings: cac_train "
           "--config {}/config.json {} ... --out NEW_RUN", opt->get_name(), resume, resume, opt->get_name());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cac_train: train a Class Anchor Clustering open-set classifier (classifier32 or ResNet-18)"};
  app.set_version_flag("--version", [] { return cac::engine_version(); }, "the engine's version, source revision and libraries");
  app.footer("Protocol defaults per dataset come from configs/datasets.json (see docs/reproduce.md).\n"
             "Example: cac_train --dataset FashionMNIST --trial 0 --data-dir /usr/share/datasets/fashion-mnist --out runs/fm0");
  app::RunConfig c;
  Flags f;
  add_flags(app, c, f);
  CLI11_PARSE(app, argc, argv);
  try {
    if (f.resume.empty()) {
      merge_new_run_settings(app, c, f);
      if (f.print_config) {
        c.checkpoint_by = c.checkpoint_criterion();
        std::fputs(c.to_json().c_str(), stdout);
        return 0;
      }
      CAC_CHECK(c.dataset != "CIFAR+50" || f.force_train,
                "CIFAR+50 is not trained on its own in the CAC protocol: its results are the CIFAR+10 networks of the "
                "same trials (the same four known classes) evaluated against the 50 unknown classes. Train CIFAR+10 "
                "(cac_train --dataset CIFAR+10 --trial {}) and evaluate with cac_eval --run RUN --benchmark CIFAR+50, or "
                "run scripts/benchmark.sh CIFAR+50 DATA_DIR OUT_DIR, which does both; --force-train trains a separate "
                "CIFAR+50 network anyway", c.trial);
      CAC_CHECK(!c.data_dir.empty(), "--data-dir is required (the folder with the dataset's files)");
      CAC_CHECK(!c.out.empty(), "--out is required (the run folder to create)");
    } else {
      check_resume_flags(app, f.resume);
      if (f.print_config) return print_resumed_config(c, f);
    }
    app::ResumeOverrides changes;
    if (!f.resume.empty()) {
      if (f.dd->count() > 0) changes.data_dir = c.data_dir;
      if (f.dv->count() > 0) changes.device = f.device;
      if (f.wk->count() > 0) changes.workers = c.workers;
    }
    return app::run_train(c, f.resume, f.stop_after, changes,
                          f.overwrite ? app::ExistingRun::Overwrite : app::ExistingRun::Refuse);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cac_train: error: %s\n", e.what());
    return 1;
  }
}
