// cac_eval: open-set evaluation of cac_train runs (class-mean anchors, gamma scores, AUROC, OSCR...).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "apps/device_option.h"
#include "core/build_info.h"
#include "core/stop.h"
#include "apps/evaluate.h"

int main(int argc, char** argv) {
  CLI::App app{"cac_eval: evaluate cac_train runs on their known and unknown test sets"};
  app.set_version_flag("--version", [] { return cac::engine_version(); }, "the engine's version, source revision and libraries");
  app.footer("Also writes RUN/deploy.json (the deployed score, class-mean anchors, normalisation, threshold) for cac_predict.\n"
             "Example: cac_eval --run runs/fm-t0 --json eval.json --report report.html");
  cac::app::EvalOptions o;
  app.add_option("--run", o.runs, "a run folder made by cac_train (repeat for trials 0-4)")->required()->check(CLI::ExistingDirectory);
  app.add_option("--json", o.json_out, "write metrics per run and their mean/std here");
  app.add_option("--save-scores", o.scores_csv, "write one CSV row per test image (run, split, set, label, prediction, score)");
  app.add_option("--report", o.report_html, "write a self-contained HTML report (metrics, ROC/OSCR curves, score histograms, logit space, "
                 "confusion matrices, unknown classes, training curves)");
  app.add_option("--title", o.report_title, "the report's title");
  app.add_option("--arch", o.arch, "check that every run is this network (classifier32 or resnet18; read from config.json)")
      ->check(CLI::IsMember({"classifier32", "resnet18"}));
  app.add_option("--device", o.device, "auto, cpu or cuda")->check(cac::app::device_choice())->capture_default_str();
  app.add_option("--data-dir", o.data_dir, "dataset folder, if not where the run was trained")->check(CLI::ExistingDirectory);
  app.add_option("--unknown", o.unknowns, "[NAME=]SOURCE: also score every run against these unknowns (repeatable): a folder of "
                 "JPEG/PNG images (searched recursively), or DATASET:PATH for the test split of MNIST, FashionMNIST, "
                 "CIFAR10, CIFAR100, SVHN or TinyImageNet; each gets its own metrics, e.g. --unknown svhn:/data/svhn "
                 "--unknown ood=photos/");
  app.add_option("--benchmark", o.benchmark, "evaluate the runs as this benchmark: CIFAR+50 for CIFAR+10 runs (the "
                 "same trials' networks against the 50 unknown classes, as the CAC authors report CIFAR+50)")
      ->check(CLI::IsMember({"CIFAR+50"}));
  app.add_option("--scores", o.scores, "the open-set scores to report besides each run's own: all, or some of cac, msp, "
                 "mls, energy, knn, mahalanobis (comma-separated); each gets every metric, its scores.csv rows and a "
                 "row in the score table")->capture_default_str();
  app.add_option("--deploy-score", o.deploy_score, "the score deploy.json thresholds for cac_predict: auto (cac for CAC "
                 "runs, mls for CE runs), or one of cac, msp, mls, energy, knn, mahalanobis (knn and mahalanobis keep "
                 "what they need from the training images in RUN/deploy-SCORE.safetensors)")
      ->check(CLI::IsMember({"auto", "cac", "msp", "mls", "energy", "knn", "mahalanobis"}))->capture_default_str();
  app.add_option("--knn-k", o.knn_k, "k of the knn score (its k-th nearest training feature)")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--accept", o.accept, "the deployment threshold accepts this share of the validation images of the known "
                 "classes (RUN/deploy.json for cac_predict; the confusion matrices and unknown-class tables use it)")
      ->check(CLI::Range(1e-6, 1.0))->capture_default_str();
  app.add_option("--workers", o.workers, "data loader threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  std::string graph = "auto";
  app.add_option("--graph", graph, "auto: on a GPU the forward passes are recorded into a CUDA graph after two eager "
                 "batches and replayed; off: every batch eagerly")
      ->check(CLI::IsMember({"auto", "off"}))->capture_default_str();
  app.add_option("--precision", o.precision, "auto: each run in the precision it trained in (config.json); or fp32, "
                 "tf32 (TF32 tensor-core convolutions on a GPU) or bf16 (the convolution stack on bf16 channels-last "
                 "activations) for every run")
      ->check(CLI::IsMember({"auto", "fp32", "tf32", "bf16"}))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  o.graph = graph == "auto";
  for (int i = 0; i < argc; ++i) o.command_line += (i ? " " : "") + std::string(argv[i]);
  cac::install_stop_handlers();  // Ctrl-C or SIGTERM ends the current pass; nothing half-written stays
  try {
    return cac::app::run_eval(o);
  } catch (const cac::Stopped& e) {
    std::fprintf(stderr, "cac_eval: %s; nothing was written (deploy.json and the outputs are as they were)\n",
                 cac::stop_words(e.signal()));
    return cac::stop_exit_code(e.signal());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cac_eval: error: %s\n", e.what());
    return 1;
  }
}
