#pragma once
// cac_train as a library function: trains a run (new or resumed) into its folder.
#include <string>

#include "apps/run.h"

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
int run_train(RunConfig cfg, const std::string& resume_dir, int stop_after_epochs = 0,
              const ResumeOverrides& overrides = {});

}  // namespace cac::app
