#pragma once
#include <string>

#include "apps/run.h"

namespace cac::app {

// Trains as `cfg` says into cfg.out (config.json, metrics.csv, train.log, best.safetensors,
// last.safetensors). With resume_dir, continues that run at the epoch after its last checkpoint.
// stop_after_epochs > 0 stops early (as an interruption would); returns the process exit code.
int run_train(RunConfig cfg, const std::string& resume_dir, int stop_after_epochs = 0);

}  // namespace cac::app
