#pragma once
// cac_train as a library function: trains a run (new or resumed) into its folder.
#include <string>
#include <vector>

#include "apps/run.h"
#include "apps/run_folder.h"

namespace cac::app {

// Trains as `cfg` says into cfg.out (config.json, metrics.csv, train.log, best.safetensors,
// last.safetensors). With resume_dir, continues that run at the epoch after its last checkpoint.
// stop_after_epochs > 0 stops early (as an interruption would); returns the process exit code.
// What a resumed run may change (cac_train --resume with --data-dir, --device, --workers): where the
// data is now and what trains it, never the run's settings; empty / negative: as config.json says.
// The changes are logged and recorded in config.json.
struct ResumeOverrides {
  std::string data_dir, device;
  int workers = -1;
};
// A new run's folder must not hold another run (run_folder.h) unless `existing` says to overwrite it.
int run_train(RunConfig cfg, const std::string& resume_dir, int stop_after_epochs = 0,
              const ResumeOverrides& overrides = {}, ExistingRun existing = ExistingRun::Refuse);

// cac_bench epoch: `epochs` epochs of cac_train's own loop (the loaders, the steps, the progress
// line, the validation pass) on `d` with `cfg`'s settings, without a run folder or checkpoints. Each
// epoch's training and validation seconds (wall, after the device has finished) and images.
struct EpochTiming {
  double train_s = 0, val_s = 0;
  int64_t train_images = 0, val_images = 0;
};
std::vector<EpochTiming> time_epochs(const RunConfig& cfg, const data::OpenSetData& d, int epochs);

}  // namespace cac::app
