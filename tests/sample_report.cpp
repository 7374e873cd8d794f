// Writes an evaluation report from synthetic scores (two runs, CAC and CE), for the browser render
// check (scripts/render-report.sh) without training anything.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/rng.h"
#include "eval/report.h"
#include "models/checkpoint.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT.html\n", argv[0]);
    return 2;
  }
  using namespace cac::eval;
  std::vector<ReportEntry> entries;
  for (int r = 0; r < 2; ++r) {
    ReportEntry e;
    e.run = r == 0 ? "runs/cac-trial0" : "runs/ce-trial0";
    e.unknown_set = "unknown";
    e.method = r == 0 ? "cac" : "ce";
    cac::Generator g(uint64_t(r) + 1);
    for (int i = 0; i < 2000; ++i) {
      e.known_scores.push_back(std::abs(g.normal()));
      e.known_correct.push_back(g.uniform() < 0.9);
    }
    for (int i = 0; i < 1500; ++i) e.unknown_scores.push_back(std::abs(g.normal()) + 0.8 + 0.3 * r);
    std::vector<bool> c = e.known_correct;
    const auto curve = oscr_curve(e.known_scores, c, e.unknown_scores);
    e.metrics = {{"accuracy", 0.9}, {"auroc", auroc(e.known_scores, e.unknown_scores)}, {"oscr", oscr_area(curve)}};
    e.metrics_csv = "epoch,train_loss,val_loss,train_acc,val_acc\n";
    for (int ep = 1; ep <= 10; ++ep)
      e.metrics_csv += std::to_string(ep) + "," + std::to_string(2.0 / ep) + "," + std::to_string(2.2 / ep) + "," +
                       std::to_string(1 - 0.5 / ep) + "," + std::to_string(0.95 - 0.5 / ep) + "\n";
    e.class_names = {"T-shirt", "trouser", "pullover", "dress", "coat", "sandal"};
    e.threshold = 1.96;
    e.confusion.assign(7, std::vector<int64_t>(7, 0));
    for (int t = 0; t < 7; ++t)
      for (int p = 0; p < 7; ++p) e.confusion[size_t(t)][size_t(p)] = t == p ? 300 - 40 * r : (t + p + r) % 4 * 7;
    // Logits: knowns scattered around their class's anchor 6 e_k, unknowns nearer the origin.
    e.num_classes = 6;
    for (int i = 0; i < 600; ++i) {
      e.known_labels.push_back(i % 6);
      for (int k = 0; k < 6; ++k) e.known_logits.push_back(float((k == i % 6 ? 6 : 0) + 1.2 * g.normal()));
    }
    for (int i = 0; i < 400; ++i)
      for (int k = 0; k < 6; ++k) e.unknown_logits.push_back(float(1.5 + 1.5 * g.normal()));
    for (int k = 0; k < 36; ++k) e.anchors.push_back(k % 7 == 0 ? 6.f : 0.f);
    // The unknowns as four classes (labels 6-9), the breakdown of the synthetic scores.
    std::vector<int64_t> labels, pred;
    for (size_t i = 0; i < e.unknown_scores.size(); ++i) labels.push_back(6 + int64_t(i % 4)), pred.push_back(int64_t(i % 6));
    e.unknown_classes = unknown_class_breakdown(6, e.known_scores, labels, pred, e.unknown_scores, e.threshold);
    e.unknown_label_names = {"", "", "", "", "", "", "shirt", "sneaker", "bag", "ankle boot"};
    entries.push_back(e);
  }
  cac::write_file_atomic(argv[1], html_report("Sample report (synthetic scores)", entries, {"accuracy", "auroc", "oscr"},
                                              "sample_report"));
  return 0;
}
