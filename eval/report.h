#pragma once
// The evaluation report: one self-contained HTML file (inline SVG and CSS, no scripts, no network)
// with the metrics table, ROC and OSCR curves, open-set score histograms and training curves.
#include <string>
#include <utility>
#include <vector>

#include "eval/metrics.h"

namespace cac::eval {

// One line of a plot; dashed lines share the colour of the series before them (train vs val).
struct Series {
  std::string label;
  std::vector<double> x, y;
  bool dashed = false;
};

struct PlotSpec {
  std::string title, x_label, y_label;
  bool log_x = false;
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;  // the log axis needs x_min > 0
  bool diagonal = false;                              // the chance line of a ROC plot
};
// An SVG line chart. Points closer than half a pixel to the last drawn one are skipped, so curves
// with a point per test image stay small; x values outside the axis are clamped to its ends.
std::string svg_line_plot(const PlotSpec& spec, const std::vector<Series>& series);
// Two overlaid step histograms (known vs unknown scores) over shared bins; densities, so sets of
// different sizes compare.
std::string svg_histogram(const std::string& title, const std::vector<double>& known,
                          const std::vector<double>& unknown, int bins = 40);

// One evaluated (run, unknown set) pair.
struct ReportEntry {
  std::string run;          // the run folder
  std::string unknown_set;  // "unknown" for the standard benchmarks, else the set's name
  std::string method;       // cac | ce | cac-learnt
  std::string dataset;      // the benchmark (runs of different benchmarks are never averaged)
  std::vector<std::pair<std::string, double>> metrics;  // NaN = not defined for this entry
  std::vector<double> known_scores, unknown_scores;     // higher = more likely unknown
  std::vector<bool> known_correct;
  std::string metrics_csv;  // the run's metrics.csv text (training curves); may be empty
  // Open-set confusion (eval::open_set_confusion) at `threshold`; rows and columns are named by
  // class_names (the K known classes), then "unknown". Left empty, the report has no table for it.
  std::vector<std::string> class_names{};
  double threshold = 0, accept = 0.95;  // the threshold accepts the share `accept` of the validation knowns
  Confusion confusion{};
  // The test images' logits (rows of num_classes), the knowns' labels and the anchors (num_classes
  // x num_classes; empty for CE), for the picture of the logit space. Left empty: no picture.
  int num_classes = 0;
  std::vector<float> known_logits{}, unknown_logits{}, anchors{};
  std::vector<int64_t> known_labels{};
  // The unknown set class by class (eval::unknown_class_breakdown at `threshold`) and the names of
  // its labels (indexed by label; empty or too short: numbers). Left empty: no table.
  std::vector<UnknownClassBreakdown> unknown_classes{};
  std::vector<std::string> unknown_label_names{};
  std::string scorer = "cac";  // the open-set score (apps/posthoc.h) the scores and metrics are of
  // The run's own score (CAC: cac; CE: msp, as the protocol's baseline): the main tables, curves and
  // histograms. Own entries also carry the deployment's threshold, confusion and unknown-class tables,
  // which are of deploy_score (cac_eval --deploy-score; it may differ from the own score).
  bool own = true;
  std::string deploy_score{};
};

std::string entry_name(const ReportEntry& e);  // "run" or "run · set"

// Mean and (population) standard deviation of each metric over the entries of one benchmark,
// method, unknown set and score, e.g. over trials 0-4; NaN values are left out of a metric's count.
struct GroupSummary {
  std::string dataset, method, unknown_set, scorer;
  bool own = true;
  int runs = 0;
  std::vector<std::string> names;
  std::vector<double> mean, stdev;
};
std::vector<GroupSummary> summarise(const std::vector<ReportEntry>& entries, const std::vector<std::string>& names);

// An open-set confusion matrix as an HTML table: count and share of the row per cell, shaded by
// the share (blue where the prediction is right, red where it is wrong).
std::string html_confusion(const ReportEntry& e);

// The unknown classes of one entry as an HTML table, the hardest first (lowest AUROC): images,
// AUROC against the knowns, share accepted at the threshold and the known classes that accept them.
std::string html_unknown_classes(const ReportEntry& e);
// The name of unknown label `label` of the entry: its name where known, else the number.
std::string unknown_label_name(const ReportEntry& e, int64_t label);
// The name of the entry's known class k (network class index): class_names[k], else the number.
std::string known_class_name(const ReportEntry& e, size_t k);

// The logit space of one entry in its principal plane (fitted to the known test images): knowns
// coloured by class, unknowns grey, the anchors as crosses. At most `max_points` of each set are
// drawn (every k-th), so the SVG stays small for large test sets.
std::string svg_logit_space(const ReportEntry& e, size_t max_points = 800);

// The metrics table (entries, then the groups' mean +- std), curves, histograms, logit spaces,
// confusion matrices, training curves.
// `engine` (optional): what computed it (cac::engine_version()), shown under the title.
std::string html_report(const std::string& title, const std::vector<ReportEntry>& entries,
                        const std::vector<std::string>& metric_names, const std::string& command_line,
                        const std::string& engine = "");

std::string html_escape(const std::string& s);

}  // namespace cac::eval
