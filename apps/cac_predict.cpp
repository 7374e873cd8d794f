// cac_predict: scores new images with a trained and evaluated run: the predicted known class, the
// open-set score, and "unknown" when the score is above the run's threshold.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "apps/device_option.h"
#include "core/build_info.h"
#include "apps/predict.h"

int main(int argc, char** argv) {
  CLI::App app{"cac_predict: classify images as one of a run's known classes or as unknown"};
  app.set_version_flag("--version", [] { return cac::engine_version(); }, "the engine's version, source revision and libraries");
  app.footer("Needs RUN/deploy.json, which `cac_eval --run RUN` writes (the deployed score, anchors, normalisation, threshold;\n"
             "knn and mahalanobis also a score file beside it; choose with cac_eval --deploy-score).\n"
             "Every image that can be read is predicted; one that cannot is named on stderr, and the exit code is then 2.\n"
             "Example: cac_predict --run runs/mine photos/ extra.png --csv predictions.csv");
  cac::app::PredictOptions o;
  app.add_option("--run", o.run, "a run folder made by cac_train and evaluated by cac_eval")->required()->check(CLI::ExistingDirectory);
  app.add_option("images", o.inputs, "JPEG or PNG files, and folders (searched recursively)")->required();
  double threshold = 0;
  CLI::Option* threshold_opt = app.add_option("--threshold", threshold, "open-set score above which an image is unknown (default: the run's, "
                 "which accepts 95% of the validation images of the known classes, or the share given to cac_eval --accept; "
                 "negative only for the mls and energy scores)");
  app.add_option("--csv", o.csv, "also write path,prediction,class,score,verdict,error rows here (an image that "
                 "cannot be read: verdict error, and why)");
  app.add_option("--device", o.device, "auto, cpu or cuda")->check(cac::app::device_choice())->capture_default_str();
  app.add_option("--batch", o.batch, "images per forward pass")->check(CLI::Range(1, 4096))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (threshold_opt->count() > 0) o.threshold = threshold;
  try {
    return cac::app::run_predict(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cac_predict: error: %s\n", e.what());
    return 1;
  }
}
