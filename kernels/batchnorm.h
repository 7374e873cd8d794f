#pragma once
// BatchNorm2d with PyTorch's semantics: batch statistics with the biased variance for normalising,
// running statistics updated with the unbiased variance and `momentum`; eval uses the running ones.
#include <string>
#include <utility>
#include <vector>

#include "kernels/dispatch.h"

namespace cac::kernels {

// An optional LeakyReLU fused after the normalisation (slope 0 = ReLU). Fusing saves a full pass
// over the activation in each direction; backward recomputes the pre-activation
// x * gamma*invstd + (beta - mean*gamma*invstd) with the forward's expression to get the mask, so
// it reads neither the output nor a saved mask.
struct BnActivation {
  bool leaky = false;
  double slope = 0.0;
};

// save_mean / save_invstd: [C], what backward needs (invstd = 1/sqrt(var_biased + eps)).
CAC_DECLARE_KERNEL(void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                Tensor& running_mean, Tensor& running_var,
                                                double momentum, double eps, BnActivation act, Tensor& y,
                                                Tensor& save_mean, Tensor& save_invstd))
CAC_DECLARE_KERNEL(void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                               const Tensor& running_mean, const Tensor& running_var,
                                               double eps, BnActivation act, Tensor& y))
// training: mean/invstd are the saved batch statistics and the batch-statistics gradient is used;
// otherwise they are the running statistics (constants) and gx = gy * gamma * invstd.
// beta is read only when act.leaky (to rebuild the activation's mask).
CAC_DECLARE_KERNEL(void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                           const Tensor& mean, const Tensor& invstd, const Tensor& gy,
                                           BnActivation act, bool training, Tensor* gx,
                                           Tensor& ggamma, Tensor& gbeta))

// How the CUDA training kernels (forward statistics + normalise; backward sums + dx) are launched.
// SingleLaunch: one cooperative launch per direction; each block keeps its slice of a channel on
//   chip (forward: shared memory, backward: registers), the blocks of a channel meet at a
//   per-channel barrier for the statistics, then write from chip, so the activation crosses DRAM
//   once. Falls back to TwoPass where a channel's slices do not fit the co-resident blocks.
// TwoPass: a reduction launch over slices of each channel (the last block of a channel finalises
//   it), then an elementwise launch that visits the slices in reverse so its re-read of the
//   activation starts with what is still in L2.
// FlatTwoPass: per-channel reduction, then a grid-stride elementwise pass in memory order; the only
//   path for planes without whole float4s (HW % 4 != 0) or unaligned views.
// SingleLaunchReread (forward; its backward is SingleLaunch's): one cooperative launch in a single
//   round even where the activation exceeds the chip: each thread holds `units_per_thread` float4s
//   of its slice in shared memory and reads the rest twice, the second time from L2 (on an H100 the
//   fastest forward at 128x64x32x32, 35.5 us with L2 hints; docs/performance.md).
// Cluster (forward, sm_90+; its backward is SingleLaunch's): a thread-block cluster per channel,
//   its blocks holding the channel's slices in shared memory; the statistics meet at the cluster's
//   hardware barrier through distributed shared memory, not at a barrier in global memory, and the
//   clusters are independent, so no co-residency of the grid is needed (on an H100 the fastest
//   forward at the smaller activations of classifier32 and ResNet-18; docs/performance.md).
//   With BnTuning::cluster_held a block keeps only that many float4s per thread in shared memory
//   and reads the rest twice (the second time from L2, right after the cluster's barrier), so the
//   blocks are small enough for the whole grid to be resident at once and any channel fits.
//   Falls back to TwoPass where the device or the build has no clusters or a channel exceeds 16
//   blocks' shared memory.
// Auto (default): the first call at each shape and direction times the candidates on the real
//   buffers (forward: SingleLaunch with and without prefetch, SingleLaunchReread holding 12 or 8
//   units, with and without L2 hints, Cluster at 16 and 8 units per thread, Cluster at 16 units
//   holding 12 or 8, TwoPass;
//   backward: SingleLaunch, TwoPass), as cudnnFind does for convolutions, and every later call runs
//   the fastest. That first call waits for the GPU once; inside stream capture, with
//   BnTuning::measure off or with CAC_BN_MEASURE=0, Auto is SingleLaunch. The CPU twins ignore
//   all of this.
enum class BnStrategy { Auto, TwoPass, SingleLaunch, FlatTwoPass, SingleLaunchReread, Cluster };
const char* bn_strategy_name(BnStrategy s);
struct BnTuning {
  BnStrategy strategy = BnStrategy::Auto;
  int splits = 0;            // FlatTwoPass: blocks per channel (clamped to N); 0 = from the SM count
  int units_per_thread = 0;  // TwoPass / SingleLaunch: float4s per thread (2, 4 or 8); 0 = default.
                             // SingleLaunchReread: float4s held in shared memory (2, 4, 8 or 12;
                             // default 12 = 48 KiB per block, 4 blocks per SM).
                             // Cluster: the most float4s per thread before the cluster grows
                             // (4, 8 or 16; default 16 = 64 KiB per block)
  int pipeline_stages = 0;   // SingleLaunch forward: 2 = prefetch the next channel's slice during
                             // the current one's barrier (slower on an H100); 0 or 1 = no prefetch
  bool l2_hints = false;     // SingleLaunchReread: the part held in shared memory is loaded with an
                             // L2 evict-first policy, sparing the re-read part (37.3 -> 35.5 us, H100)
  bool measure = true;       // Auto: time the candidates once per shape (false: SingleLaunch, fixed)
  int cluster_held = 0;      // Cluster: float4s per thread kept in shared memory, the rest read twice
                             // (0 = all of them)
};
// For benchmarks (`cac_bench kernels --bn-sweep`) and tests; process-wide, not thread-safe.
void set_batchnorm_tuning(const BnTuning& tuning);
BnTuning batchnorm_tuning();
// Launch geometry of the single-launch kernels, a host-side computation (unit-tested without a GPU).
// A channel of `units` float4s is cut into `splits` slices of threads x per_thread units (thread t
// of slice s holds units s*threads*per_thread + t + i*threads, i < per_thread); grid = splits x
// groups blocks, and block group g walks channels g, g + groups, ... Every block of a channel must
// be co-resident (`resident` blocks fit the GPU at once); where they cannot be, `fits` is false.
struct BnSlicePlan {
  int splits = 0, per_thread = 0, groups = 0;
  bool fits = false;
};
// SingleLaunch: per_thread fixed (the kernel's U), as many slices as that takes.
BnSlicePlan batchnorm_single_plan(int64_t units, int channels, int resident, int threads, int per_thread);
// SingleLaunchReread: as many slices per channel as the co-resident blocks allow (one round; at
// least one slice per channel, when channels > resident blocks walk channels), the fewest units
// per thread that covers the channel with them.
BnSlicePlan batchnorm_reread_plan(int64_t units, int channels, int resident, int threads);
// Cluster: a channel of `units` float4s on `cluster` blocks (a power of two, the smallest that
// keeps per_thread <= target, at most max_cluster), thread t of block rank r holding units
// r*threads*per_thread + t + i*threads, i < per_thread; fits = per_thread <= max_per_thread (what
// one block's shared memory holds). With held > 0 a thread keeps only its first min(held,
// per_thread) units in shared memory (`held`) and reads the others twice; fits = held <=
// max_per_thread, whatever the channel's size. held = 0: all of them.
struct BnClusterPlan {
  int cluster = 0, per_thread = 0, held = 0;
  bool fits = false;
};
BnClusterPlan batchnorm_cluster_plan(int64_t units, int threads, int target, int max_cluster, int max_per_thread,
                                     int held = 0);

// Kernel launches of the last CUDA training forward or backward (1 or 2), for the benchmark table.
int batchnorm_last_launches();
void note_batchnorm_launches(int launches);  // called by the CUDA launchers
// The strategy the last CUDA training forward or backward ran (after Auto's choice and fallbacks).
BnStrategy batchnorm_last_strategy();
void note_batchnorm_strategy(BnStrategy strategy);

// Auto's measured choice: the first candidate (they are listed in order of preference) whose time
// is within `slack` (relative) of the fastest, so that timing noise does not flip the choice between
// candidates that are equally fast; a time that is not finite marks a candidate that could not run
// (e.g. its blocks do not fit the GPU). Returns -1 when none ran.
int pick_measured(const std::vector<double>& ms, double slack);
// Auto's check of each candidate's outputs against the CPU twin's on the same inputs (measured
// once per shape, before the candidate's time counts): every element finite and within
// rel * (1 + max|ref|). They differ only in rounding (about 1e-6 relative); a wrong index or a
// race is of the order of max|ref|. A candidate that disagrees is never chosen, and is reported on
// stderr as the bug it is.
bool agrees_with_reference(const std::vector<float>& ref, const std::vector<float>& got, double rel = 1e-3);
// One measured choice, kept for the benchmark's report and CAC_BN_VERBOSE=1 (printed as it is made).
struct BnMeasuredChoice {
  std::string direction;  // "forward", "backward" or "backward without dx"
  int N = 0, C = 0, H = 0, W = 0;
  std::vector<std::pair<std::string, double>> times_ms;  // candidate label -> median ms (inf: did not run)
  std::string chosen;
  std::string reference;                 // what the candidates were checked against ("the CPU twin")
  std::vector<std::string> disagreeing;  // candidates whose outputs failed agrees_with_reference
};
std::vector<BnMeasuredChoice> batchnorm_measured_choices();
void note_batchnorm_measured_choice(const BnMeasuredChoice& choice);
std::string describe(const BnMeasuredChoice& choice);
// The warning printed (always, on stderr) for each of choice.disagreeing.
std::string disagreement(const BnMeasuredChoice& choice, const std::string& candidate);

}  // namespace cac::kernels
