#pragma once
// cac_predict as a library function: scores new images with a run's deploy.json (known class or
// unknown) and prints or writes the predictions.
#include <optional>
#include <string>
#include <vector>

namespace cac::app {

struct PredictOptions {
  std::string run;                  // a run folder on which cac_eval has run (deploy.json)
  std::vector<std::string> inputs;  // JPEG files and folders (searched recursively)
  std::optional<double> threshold;  // none: the run's (accepts 95% of validation knowns, or cac_eval --accept)
  std::string csv, device = "auto";
  int batch = 64;
};
// Scores new images: predicted known class, open-set score, and "unknown" when the score is above
// the threshold. Prints a table; writes the CSV when asked. An image that cannot be read is reported
// (stderr, and a CSV row with verdict "error" and the reason) and the others are still predicted.
// Returns the process exit code: 0, or 2 when some image could not be read.
int run_predict(const PredictOptions& o);

}  // namespace cac::app
