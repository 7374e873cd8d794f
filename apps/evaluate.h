#pragma once
// cac_eval as a library function: evaluates trained runs on their test sets (and extra unknown
// sets), prints the metrics table and writes the JSON, scores CSV, report and deploy.json.
#include <string>
#include <vector>

namespace cac::app {

struct EvalOptions {
  std::vector<std::string> runs;
  std::string json_out, scores_csv, device = "auto", data_dir;  // data_dir overrides the runs'
  std::string report_html, report_title, command_line;          // the report quotes the command
  std::string arch;  // when set, every run must have been trained with it
  int workers = 0;
  // The deployment threshold (deploy.json, the confusion matrices, the unknown-class table) accepts
  // this share of the validation images of the known classes.
  double accept = 0.95;
  // Extra unknown test sets for every run ([NAME=]SOURCE, data::parse_unknown_source), each scored
  // like the run's own unknowns (its own metrics, scores.csv rows, report sections).
  std::vector<std::string> unknowns;
  // Evaluate every run as this benchmark (cac_eval --benchmark): CIFAR+50 for CIFAR+10 runs, as the
  // CAC authors report it: the run's network, the same trial's CIFAR+50 unknowns (the same four
  // known classes). Empty: each run's own benchmark.
  std::string benchmark;
  // The post-hoc scores to report besides the run's own (apps/posthoc.h): "all" or a comma list.
  std::string scores = "all";
  // The score deploy.json thresholds for cac_predict ("auto": cac for CAC runs, mls for CE runs).
  std::string deploy_score = "auto";
  int knn_k = 50;  // k of the knn score (Sun et al. 2022), lowered to the training images where fewer
  // On a GPU, replay the forward passes from a CUDA graph (cac_eval --graph auto); false: eager.
  bool graph = true;
  // cac_eval --precision: "auto" evaluates each run in the precision it trained in (config.json),
  // else fp32, tf32 or bf16 for every run (the checkpoints are float32 whatever the run used).
  std::string precision = "auto";
};
// Evaluates each run's best checkpoint on its test sets (class-mean anchors for CAC), prints a
// table with mean and std over runs, writes the JSON and scores CSV when asked; exit code.
int run_eval(const EvalOptions& o);

}  // namespace cac::app
