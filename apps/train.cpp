#include "apps/train.h"

#include "core/build_info.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/loader.h"
#include "data/openset.h"
#include "models/checkpoint.h"

namespace fs = std::filesystem;

namespace cac::app {

namespace {
// SIGINT (Ctrl-C) or SIGTERM (a batch scheduler's time limit, `kill`): the signal, once received;
// training stops at the next batch, with the last epoch's checkpoint intact.
std::atomic<int> g_interrupted{0};
extern "C" void on_stop_signal(int sig) { g_interrupted = sig; }

// Everything a bit-identical resume needs beyond the tensors: the epoch and the dropout counters.
NamedTensorList checkpoint_tensors(OpenSetClassifier& model, Trainer& trainer) {
  NamedTensorList t = model.state_dict();
  if (trainer.optimizer().momentum_buffer().defined())
    t.push_back({"optimizer.momentum_buffer", trainer.optimizer().momentum_buffer()});
  return t;
}
std::string dropout_counters(OpenSetClassifier& model) {
  std::string out;
  model.visit([&](const std::string&, Module& m) {
    if (auto* d = dynamic_cast<Dropout2d*>(&m)) out += std::to_string(d->calls) + ",";
  });
  return out;
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

void restore_dropout_counters(OpenSetClassifier& model, const std::string& s, const std::string& path) {
  std::istringstream in(s);
  model.visit([&](const std::string& name, Module& m) {
    if (auto* d = dynamic_cast<Dropout2d*>(&m)) {
      std::string v;
      CAC_CHECK(std::getline(in, v, ','), "{}: dropout counters missing for {}", path, name);
      d->calls = parse_whole<uint64_t>(v, path, "dropout_calls");
    }
  });
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
}  // namespace

int run_train(RunConfig cfg, const std::string& resume_dir, int stop_after_epochs, const ResumeOverrides& overrides) {
  int start_epoch = 0;
  double best = INFINITY;
  Safetensors resume_state;
  std::string resume_path, resume_changes;
  if (!resume_dir.empty()) {
    cfg = RunConfig::from_json(read_text(resume_dir + "/config.json"), resume_dir + "/config.json");
    cfg.out = resume_dir;
    auto change = [&](std::string& field, const std::string& to, const char* flag) {
      if (to.empty() || to == field) return;
      resume_changes += fmt::format("{}{} {} (was {})", resume_changes.empty() ? "" : ", ", flag, to, field);
      field = to;
    };
    change(cfg.data_dir, overrides.data_dir.empty() ? "" : fs::absolute(overrides.data_dir).lexically_normal().string(),
           "--data-dir");
    change(cfg.device, overrides.device, "--device");
    if (overrides.workers >= 0 && overrides.workers != cfg.workers) {
      resume_changes += fmt::format("{}--workers {} (was {})", resume_changes.empty() ? "" : ", ", overrides.workers, cfg.workers);
      cfg.workers = overrides.workers;
    }
    cfg.check(resume_dir + "/config.json with the flags given");
    resume_path = resume_dir + "/last.safetensors";
    resume_state = load_safetensors(resume_path);
    start_epoch = resume_number<int>(resume_state, "epochs_done", resume_path);
    best = resume_number<double>(resume_state, "best_metric", resume_path);
    CAC_CHECK(start_epoch >= 0 && !std::isnan(best), "{}: corrupt bookkeeping (epochs_done {}, best_metric {})",
              resume_path, start_epoch, best);
  }
  CAC_CHECK(!cfg.out.empty(), "no output folder: pass --out RUN_DIR");
  fs::create_directories(cfg.out);
  const Device dev = resolve_device(cfg.device);
  const Method method = parse_method(cfg.method);
  StagedLR schedule(cfg.epochs, cfg.lrs);
  const int total_epochs = schedule.total_epochs();
  CAC_CHECK(total_epochs > 0 || !cfg.init.empty(),
            "--epochs adds up to 0: nothing to train and no weights to keep (with --init FILE, 0 epochs makes a run "
            "of those weights for cac_eval)");
  write_file_atomic(cfg.out + "/config.json", cfg.to_json());
  RunLog log(cfg.out + "/train.log");

  data::OpenSetData d = load_run_data(cfg);
  log.write(fmt::format("engine: {}\n", engine_version()));
  log.write(fmt::format("cac_train: {} trial {}, {}, {} known classes, {} train / {} val images, method {}, {} epochs on {}\n",
                        d.benchmark, cfg.trial, cfg.arch.empty() ? "classifier32" : cfg.arch, d.num_classes(), d.train.size(),
                        d.val.size(), cfg.method, total_epochs, dev == Device::CUDA ? cuda::device_description() : "the CPU"));
  if (!d.val_folder.empty()) log.write(fmt::format("validation images: {} (all of train/ trains)\n", d.val_folder));
  if (!d.class_names.empty()) {  // named classes (an image folder, Fashion-MNIST, CIFAR-10): which is which
    std::string known, unknown;
    auto name = [&](int64_t c) { return c >= 0 && c < int64_t(d.class_names.size()) ? d.class_names[size_t(c)] : std::to_string(c); };
    for (size_t i = 0; i < d.classes.known.size(); ++i) known += fmt::format("{}{}={}", i ? ", " : "", i, name(d.classes.known[i]));
    for (size_t i = 0; i < d.classes.unknown.size(); ++i) unknown += (i ? ", " : "") + name(d.classes.unknown[i]);
    log.write(fmt::format("known classes: {}; unknown: {}\n", known, unknown.empty() ? "(none)" : unknown));
  }

  auto model = build_model(cfg, d.num_classes());
  model->to(dev);
  Trainer trainer(model, method, cfg.lambda, cfg.momentum, cfg.weight_decay);
  if (!cfg.init.empty() && resume_path.empty()) {  // a resumed run's own checkpoint supersedes its start
    const Safetensors init = load_safetensors(cfg.init);
    NamedTensorList wanted = model->state_dict();
    // A closed-set (cross-entropy) classifier's file has no anchors, and CE never reads them.
    if (method == Method::CE && !init.tensors.count("anchors"))
      wanted.erase(std::remove_if(wanted.begin(), wanted.end(), [](const auto& nt) { return nt.first == "anchors"; }),
                   wanted.end());
    restore_tensors(init, wanted, cfg.init);
    log.write(fmt::format("starting from the weights in {}\n", cfg.init));
  }
  if (!resume_path.empty()) {
    restore_tensors(resume_state, checkpoint_tensors(*model, trainer), resume_path);
    restore_dropout_counters(*model, resume_field(resume_state, "dropout_calls", resume_path), resume_path);
    log.write(fmt::format("resuming {} at epoch {}{}\n", resume_dir, start_epoch + 1,
                          resume_changes.empty() ? "" : " with " + resume_changes));
  }

  const data::Augment train_aug =
      data::training_augment(cfg.image_size, cfg.crop_scale_min, cfg.flip_p, cfg.rotate_deg, d.norm);
  data::Augment eval_aug = train_aug;
  eval_aug.train = false;
  data::Loader::Options lo;
  lo.batch = cfg.batch;
  lo.seed = cfg.seed;
  lo.workers = cfg.workers;
  lo.device = dev;
  data::Loader train_loader(d.train, train_aug, lo);
  lo.shuffle = false;
  data::Loader val_loader(d.val, eval_aug, lo);

  // metrics.csv is rewritten whole each epoch (atomically), keeping earlier rows on resume.
  std::string csv = "epoch,lr,train_loss,train_tuplet,train_anchor,train_acc,val_loss,val_tuplet,val_anchor,val_acc,seconds\n";
  if (start_epoch > 0 && fs::exists(cfg.out + "/metrics.csv")) {
    std::istringstream old(read_text(cfg.out + "/metrics.csv"));
    std::string line;
    std::getline(old, line);
    for (int e = 0; e < start_epoch && std::getline(old, line);) csv += line + "\n", ++e;
  }
  const auto validate = [&] {
    StepTotals va;
    va.reset(DType::F32, dev);
    data::Batch vb;
    val_loader.start_epoch(0);
    while (val_loader.next(&vb)) trainer.evaluate(vb.images, vb.labels, va);
    return va.means();
  };
  // The CAC loss's two terms for a log line (CE has none).
  const auto loss_parts = [&](const StepTotals::Means& m) {
    return method == Method::CE ? std::string() : fmt::format(" (tuplet {:.4f} anchor {:.4f})", m.tuplet, m.anchor);
  };
  if (total_epochs == 0) {  // --init with 0 epochs: a run of the given weights, checked on the validation set
    const StepTotals::Means vm = validate();
    log.write(fmt::format("validation of the given weights: loss {:.4f}{}  acc {:5.1f}%  -> best.safetensors\n", vm.loss,
                          loss_parts(vm), 100 * vm.accuracy));
    write_file_atomic(cfg.out + "/metrics.csv", csv);
    const double metric = method == Method::CE ? vm.loss : vm.anchor;
    const std::map<std::string, std::string> meta = {
        {"epochs_done", "0"}, {"dropout_calls", dropout_counters(*model)}, {"method", cfg.method},
        {"dataset", cfg.dataset}, {"best_metric", fmt::format("{:.17g}", metric)}, {"init", cfg.init}};
    save_safetensors(cfg.out + "/best.safetensors", model->state_dict(), meta);
    save_safetensors(cfg.out + "/last.safetensors", checkpoint_tensors(*model, trainer), meta);
  }
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  int epochs_run = 0;
  for (int epoch = start_epoch; epoch < total_epochs; ++epoch) {
    const double lr = schedule.lr_at(epoch);
    const auto t0 = std::chrono::steady_clock::now();
    train_loader.start_epoch(epoch);
    StepTotals tr;
    tr.reset(DType::F32, dev);
    Progress progress(epoch, total_epochs, train_loader.batches_per_epoch(), method == Method::CE, log);
    data::Batch b;
    int64_t done = 0, images = 0;
    while (train_loader.next(&b)) {
      trainer.step(b.images, b.labels, lr, tr);
      ++done;
      images += b.labels.numel();
      if (done < train_loader.batches_per_epoch() && progress.due())  // the last one prints below
        progress.update(done, images, tr.means(), false);
      if (g_interrupted) break;
    }
    if (const int sig = g_interrupted) {
      std::printf("\n");
      const char* what = sig == SIGTERM ? "terminated (SIGTERM)" : "interrupted";
      if (fs::exists(cfg.out + "/last.safetensors")) {
        log.write(fmt::format("{}: the last checkpoint is {}/last.safetensors ({} epochs done); continue "
                              "with: cac_train --resume {}\n", what, cfg.out, epoch, cfg.out));
      } else {  // stopped inside the first epoch: nothing to resume from
        log.write(fmt::format("{} in the first epoch, before any checkpoint; run the same command again to "
                              "start {} over\n", what, cfg.out));
      }
      return 128 + sig;  // the shell's code for death by that signal: 130 (SIGINT), 143 (SIGTERM)
    }
    const StepTotals::Means tm = tr.means();
    progress.update(done, images, tm, true);
    if (!std::isfinite(tm.loss)) {
      log.write(fmt::format("cac_train: the training loss became {} in epoch {}; stopping. The last good "
                            "checkpoint ({}/last.safetensors) is intact; try a lower --lr.\n", tm.loss, epoch + 1, cfg.out),
                stderr);
      return 3;
    }
    const StepTotals::Means vm = validate();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // The checkpoint kept for evaluation: lowest validation anchor loss (CE: lowest validation loss).
    const double metric = method == Method::CE ? vm.loss : vm.anchor;
    const bool improved = metric < best;
    log.write(fmt::format("           validation: loss {:.4f}{}  acc {:5.1f}%  ({:.1f} s){}\n", vm.loss, loss_parts(vm),
                          100 * vm.accuracy, secs, improved ? "  -> best.safetensors" : ""));
    csv += fmt::format("{},{},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.2f}\n", epoch + 1, lr, tm.loss,
                       tm.tuplet, tm.anchor, tm.accuracy, vm.loss, vm.tuplet, vm.anchor, vm.accuracy, secs);
    write_file_atomic(cfg.out + "/metrics.csv", csv);
    std::map<std::string, std::string> meta = {{"epochs_done", std::to_string(epoch + 1)},
                                               {"dropout_calls", dropout_counters(*model)},
                                               {"method", cfg.method}, {"dataset", cfg.dataset}};
    if (improved) {
      best = metric;
      meta["best_metric"] = fmt::format("{:.17g}", best);
      save_safetensors(cfg.out + "/best.safetensors", model->state_dict(), meta);
    }
    meta["best_metric"] = fmt::format("{:.17g}", best);
    save_safetensors(cfg.out + "/last.safetensors", checkpoint_tensors(*model, trainer), meta);
    if (stop_after_epochs > 0 && ++epochs_run >= stop_after_epochs) break;
  }
  log.write(fmt::format("cac_train: done; run folder {} (best.safetensors: lowest validation {}; log train.log)\n",
                        cfg.out, method == Method::CE ? "loss" : "anchor loss"));
  return 0;
}

}  // namespace cac::app
