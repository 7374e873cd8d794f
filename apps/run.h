#pragma once
// What cac_train and cac_eval share: the settings of a run (written to RUN_DIR/config.json as
// used) and building the model they describe.
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/progress.h"
#include "models/classifier32.h"
#include "models/resnet18.h"
#include "data/openset.h"
#include "models/training.h"

namespace cac::app {

// --device: auto (the GPU if there is a usable one), cpu or cuda.
enum class DeviceChoice { Auto, CPU, CUDA };
// The error names what is wrong and what to write instead (e.g. for PyTorch's "cuda:1").
DeviceChoice parse_device_choice(const std::string& s);
const char* device_choice_name(DeviceChoice d);

// What each stage of the schedule after the first starts from. Reload (the CAC authors' release):
// the best checkpoint so far, fresh SGD momentum, and best-checkpoint tracking restarted, so the
// kept checkpoint is the best of the last stage. Continue: the previous epoch's weights and
// momentum, best over all stages (the engine before 2026-12; runs without the field).
enum class Stage2 { Reload, Continue };
const char* stage2_name(Stage2 s);
Stage2 parse_stage2(const std::string& s);
// Which validation figure picks best.safetensors: CAC's lowest anchor loss (the protocol), the CE
// baseline's highest accuracy (the authors' release; ties keep the earlier epoch), or the lowest
// loss (CE runs made before 2026-12).
enum class CheckpointBy { ValAnchorLoss, ValAccuracy, ValLoss };
const char* checkpoint_by_name(CheckpointBy c);
CheckpointBy parse_checkpoint_by(const std::string& s);
// --data-on-device: auto (a GPU run holds its training set on the GPU and augments it there,
// apps/device_batches.h, where it fits and RandAugment is off) or off (the host loader).
enum class DataOnDevice { Auto, Off };
const char* data_on_device_name(DataOnDevice d);
DataOnDevice parse_data_on_device(const std::string& s);
// --graph: auto (a GPU run records its steady-state training step and evaluation forward into CUDA
// graphs and replays them, Trainer::use_graphs) or off (every step eagerly).
enum class GraphUse { Auto, Off };
const char* graph_use_name(GraphUse g);
GraphUse parse_graph_use(const std::string& s);
// --precision: fp32 (float32 everywhere), tf32 (TF32 tensor-core convolutions on a GPU, PyTorch's
// default; on the CPU the same as fp32), bf16 (the convolution stack on bf16 channels-last
// activations; float32 master weights, statistics, head and checkpoints).
enum class Precision { FP32, TF32, BF16 };
const char* precision_name(Precision p);
Precision parse_precision(const std::string& s);
// --lr-schedule: step (the protocol's stages) or cosine (layers/optim.h).
const char* lr_shape_name(LrShape s);
LrShape parse_lr_shape(const std::string& s);

struct RunConfig {
  std::string dataset = "FashionMNIST";
  int trial = 0;
  std::string data_dir;
  std::string split_json;  // a user split instead of the standard trial
  data::SplitSet split_set = data::SplitSet::Current;  // which table of standard trials
  Method method = Method::CAC;
  std::optional<Arch> arch;  // unset = the dataset's default
  double alpha = 10.0, lambda = 0.1;
  std::vector<int> epochs;   // per learning-rate stage
  std::vector<double> lrs;
  int batch = 128;
  double weight_decay = 5e-6, dropout = 0.2, momentum = 0.9;
  int image_size = 32, channels = 1;
  double flip_p = 0, rotate_deg = 0, crop_scale_min = 1;
  // Nearest as torchvision's RandomRotation; runs made before the field rotated bilinearly.
  data::Interpolation rotate_interpolation = data::Interpolation::Nearest;
  bool flip_for_class_means = false;
  DeviceChoice device = DeviceChoice::Auto;
  uint64_t seed = 0;
  int64_t train_limit = 0;  // 0 = all training images
  int workers = 0;
  std::string out;
  std::string init;  // weights the run started from (cac_train --init); empty = fresh initialisation
  bool skip_bad_images = false;  // ImageFolder: leave out images that cannot be read (else stop at one)
  Stage2 stage2 = Stage2::Reload;
  std::optional<CheckpointBy> checkpoint_by;  // unset: by method (CE: accuracy, else anchor loss)
  // The strong-baseline recipe (Vaze et al. 2022; all off by default, the CAC protocol): cosine
  // learning rate over the total of `epochs` from lrs[0] with warm-up and restarts; label smoothing
  // of the CE baseline's loss; RandAugment [N, M] on the training images ([] = none).
  LrShape lr_schedule = LrShape::Step;
  int warmup_epochs = 0, restarts = 0;
  double label_smoothing = 0;
  std::vector<int> randaugment;
  DataOnDevice data_on_device = DataOnDevice::Auto;
  GraphUse graph = GraphUse::Auto;
  Precision precision = Precision::TF32;

  std::string to_json() const;
  // Parses and check()s; every problem names `where` (the file) and the field.
  static RunConfig from_json(const std::string& text, const std::string& where);
  // Sets the fields present in a JSON object of run settings (a run's config.json, or any part of
  // one: cac_train --config), except those named in `keep`; returns the fields it set. Unknown
  // fields and wrong types are errors naming `where` and the field. Does not check() the result.
  std::vector<std::string> overlay_json(const std::string& text, const std::string& where,
                                        const std::set<std::string>& keep);
  // The ranges cac_train's flags accept, for a config.json read back (--resume, cac_eval, cac_predict).
  void check(const std::string& where) const;
  Arch arch_or_default() const { return arch.value_or(Arch::Classifier32); }
  // The learning rate of every epoch, as lr_schedule says.
  LrSchedule schedule() const;
  CheckpointBy checkpoint_criterion() const {
    return checkpoint_by.value_or(method == Method::CE ? CheckpointBy::ValAccuracy : CheckpointBy::ValAnchorLoss);
  }
};

// The settings that cac_train takes as flags, as (flag, config.json field) pairs, from the one
// table of fields in run.cpp.
std::vector<std::pair<std::string, std::string>> run_config_flags();

// Fills every unset protocol value (arch, epochs, lrs, batch, ...) from the dataset's defaults.
void apply_dataset_defaults(RunConfig& c, bool epochs_set, bool lrs_set, bool batch_set, bool wd_set,
                            bool image_size_set = false);

// A whole text file; a missing file fails with "PATH: not found" + hint (what the user should do).
std::string read_text(const std::string& path, const std::string& hint = "");

// auto | cpu | cuda. A clear error when cuda is asked for and missing, and for auto too where a GPU
// is present but this build or driver cannot use it (cuda::GpuState::Unusable).
Device resolve_device(DeviceChoice d);
Device resolve_device(const std::string& d);  // parse_device_choice, then the above
std::shared_ptr<OpenSetClassifier> build_model(const RunConfig& c, int num_classes);

// The benchmark as the run sees it: load_benchmark, then the seeded --train-limit subset.
data::OpenSetData load_run_data(const RunConfig& c);

}  // namespace cac::app
