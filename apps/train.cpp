#include "apps/train.h"

#include "core/build_info.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <fmt/ranges.h>
#include <optional>
#include <sstream>

#include "apps/device_batches.h"
#include "apps/run_folder.h"
#include "core/stop.h"
#include "data/loader.h"
#include "data/openset.h"
#include "models/checkpoint.h"

namespace fs = std::filesystem;

namespace cac::app {

namespace {
// Everything a bit-identical resume needs: the model's tensors, the optimizer's momentum and the
// model's resume state (the dropout counters, as "resume.<module>.calls").
NamedTensorList checkpoint_tensors(OpenSetClassifier& model, Trainer& trainer) {
  NamedTensorList t = model.state_dict();
  if (trainer.optimizer().momentum_buffer().defined())
    t.push_back({"optimizer.momentum_buffer", trainer.optimizer().momentum_buffer()});
  for (auto& kv : model.resume_state("resume.")) t.push_back(std::move(kv));
  return t;
}
// A number that fills all of `text` (std::stoi would accept "12abc" and throw a message naming no file).
template <class T>
T parse_whole(const std::string& text, const std::string& path, const char* field) {
  T v{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  CAC_CHECK(ec == std::errc() && end == text.data() + text.size() && !text.empty(),
            "{}: corrupt checkpoint bookkeeping ({} is '{}')", path, field, text);
  return v;
}
// The bookkeeping cac_train writes into last.safetensors' metadata; a missing field means the file is
// not one of its resume checkpoints.
const std::string& resume_field(const Safetensors& st, const char* field, const std::string& path) {
  const auto it = st.metadata.find(field);
  CAC_CHECK(it != st.metadata.end(), "{}: no '{}' in the metadata: not a cac_train resume checkpoint (last.safetensors)",
            path, field);
  return it->second;
}
template <class T>
T resume_number(const Safetensors& st, const char* field, const std::string& path) {
  return parse_whole<T>(resume_field(st, field, path), path, field);
}

// Restores what checkpoint_tensors saved. Checkpoints written before the counters were tensors
// keep them in the metadata field "dropout_calls" (comma-separated, in module order).
void restore_checkpoint(const Safetensors& st, OpenSetClassifier& model, Trainer& trainer, const std::string& path) {
  const NamedTensorList counters = model.resume_state("resume.");
  if (counters.empty() || st.tensors.count(counters.front().first)) {
    restore_tensors(st, checkpoint_tensors(model, trainer), path);
    return;
  }
  NamedTensorList tensors = checkpoint_tensors(model, trainer);
  tensors.resize(tensors.size() - counters.size());
  restore_tensors(st, tensors, path);
  std::istringstream in(resume_field(st, "dropout_calls", path));
  for (auto [name, counter] : counters) {  // a copy of the handle: the same storage
    std::string v;
    CAC_CHECK(std::getline(in, v, ','), "{}: dropout counters missing for {}", path, name);
    counter.data<int64_t>()[0] = int64_t(parse_whole<uint64_t>(v, path, "dropout_calls"));
  }
}

// RUN_DIR/train.log: every line cac_train prints except the in-epoch progress redraws, appended (a
// resumed run continues the same log), flushed per line so an interrupted run keeps its record.
class RunLog {
 public:
  explicit RunLog(const std::string& path) : f_(std::fopen(path.c_str(), "a")) {
    CAC_CHECK(f_ != nullptr, "{}: cannot write the run log", path);
  }
  ~RunLog() { std::fclose(f_); }
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;
  // Prints `text` (one or more whole lines) to `to` and appends it to the log.
  void write(const std::string& text, FILE* to = stdout) {
    std::fputs(text.c_str(), to);
    std::fflush(to);
    std::fputs(text.c_str(), f_);
    std::fflush(f_);
  }
  void append_only(const std::string& text) {
    std::fputs(text.c_str(), f_);
    std::fflush(f_);
  }

 private:
  FILE* f_;
};

// One line of progress: a carriage-return bar on a terminal, plain lines otherwise.
class Progress {
 public:
  Progress(int epoch, int epochs, int64_t batches, bool ce, RunLog& log)
      : epoch_(epoch), epochs_(epochs), batches_(batches), tty_(isatty(1)), ce_(ce), log_(log) {
    t0_ = std::chrono::steady_clock::now();
  }
  // Whether a progress line is due: a terminal redraws 4 times a second, a log gets a line every
  // 10 s. Checked before reading the totals, which costs a device synchronisation.
  bool due() const { return elapsed() - last_print_ >= (tty_ ? 0.25 : 10.0); }
  void update(int64_t done, int64_t images, const StepTotals::Means& m, bool final) {
    const double secs = elapsed();
    last_print_ = secs;
    const double eta = done > 0 ? secs / double(done) * double(batches_ - done) : 0;
    const std::string bar = progress_bar(done, batches_);
    const std::string parts = ce_ ? "" : fmt::format(" (tuplet {:.4f} anchor {:.4f})", m.tuplet, m.anchor);
    const std::string line = fmt::format("epoch {:3d}/{} [{}] {:5d}/{}  {:7.0f} img/s  loss {:.4f}{}  acc {:5.1f}%  eta {:4.0f}s",
                                         epoch_ + 1, epochs_, bar, done, batches_, double(images) / std::max(secs, 1e-9),
                                         m.loss, parts, 100 * m.accuracy, eta);
    std::printf("%s%s%s", tty_ ? "\r" : "", line.c_str(), tty_ && !final ? "" : "\n");
    std::fflush(stdout);
    if (final) log_.append_only(line + "\n");  // the log keeps each epoch's closing line
  }

 private:
  int epoch_, epochs_;
  int64_t batches_;
  bool tty_, ce_;
  RunLog& log_;
  double last_print_ = -1e9;
  std::chrono::steady_clock::time_point t0_;
  double elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }
};

// Where a resumed run stands: its checkpoint and bookkeeping, and what the flags changed.
struct ResumePoint {
  int start_epoch = 0;
  std::optional<double> best;  // unset: nothing kept yet
  int weights_from = 0;  // the epoch whose weights the current stage started from
  Safetensors state;
  std::string path, changes;
};

// Reads RUN/config.json (with the changes --resume allows) and RUN/last.safetensors.
ResumePoint load_resume_point(RunConfig& cfg, const std::string& dir, const ResumeOverrides& o) {
  ResumePoint r;
  cfg = RunConfig::from_json(read_text(dir + "/config.json"), dir + "/config.json");
  cfg.out = dir;
  auto change = [&](std::string& field, const std::string& to, const char* flag) {
    if (to.empty() || to == field) return;
    r.changes += fmt::format("{}{} {} (was {})", r.changes.empty() ? "" : ", ", flag, to, field);
    field = to;
  };
  change(cfg.data_dir, o.data_dir.empty() ? "" : fs::absolute(o.data_dir).lexically_normal().string(), "--data-dir");
  if (!o.device.empty() && parse_device_choice(o.device) != cfg.device) {
    r.changes += fmt::format("{}--device {} (was {})", r.changes.empty() ? "" : ", ", o.device,
                             device_choice_name(cfg.device));
    cfg.device = parse_device_choice(o.device);
  }
  if (o.workers >= 0 && o.workers != cfg.workers) {
    r.changes += fmt::format("{}--workers {} (was {})", r.changes.empty() ? "" : ", ", o.workers, cfg.workers);
    cfg.workers = o.workers;
  }
  cfg.check(dir + "/config.json with the flags given");
  r.path = dir + "/last.safetensors";
  r.state = load_safetensors(r.path);
  r.start_epoch = resume_number<int>(r.state, "epochs_done", r.path);
  const double best = resume_number<double>(r.state, "best_metric", r.path);
  CAC_CHECK(r.start_epoch >= 0 && !std::isnan(best), "{}: corrupt bookkeeping (epochs_done {}, best_metric {})",
            r.path, r.start_epoch, best);
  int scheduled = 0;
  for (int e : cfg.epochs) scheduled += e;
  CAC_CHECK(r.start_epoch <= scheduled, "{}: epochs_done {} is more than the {} epochs of {}/config.json's schedule: "
            "corrupt bookkeeping", r.path, r.start_epoch, scheduled, dir);
  if (std::isfinite(best)) r.best = best;
  // Checkpoints from before 2026-12 have no weights_from: their stages continued.
  if (const auto it = r.state.metadata.find("weights_from"); it != r.state.metadata.end())
    r.weights_from = parse_whole<int>(it->second, r.path, "weights_from");
  return r;
}

// The first lines of train.log: the engine, the run, and which classes are known.
// The strong-baseline options in force, in words ("" for the protocol's plain run).
std::string recipe_words(const RunConfig& cfg) {
  std::vector<std::string> parts;
  if (cfg.lr_schedule == LrShape::Cosine)
    parts.push_back(fmt::format("cosine learning rate from {} ({} warm-up epochs, {} restarts)", cfg.lrs[0],
                                cfg.warmup_epochs, cfg.restarts));
  if (cfg.label_smoothing > 0) parts.push_back(fmt::format("label smoothing {}", cfg.label_smoothing));
  if (!cfg.randaugment.empty())
    parts.push_back(fmt::format("RandAugment N={} M={}", cfg.randaugment[0], cfg.randaugment[1]));
  return fmt::format("{}", fmt::join(parts, "; "));
}

void log_header(RunLog& log, const RunConfig& cfg, const data::OpenSetData& d, Device dev, int total_epochs) {
  log.write(fmt::format("engine: {}\n", engine_version()));
  log.write(fmt::format("cac_train: {} trial {}, {}, {} known classes, {} train / {} val images, method {}, {} epochs on {}\n",
                        d.benchmark, cfg.trial, arch_name(cfg.arch_or_default()), d.num_classes(), d.train.size(),
                        d.val.size(), method_name(cfg.method), total_epochs, dev == Device::CUDA ? cuda::device_description() : "the CPU"));
  if (!d.val_folder.empty()) log.write(fmt::format("validation images: {} (all of train/ trains)\n", d.val_folder));
  if (const std::string r = recipe_words(cfg); !r.empty()) log.write("recipe: " + r + "\n");
  if (d.class_names.empty()) return;
  // Named classes (an image folder, Fashion-MNIST, CIFAR-10): which is which.
  std::string known, unknown;
  auto name = [&](int64_t c) { return c >= 0 && c < int64_t(d.class_names.size()) ? d.class_names[size_t(c)] : std::to_string(c); };
  for (size_t i = 0; i < d.classes.known.size(); ++i) known += fmt::format("{}{}={}", i ? ", " : "", i, name(d.classes.known[i]));
  for (size_t i = 0; i < d.classes.unknown.size(); ++i) unknown += (i ? ", " : "") + name(d.classes.unknown[i]);
  log.write(fmt::format("known classes: {}; unknown: {}\n", known, unknown.empty() ? "(none: cac_eval will need --unknown)" : unknown));
}

// --precision: TF32 convolutions on a GPU unless fp32 (bf16 is the model's, build_model); the log
// says what runs.
void set_precision(RunLog& log, const RunConfig& cfg, Device dev) {
  if (dev == Device::CUDA) cuda::set_allow_tf32(cfg.precision != Precision::FP32);
  const char* what = cfg.precision == Precision::BF16 ? "bf16 (convolutions on bf16 channels-last activations; "
                                                       "float32 master weights, statistics, head and checkpoints)"
                     : dev != Device::CUDA         ? "fp32 (the CPU computes in float32)"
                     : cfg.precision == Precision::TF32 ? "tf32 (TF32 tensor-core convolutions)"
                                                        : "fp32";
  log.write(fmt::format("precision: {}\n", what));
}

// cac_train --init: the model's weights from a file (a CE file has no anchors, and CE never reads them).
void load_init_weights(OpenSetClassifier& model, const std::string& path, Method method) {
  const Safetensors init = load_safetensors(path);
  NamedTensorList wanted = model.state_dict();
  if (method == Method::CE && !init.tensors.count("anchors"))
    wanted.erase(std::remove_if(wanted.begin(), wanted.end(), [](const auto& nt) { return nt.first == "anchors"; }),
                 wanted.end());
  restore_tensors(init, wanted, path);
}

// metrics.csv so far: the header, and on resume the rows of the epochs already done. `weights_from`
// (the epoch whose weights the row's stage started from, 0 = the initialisation) is a column since
// 2026-12; a run resumed from before keeps its file's columns.
struct MetricsCsv {
  std::string text;
  bool weights_from = true;
};
MetricsCsv metrics_csv_so_far(const std::string& out, int start_epoch) {
  MetricsCsv m;
  m.text = "epoch,lr,train_loss,train_tuplet,train_anchor,train_acc,val_loss,val_tuplet,val_anchor,val_acc,seconds,"
           "weights_from\n";
  if (start_epoch == 0 || !fs::exists(out + "/metrics.csv")) return m;
  std::istringstream old(read_text(out + "/metrics.csv"));
  std::string line;
  std::getline(old, line);
  m.weights_from = line.find(",weights_from") != std::string::npos;
  m.text = line + "\n";
  for (int e = 0; e < start_epoch && std::getline(old, line);) m.text += line + "\n", ++e;
  return m;
}

// One training run from its settings: the model, its trainer, the loaders, the log and the
// bookkeeping of checkpoints and metrics, and the steps of an epoch.
class TrainRun {
 public:
  TrainRun(const RunConfig& cfg, const data::OpenSetData& d, Device dev, RunLog& log)
      : cfg_(cfg), method_(cfg.method), dev_(dev), log_(log),
        model_(build_model(cfg, d.num_classes())), trainer_((model_->to(dev), model_), method_, cfg.lambda,
                                                            cfg.momentum, cfg.weight_decay),
        train_aug_(training_augment(cfg, d)),
        train_loader_(training_batches(d)),
        val_loader_(validation_batches(d)) {
    trainer_.set_label_smoothing(cfg.label_smoothing);
    if (cfg.precision == Precision::BF16) trainer_.keep_bf16_weights();
    if (dev == Device::CUDA) timer_ = std::make_unique<cuda::StepTimer>(int(train_loader_->batches_per_epoch()));
    if (dev == Device::CUDA) use_graphs(d);
  }

  OpenSetClassifier& model() { return *model_; }
  Trainer& trainer() { return trainer_; }
  bool ce() const { return method_ == Method::CE; }
  // The validation figure that picks best.safetensors (config.json "checkpoint_by"), and whether a
  // value beats the best so far (strictly: ties keep the earlier epoch).
  double metric(const StepTotals::Means& v) const {
    switch (cfg_.checkpoint_criterion()) {
      case CheckpointBy::ValAccuracy: return v.accuracy;
      case CheckpointBy::ValLoss: return v.loss;
      case CheckpointBy::ValAnchorLoss: break;
    }
    return v.anchor;
  }
  bool improves(double value, const std::optional<double>& best) const {
    if (!std::isfinite(value)) return false;
    if (!best) return true;
    return cfg_.checkpoint_criterion() == CheckpointBy::ValAccuracy ? value > *best : value < *best;
  }
  const char* criterion_words() const {
    switch (cfg_.checkpoint_criterion()) {
      case CheckpointBy::ValAccuracy: return "highest validation accuracy";
      case CheckpointBy::ValLoss: return "lowest validation loss";
      case CheckpointBy::ValAnchorLoss: break;
    }
    return "lowest validation anchor loss";
  }
  // Stage `stage` (> 0) starts from the best checkpoint so far with fresh momentum (--stage2
  // reload); returns the epoch whose weights it holds, or -1 where there is no best checkpoint.
  int reload_best() {
    const std::string path = cfg_.out + "/best.safetensors";
    if (!fs::exists(path)) return -1;
    const Safetensors best = load_safetensors(path);
    restore_tensors(best, model_->state_dict(), path);
    trainer_.optimizer().reset_momentum();
    return resume_number<int>(best, "epochs_done", path);
  }
  // The CAC loss's two terms for a log line (CE has none).
  std::string loss_parts(const StepTotals::Means& m) const {
    return ce() ? std::string() : fmt::format(" (tuplet {:.4f} anchor {:.4f})", m.tuplet, m.anchor);
  }

  // The totals are members: reset in place, a recorded step or forward keeps adding to them.
  StepTotals::Means validate() {
    StepTotals& va = val_totals_;
    va.reset(DType::F32, dev_);
    data::Batch vb;
    val_loader_->start_epoch(0);
    while (val_loader_->next(&vb)) {
      trainer_.evaluate(vb.images, vb.labels, va);
      if (stop_signal()) return {};  // the caller sees the signal: an interrupted validation does not count
    }
    return va.means();
  }

  // The training batches of one epoch with a progress line; stops early at a stop signal (the
  // caller checks stop_signal()).
  StepTotals::Means train_epoch(int epoch, int total_epochs, double lr) {
    // Weights are loaded between epochs only (--init, --resume, a stage's reload): the optimizer's
    // bf16 copy, where kept, follows them here, whichever it was.
    trainer_.weights_loaded();
    train_loader_->start_epoch(epoch);
    StepTotals& tr = train_totals_;
    tr.reset(DType::F32, dev_);
    Progress progress(epoch, total_epochs, train_loader_->batches_per_epoch(), ce(), log_);
    data::Batch b;
    int64_t done = 0, images = 0;
    if (timer_) timer_->reset();
    const auto t0 = std::chrono::steady_clock::now();
    while (train_loader_->next(&b)) {
      if (timer_) timer_->begin();
      trainer_.step(b.images, b.labels, lr, tr);
      if (timer_) timer_->end();
      ++done;
      images += b.labels.numel();
      if (done < train_loader_->batches_per_epoch() && progress.due())  // the last one prints below
        progress.update(done, images, tr.means(), false);
      if (stop_signal()) return {};
    }
    const StepTotals::Means tm = tr.means();
    if (timer_) {  // (the totals' read-out above has waited for the device)
      const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      gpu_busy_ = wall_ms > 0 ? std::min(1.0, timer_->busy_ms() / wall_ms) : 0;
    }
    progress.update(done, images, tm, true);
    return tm;
  }
  // "; CUDA graphs: 9211 replayed, 72 run eagerly" on a GPU with graphs on, else "".
  std::string graph_words() const {
    const GraphCounts g = trainer_.graph_counts();
    if (dev_ != Device::CUDA || cfg_.graph == GraphUse::Off) return "";
    return fmt::format("; CUDA graphs: {} replayed, {} run eagerly", g.replayed, g.eager);
  }
  // ", GPU busy 93% of the training" on a GPU: the share of the last epoch's training wall time
  // the GPU spent in steps (the rest it waited for data or launches); "" on the CPU.
  std::string gpu_busy_words() const {
    return timer_ ? fmt::format(", GPU busy {:.0f}% of the training", 100 * gpu_busy_) : "";
  }

  // The bookkeeping of a checkpoint written after `epochs_done` epochs.
  // The bookkeeping of a checkpoint written after `epochs_done` epochs; the current stage started
  // from the weights of epoch `weights_from`.
  std::map<std::string, std::string> checkpoint_meta(int epochs_done, const std::optional<double>& best,
                                                     int weights_from) const {
    return {{"epochs_done", std::to_string(epochs_done)}, {"method", method_name(cfg_.method)}, {"dataset", cfg_.dataset},
            {"best_metric", best ? fmt::format("{:.17g}", *best) : "inf"},
            {"weights_from", std::to_string(weights_from)}};
  }
  void save_best(const std::map<std::string, std::string>& meta) {
    save_safetensors(cfg_.out + "/best.safetensors", model_->state_dict(), meta);
  }
  void save_last(const std::map<std::string, std::string>& meta) {
    save_safetensors(cfg_.out + "/last.safetensors", checkpoint_tensors(*model_, trainer_), meta);
  }

 private:
  // The training batches: on the GPU from the set held there (cac_train --data-on-device auto), or
  // from the host loader; train.log says which and why.
  std::unique_ptr<data::BatchSource> training_batches(const data::OpenSetData& d) {
    std::string why = cfg_.data_on_device == DataOnDevice::Off ? "--data-on-device off"
                                                               : DeviceBatches::host_only_reason(d.train, train_aug_, dev_);
    if (why.empty()) {
      log_.write(fmt::format("training data: on the GPU ({} MB of images, augmented there)\n",
                             DeviceBatches::device_bytes(d.train) >> 20));
      return std::make_unique<DeviceBatches>(d.train, train_aug_, loader_options(true), dev_);
    }
    if (dev_ == Device::CUDA) log_.write("training data: host loader (" + why + ")\n");
    return std::make_unique<data::Loader>(d.train, train_aug_, loader_options(true));
  }
  // --graph auto on a GPU: the steady-state step and validation forward replayed (Trainer::use_graphs).
  void use_graphs(const data::OpenSetData& d) {
    if (cfg_.graph == GraphUse::Off) {
      log_.write("CUDA graphs: off (--graph off): every step runs eagerly\n");
      return;
    }
    trainer_.use_graphs(true, [this](const std::string& s) { log_.write(s + "\n"); });
    std::string eager;
    for (const auto& [what, n] : {std::pair<const char*, int64_t>{"training", int64_t(d.train.size())},
                                  {"validation", int64_t(d.val.size())}})
      if (n % cfg_.batch != 0 && n > cfg_.batch)
        eager += fmt::format("; the last {} batch of each epoch ({} images) runs eagerly", what, n % cfg_.batch);
    log_.write(fmt::format("CUDA graphs: on (--graph auto): the training step and the validation forward of {} "
                           "images are recorded after two eager batches and replayed{}\n", cfg_.batch, eager));
  }
  // The validation batches: on the GPU beside the training set when that is there (sharing its copy
  // of the images where both are subsets of one set), else from the host loader.
  std::unique_ptr<data::BatchSource> validation_batches(const data::OpenSetData& d) {
    const auto* train = dynamic_cast<const DeviceBatches*>(train_loader_.get());
    const bool shared = d.val.source == d.train.source;
    if (train && (shared || DeviceBatches::host_only_reason(d.val, eval_augment(), dev_).empty())) {
      log_.write(fmt::format("validation data: on the GPU ({})\n", shared ? "the training set's copy"
                                                                    : fmt::format("{} MB of images",
                                                                                  DeviceBatches::device_bytes(d.val) >> 20)));
      return std::make_unique<DeviceBatches>(d.val, eval_augment(), loader_options(false), dev_, train);
    }
    return std::make_unique<data::Loader>(d.val, eval_augment(), loader_options(false));
  }
  data::Loader::Options loader_options(bool shuffle) const {
    data::Loader::Options lo;
    lo.batch = cfg_.batch;
    lo.seed = cfg_.seed;
    lo.workers = cfg_.workers;
    lo.device = dev_;
    lo.shuffle = shuffle;
    return lo;
  }
  data::Augment eval_augment() const {
    data::Augment a = train_aug_;
    a.train = false;
    a.randaugment_n = 0;
    return a;
  }
  static data::Augment training_augment(const RunConfig& cfg, const data::OpenSetData& d) {
    data::Augment a = data::training_augment(cfg.image_size, cfg.crop_scale_min, cfg.flip_p, cfg.rotate_deg, d.norm,
                                             cfg.rotate_interpolation);
    if (!cfg.randaugment.empty()) a.randaugment_n = cfg.randaugment[0], a.randaugment_m = cfg.randaugment[1];
    return a;
  }

  const RunConfig& cfg_;
  Method method_;
  Device dev_;
  RunLog& log_;
  std::shared_ptr<OpenSetClassifier> model_;
  Trainer trainer_;
  data::Augment train_aug_;
  std::unique_ptr<data::BatchSource> train_loader_;
  std::unique_ptr<data::BatchSource> val_loader_;
  std::unique_ptr<cuda::StepTimer> timer_;  // on a GPU: the steps' device time per epoch
  StepTotals train_totals_, val_totals_;
  double gpu_busy_ = 0;
};

// --init with 0 epochs: a run of the given weights, checked on the validation set.
void hold_given_weights(TrainRun& run, const RunConfig& cfg, RunLog& log, const std::string& csv) {
  const StepTotals::Means vm = run.validate();
  log.write(fmt::format("validation of the given weights: loss {:.4f}{}  acc {:5.1f}%  -> best.safetensors\n", vm.loss,
                        run.loss_parts(vm), 100 * vm.accuracy));
  write_file_atomic(cfg.out + "/metrics.csv", csv);
  std::map<std::string, std::string> meta = run.checkpoint_meta(0, run.metric(vm), 0);
  meta["init"] = cfg.init;
  run.save_best(meta);
  run.save_last(meta);
}

// A run killed between writing last.safetensors and best.safetensors of an epoch that improved:
// best.safetensors still has the previous best (its best_metric differs from last's), and that
// epoch's weights, which the resumed model now holds, are the best. Written, so the resumed run
// keeps the same best checkpoint as one never killed.
void complete_best(TrainRun& run, const RunConfig& cfg, const ResumePoint& r, RunLog& log) {
  if (!r.best) return;
  const std::string path = cfg.out + "/best.safetensors";
  const std::string& want = resume_field(r.state, "best_metric", r.path);
  if (fs::exists(path)) {
    const Safetensors best = load_safetensors(path);
    const auto it = best.metadata.find("best_metric");
    if (it != best.metadata.end() && it->second == want) return;
  }
  run.save_best(run.checkpoint_meta(r.start_epoch, r.best, r.weights_from));
  log.write(fmt::format("best.safetensors was one epoch behind last.safetensors (the run was killed between "
                        "the two); rewritten from epoch {}'s weights\n", r.start_epoch));
}

// What cac_train says when a stop signal ended an epoch early; the exit code.
int report_stop(RunLog& log, const RunConfig& cfg, int epoch) {
  const int sig = stop_signal();
  std::printf("\n");
  const char* what = stop_words(sig);
  if (fs::exists(cfg.out + "/last.safetensors")) {
    log.write(fmt::format("{}: the last checkpoint is {}/last.safetensors ({} epochs done); continue "
                          "with: cac_train --resume {}\n", what, cfg.out, epoch, cfg.out));
  } else {  // stopped inside the first epoch: nothing to resume from
    log.write(fmt::format("{} in the first epoch, before any checkpoint; run the same command again to "
                          "start {} over\n", what, cfg.out));
  }
  return stop_exit_code(sig);
}

// Where the epochs stand: the best value kept so far and the epoch whose weights the current
// stage started from.
struct EpochState {
  std::optional<double> best;
  int weights_from = 0;
};

// --stage2 reload at the first epoch of a later stage: the best checkpoint so far, fresh momentum,
// and the best of this stage only from here on.
void begin_stage(TrainRun& run, const RunConfig& cfg, RunLog& log, int epoch, int stage, EpochState& st) {
  if (cfg.stage2 == Stage2::Continue) {
    st.weights_from = epoch;
    return;
  }
  const int from = run.reload_best();
  if (from < 0) {
    log.write(fmt::format("stage {} starts from epoch {} (no best.safetensors to reload)\n", stage + 1, epoch));
    st.weights_from = epoch;
    return;
  }
  log.write(fmt::format("stage {} starts from epoch {}'s weights (best.safetensors, {}), with fresh SGD "
                        "momentum; best.safetensors is now the best of stage {}\n",
                        stage + 1, from, run.criterion_words(), stage + 1));
  st.best.reset();
  st.weights_from = from;
}

// A run whose loss or weights stopped being finite ends here (exit code 3), keeping the checkpoint
// of the last epoch that was finite, if there is one.
int stop_diverged(RunLog& log, const RunConfig& cfg, const std::string& what, int epoch) {
  const bool kept = fs::exists(cfg.out + "/last.safetensors");
  log.write(fmt::format("cac_train: {} in epoch {}; stopping. {}; try a lower --lr.\n", what, epoch + 1,
                        kept ? fmt::format("The last good checkpoint ({}/last.safetensors) is intact", cfg.out)
                             : std::string("No checkpoint was written (none was finite)")),
            stderr);
  return 3;
}

// The epochs from `start` on: train, validate, write metrics.csv and the checkpoints. Returns the
// exit code.
int run_epochs(TrainRun& run, const RunConfig& cfg, RunLog& log, const LrSchedule& schedule, int start, EpochState st,
               MetricsCsv csv, int stop_after_epochs) {
  int epochs_run = 0;
  for (int epoch = start; epoch < schedule.total_epochs(); ++epoch) {
    if (schedule.starts_stage(epoch)) begin_stage(run, cfg, log, epoch, schedule.stage_of(epoch), st);
    const double lr = schedule.lr_at(epoch);
    const auto t0 = std::chrono::steady_clock::now();
    const StepTotals::Means tm = run.train_epoch(epoch, schedule.total_epochs(), lr);
    if (stop_signal()) return report_stop(log, cfg, epoch);
    if (!std::isfinite(tm.loss))
      return stop_diverged(log, cfg, fmt::format("the training loss became {}", tm.loss), epoch);
    const StepTotals::Means vm = run.validate();
    if (stop_signal()) return report_stop(log, cfg, epoch);
    if (!std::isfinite(vm.loss))
      return stop_diverged(log, cfg, fmt::format("the validation loss became {}", vm.loss), epoch);
    if (const std::string bad = first_non_finite(checkpoint_tensors(run.model(), run.trainer())); !bad.empty())
      return stop_diverged(log, cfg, fmt::format("{} holds NaN or Inf", bad), epoch);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double metric = run.metric(vm);
    const bool improved = run.improves(metric, st.best);
    log.write(fmt::format("           validation: loss {:.4f}{}  acc {:5.1f}%  ({:.1f} s{}){}\n", vm.loss, run.loss_parts(vm),
                          100 * vm.accuracy, secs, run.gpu_busy_words(), improved ? "  -> best.safetensors" : ""));
    csv.text += fmt::format("{},{},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.2f}", epoch + 1, lr, tm.loss,
                            tm.tuplet, tm.anchor, tm.accuracy, vm.loss, vm.tuplet, vm.anchor, vm.accuracy, secs);
    csv.text += csv.weights_from ? fmt::format(",{}\n", st.weights_from) : "\n";
    write_file_atomic(cfg.out + "/metrics.csv", csv.text);
    // last before best: a kill between the two leaves last holding the epoch's weights, from which
    // complete_best restores best on resume (the other order would lose the previous best).
    if (improved) st.best = metric;
    run.save_last(run.checkpoint_meta(epoch + 1, st.best, st.weights_from));
    if (improved) run.save_best(run.checkpoint_meta(epoch + 1, st.best, st.weights_from));
    if (stop_after_epochs > 0 && ++epochs_run >= stop_after_epochs) break;
  }
  log.write(fmt::format("cac_train: done; run folder {} (best.safetensors: {}{}; log train.log){}\n", cfg.out,
                        run.criterion_words(),
                        cfg.stage2 == Stage2::Reload && schedule.stage_of(schedule.total_epochs() - 1) > 0
                            ? " of the last stage" : "",
                        run.graph_words()));
  return 0;
}
}  // namespace

std::vector<EpochTiming> time_epochs(const RunConfig& cfg, const data::OpenSetData& d, int epochs) {
  const Device dev = resolve_device(cfg.device);
  RunLog log("/dev/null");
  log_header(log, cfg, d, dev, epochs);
  set_precision(log, cfg, dev);
  TrainRun run(cfg, d, dev, log);
  const LrSchedule schedule = cfg.schedule();
  std::vector<EpochTiming> out;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    run.train_epoch(epoch, epochs, schedule.lr_at(std::min(epoch, schedule.total_epochs() - 1)));  // reads the totals: the device is done
    const auto t1 = clock::now();
    run.validate();
    EpochTiming t;
    t.train_s = std::chrono::duration<double>(t1 - t0).count();
    t.val_s = std::chrono::duration<double>(clock::now() - t1).count();
    t.train_images = d.train.size();
    t.val_images = d.val.size();
    out.push_back(t);
  }
  return out;
}

int run_train(RunConfig cfg, const std::string& resume_dir, int stop_after_epochs, const ResumeOverrides& overrides,
              ExistingRun existing) {
  const std::string dir = resume_dir.empty() ? cfg.out : resume_dir;
  CAC_CHECK(!dir.empty(), "no output folder: pass --out RUN_DIR");
  std::error_code ec;
  fs::create_directories(dir, ec);
  CAC_CHECK(!ec, "{}: cannot create the run folder ({})", dir, ec.message());
  const RunFolderLock lock(dir, "cac_train");
  ResumePoint resume;
  if (!resume_dir.empty()) resume = load_resume_point(cfg, resume_dir, overrides);
  const std::string replaced = resume_dir.empty() ? prepare_new_run_folder(dir, existing) : "";
  const Device dev = resolve_device(cfg.device);
  const LrSchedule schedule = cfg.schedule();
  const int total_epochs = schedule.total_epochs();
  CAC_CHECK(total_epochs > 0 || !cfg.init.empty(),
            "--epochs adds up to 0: nothing to train and no weights to keep (with --init FILE, 0 epochs makes a run "
            "of those weights for cac_eval)");
  cfg.checkpoint_by = cfg.checkpoint_criterion();  // config.json records the criterion in force
  write_file_atomic(cfg.out + "/config.json", cfg.to_json());
  RunLog log(cfg.out + "/train.log");
  if (!replaced.empty()) log.write(replaced + "\n");
  const data::OpenSetData d = load_run_data(cfg);
  log_header(log, cfg, d, dev, total_epochs);
  set_precision(log, cfg, dev);
  TrainRun run(cfg, d, dev, log);
  if (!cfg.init.empty() && resume.path.empty()) {  // a resumed run's own checkpoint supersedes its start
    load_init_weights(run.model(), cfg.init, cfg.method);
    log.write(fmt::format("starting from the weights in {}\n", cfg.init));
  }
  if (!resume.path.empty()) {
    restore_checkpoint(resume.state, run.model(), run.trainer(), resume.path);
    log.write(fmt::format("resuming {} at epoch {}{}\n", resume_dir, resume.start_epoch + 1,
                          resume.changes.empty() ? "" : " with " + resume.changes));
    complete_best(run, cfg, resume, log);
  }
  const MetricsCsv csv = metrics_csv_so_far(cfg.out, resume.start_epoch);
  if (total_epochs == 0) hold_given_weights(run, cfg, log, csv.text);
  install_stop_handlers();
  EpochState st{resume.best, resume.weights_from};
  return run_epochs(run, cfg, log, schedule, resume.start_epoch, st, csv, stop_after_epochs);
}

}  // namespace cac::app
