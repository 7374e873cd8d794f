#pragma once
// The training set held on the device (issue 23): its uint8 images uploaded once, each epoch's
// order (the host Loader's, data::epoch_order) uploaded once per epoch, and every batch gathered
// and augmented there by one kernel (kernels/augment.h), so a step waits on no host thread and no
// host-to-device copy of float images. On the CPU the same class runs the kernel's CPU twin and
// gives the Loader's batches bit for bit (its test).
#include <string>

#include "data/loader.h"
#include "kernels/augment.h"

namespace cac::app {

// The augmentation kernel's settings for a loader's Augment (RandAugment aside) and seed.
kernels::AugmentSpec augment_spec(const data::Augment& a, uint64_t seed);

class DeviceBatches : public data::BatchSource {
 public:
  // The subset's source set goes to `dev` whole (the subset's rows are gathered from it), unless
  // `holding` (batches of another subset of the same source set, e.g. training beside validation)
  // holds it there already: then its copy is shared.
  DeviceBatches(const data::Subset& subset, const data::Augment& augment, const data::Loader::Options& options,
                Device dev, const DeviceBatches* holding = nullptr);
  void start_epoch(int epoch) override;
  bool next(data::Batch* out) override;
  int64_t batches_per_epoch() const override;
  // Bytes the set takes on the device (its images as uint8).
  static size_t device_bytes(const data::Subset& subset);
  // Why the set should stay with the host Loader ("" when it can go to `dev`): RandAugment (host
  // only), or a set that would take more than a quarter of the device's free memory.
  static std::string host_only_reason(const data::Subset& subset, const data::Augment& augment, Device dev);

 private:
  data::Subset subset_;
  kernels::AugmentSpec spec_;
  data::Loader::Options opt_;
  Device dev_;
  Tensor images_;                   // u8 [N, H, W, C] on dev_
  Tensor rows_, positions_, labels_;  // i64 [n] on dev_: this epoch's order
  int64_t next_ = 0;
};

}  // namespace cac::app
