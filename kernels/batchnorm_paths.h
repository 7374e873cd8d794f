#pragma once
// How the CUDA batch-norm training kernels are chosen, in host code that is tested without a GPU:
// the paths, the launch geometry of each, and the rule that picks one per shape. Read by the CUDA
// backend, its tests and dev/bn_lab; the layers and programs include kernels/batchnorm.h only.
#include <cstdint>

#include "kernels/batchnorm.h"

namespace cac::kernels {

// The training kernels' designs (kernels/cuda/batchnorm_kernels.cuh describes each).
// Rule: what the library picks by shape (batchnorm_forward_rule / batchnorm_backward_rule).
// Reread (forward) and SingleLaunch (backward): one cooperative launch, a barrier per channel.
// Cluster (forward, sm_90+): a thread-block cluster per channel. TwoPass: sliced reduction, then
// the elementwise pass. Flat: the two-pass kernels over whole planes, for planes without whole
// float4s and unaligned views.
enum class BnPath { Rule, Reread, Cluster, SingleLaunch, TwoPass, Flat };
const char* bn_path_name(BnPath p);
// Kernel launches of a path that ran (the backward without dx reduces in one launch).
int bn_launches(BnPath ran, bool needs_dx = true);

// What the rule needs to know of a training forward on this GPU.
struct BnForwardFacts {
  int64_t units = 0;             // float4s per channel; 0: no 16-byte units (odd planes, unaligned views)
  int64_t activation_bytes = 0;  // x
  int64_t on_chip_bytes = 0;     // shared memory of all SMs together
  bool cluster_fits = false;     // the cluster forward can hold a channel on this GPU (sm_90+)
  bool reread_fits = false;      // the reread's cooperative launch can run here
};
// Flat without 16-byte units; the cluster forward where the whole activation fits on chip at once
// (one wave, no global barrier); the reread where it does not (one round, the excess re-read from
// L2); two passes where neither can run. From the H100 measurements in docs/performance.md: the
// reread wins at 128x64x32x32 (33.5 MB, more than the 30.8 MB of shared memory), the cluster at every
// smaller activation of classifier32 and ResNet-18.
BnPath batchnorm_forward_rule(const BnForwardFacts& f);
// The backward has no rule of its own: the single launch wherever a channel's slices fit the
// co-resident blocks (every network shape on an H100), else two passes; flat without 16-byte units.

// Launch geometry of the single-launch kernels. A channel of `units` float4s is cut into `splits`
// slices of threads x per_thread units (thread t of slice s holds units s*threads*per_thread + t +
// i*threads, i < per_thread); grid = splits x groups blocks, and block group g walks channels g,
// g + groups, ... Every block of a channel must be co-resident (`resident` blocks fit the GPU at
// once); where they cannot be, `fits` is false.
struct BnSlicePlan {
  int splits = 0, per_thread = 0, groups = 0;
  bool fits = false;
};
// The backward single launch: per_thread fixed (the kernel's U), as many slices as that takes.
BnSlicePlan batchnorm_single_plan(int64_t units, int channels, int resident, int threads, int per_thread);
// The reread forward: as many slices per channel as the co-resident blocks allow (one round; at
// least one slice per channel, when channels > resident blocks walk channels), the fewest units
// per thread that covers the channel with them.
BnSlicePlan batchnorm_reread_plan(int64_t units, int channels, int resident, int threads);
// The cluster forward: a channel of `units` float4s on `cluster` blocks (a power of two, the
// smallest that keeps per_thread <= target, at most max_cluster), thread t of block rank r holding
// units r*threads*per_thread + t + i*threads, i < per_thread; fits = per_thread <= max_per_thread
// (what one block's shared memory holds). With held > 0 a thread keeps only its first min(held,
// per_thread) units in shared memory (`held`) and reads the others twice; fits = held <=
// max_per_thread, whatever the channel's size. held = 0: all of them.
struct BnClusterPlan {
  int cluster = 0, per_thread = 0, held = 0;
  bool fits = false;
};
BnClusterPlan batchnorm_cluster_plan(int64_t units, int threads, int target, int max_cluster, int max_per_thread,
                                     int held = 0);

// The training kernels on CUDA tensors with the path named (tests, dev/bn_lab): `want` runs where
// it can at this shape on this GPU, else the path the rule falls back to (Cluster and Reread: two
// passes; anything without 16-byte units: Flat). Rule is what batchnorm_forward_train and
// batchnorm_backward run. Returns the path that ran. A build without CUDA kernels throws.
CAC_DECLARE_CUDA_ONLY(BnPath batchnorm_forward_train_via(BnPath want, const Tensor& x, const Tensor& gamma,
                                                        const Tensor& beta, Tensor& running_mean,
                                                        Tensor& running_var, double momentum, double eps,
                                                        BnActivation act, Tensor& y, Tensor& save_mean,
                                                        Tensor& save_invstd))
CAC_DECLARE_CUDA_ONLY(BnPath batchnorm_backward_via(BnPath want, const Tensor& x, const Tensor& gamma,
                                                   const Tensor& beta, const Tensor& mean, const Tensor& invstd,
                                                   const Tensor& gy, BnActivation act, bool training, Tensor* gx,
                                                   Tensor& ggamma, Tensor& gbeta))

}  // namespace cac::kernels
