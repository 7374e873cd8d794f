// Dispatch point of the batchnorm kernels: device -> CPU twin or CUDA kernel.
#include "kernels/batchnorm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

namespace cac::kernels {

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var, double momentum, double eps, BnActivation act, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  CAC_DISPATCH(x.device(), batchnorm_forward_train, x, gamma, beta, running_mean, running_var, momentum, eps, act, y, save_mean, save_invstd);
}
void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean, const Tensor& running_var, double eps, BnActivation act, Tensor& y) {
  CAC_DISPATCH(x.device(), batchnorm_forward_eval, x, gamma, beta, running_mean, running_var, eps, act, y);
}
void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& invstd, const Tensor& gy, BnActivation act, bool training, Tensor* gx, Tensor& ggamma, Tensor& gbeta) {
  CAC_DISPATCH(x.device(), batchnorm_backward, x, gamma, beta, mean, invstd, gy, act, training, gx, ggamma, gbeta);
}

BnSlicePlan batchnorm_single_plan(int64_t units, int channels, int resident, int threads, int per_thread) {
  BnSlicePlan p;
  p.per_thread = per_thread;
  p.splits = int((units + int64_t(threads) * per_thread - 1) / (int64_t(threads) * per_thread));
  p.fits = p.splits >= 1 && p.splits <= resident;
  p.groups = p.fits ? std::min(channels, resident / p.splits) : 0;
  return p;
}

BnSlicePlan batchnorm_reread_plan(int64_t units, int channels, int resident, int threads) {
  BnSlicePlan p;
  if (units <= 0 || channels <= 0 || resident <= 0) return p;
  const int64_t rows = (units + threads - 1) / threads;  // units per thread of a one-slice channel
  const int64_t want = std::clamp<int64_t>(resident / channels, 1, rows);
  p.per_thread = int((rows + want - 1) / want);
  p.splits = int((rows + p.per_thread - 1) / p.per_thread);
  p.groups = std::min(channels, resident / p.splits);
  p.fits = true;
  return p;
}

BnClusterPlan batchnorm_cluster_plan(int64_t units, int threads, int target, int max_cluster, int max_per_thread,
                                     int held) {
  BnClusterPlan p;
  if (units <= 0 || threads <= 0 || target <= 0 || max_cluster <= 0 || held < 0) return p;
  p.cluster = 1;
  while (p.cluster * 2 <= max_cluster && int64_t(p.cluster) * threads * target < units) p.cluster *= 2;
  const int64_t per_block = int64_t(p.cluster) * threads;
  // The kernel indexes a channel's units with int.
  const int64_t per_thread = (units + per_block - 1) / per_block;
  if (per_thread * per_block >= (int64_t(1) << 31)) return BnClusterPlan{};
  p.per_thread = int(per_thread);
  p.held = held > 0 ? std::min(held, p.per_thread) : p.per_thread;
  p.fits = p.held <= max_per_thread;
  return p;
}

namespace {
BnTuning g_tuning;  // read by the CUDA launches (kernels/cuda/batchnorm.cu)
int g_last_launches = 0;
}
void set_batchnorm_tuning(const BnTuning& tuning) {
  CAC_CHECK(tuning.splits >= 0, "set_batchnorm_tuning: splits {} is negative", tuning.splits);
  const int u = tuning.units_per_thread;
  // The unit counts each kernel has an instantiation or a plan for.
  bool known = u == 0 || u == 2 || u == 4 || u == 8;
  if (tuning.strategy == BnStrategy::SingleLaunchReread) known = known || u == 12;
  if (tuning.strategy == BnStrategy::Cluster) known = u == 0 || u == 4 || u == 8 || u == 16;
  CAC_CHECK(known,
            "set_batchnorm_tuning: units_per_thread {} is not 0, 2, 4 or 8 (or 12 with SingleLaunchReread; "
            "0, 4, 8 or 16 with Cluster)", u);
  CAC_CHECK(tuning.cluster_held >= 0, "set_batchnorm_tuning: cluster_held {} is negative", tuning.cluster_held);
  CAC_CHECK(tuning.pipeline_stages >= 0 && tuning.pipeline_stages <= 2,
            "set_batchnorm_tuning: pipeline_stages {} is not 0, 1 or 2", tuning.pipeline_stages);
  g_tuning = tuning;
}
BnTuning batchnorm_tuning() { return g_tuning; }
int batchnorm_last_launches() { return g_last_launches; }
void note_batchnorm_launches(int launches) { g_last_launches = launches; }

const char* bn_strategy_name(BnStrategy s) {
  switch (s) {
    case BnStrategy::Auto: return "auto";
    case BnStrategy::TwoPass: return "two-pass";
    case BnStrategy::SingleLaunch: return "single";
    case BnStrategy::FlatTwoPass: return "flat";
    case BnStrategy::SingleLaunchReread: return "reread";
    case BnStrategy::Cluster: return "cluster";
  }
  return "?";
}
namespace {
BnStrategy g_last_strategy = BnStrategy::Auto;
std::vector<BnMeasuredChoice> g_choices;
}  // namespace
BnStrategy batchnorm_last_strategy() { return g_last_strategy; }
void note_batchnorm_strategy(BnStrategy strategy) { g_last_strategy = strategy; }

int pick_measured(const std::vector<double>& ms, double slack) {
  int best = -1;
  for (size_t i = 0; i < ms.size(); ++i)
    if (std::isfinite(ms[i]) && (best < 0 || ms[i] < ms[size_t(best)])) best = int(i);
  if (best < 0) return -1;
  for (size_t i = 0; i < ms.size(); ++i)
    if (std::isfinite(ms[i]) && ms[i] <= ms[size_t(best)] * (1.0 + slack)) return int(i);
  return best;
}

bool agrees_with_reference(const std::vector<float>& ref, const std::vector<float>& got, double rel) {
  if (ref.size() != got.size()) return false;
  double scale = 0;
  for (float r : ref) scale = std::max(scale, double(std::fabs(r)));
  const double tol = rel * (1.0 + scale);
  for (size_t i = 0; i < ref.size(); ++i)
    if (!(std::fabs(double(got[i]) - double(ref[i])) <= tol)) return false;  // NaN fails too
  return true;
}

std::vector<BnMeasuredChoice> batchnorm_measured_choices() { return g_choices; }
void note_batchnorm_measured_choice(const BnMeasuredChoice& choice) {
  g_choices.push_back(choice);
  if (const char* v = std::getenv("CAC_BN_VERBOSE"); v && std::string(v) == "1")
    fmt::print(stderr, "cac: {}\n", describe(choice));
  for (const std::string& bad : choice.disagreeing) fmt::print(stderr, "cac: warning: {}\n", disagreement(choice, bad));
}
std::string disagreement(const BnMeasuredChoice& c, const std::string& candidate) {
  return fmt::format("batch norm {} {}x{}x{}x{}: candidate '{}' computed a different result from {} and is not "
                     "used (a kernel bug: please report it with this line and the GPU model)",
                     c.direction, c.N, c.C, c.H, c.W, candidate, c.reference);
}
std::string describe(const BnMeasuredChoice& c) {
  std::string times;
  for (const auto& [label, ms] : c.times_ms) {
    const bool wrong = std::find(c.disagreeing.begin(), c.disagreeing.end(), label) != c.disagreeing.end();
    times += fmt::format("{}{} {}", times.empty() ? "" : ", ", label,
                         wrong ? std::string("WRONG RESULT")
                               : std::isfinite(ms) ? fmt::format("{:.2f} us", ms * 1e3) : std::string("n/a"));
  }
  return fmt::format("batch norm {} {}x{}x{}x{} -> {} ({})", c.direction, c.N, c.C, c.H, c.W, c.chosen, times);
}

}  // namespace cac::kernels
