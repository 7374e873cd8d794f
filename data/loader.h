#pragma once
// The prefetching loader: worker threads turn samples into normalised float batches ahead of the
// consumer, into a bounded ring of host buffers (page-locked when the target is a CUDA device);
// the consumer receives batches in order, on the host or already on the device (copied on the
// copy stream, no host wait). Batches are deterministic for a seed whatever the thread count.
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/cuda_runtime.h"
#include "data/dataset.h"
#include "data/transforms.h"

namespace cac::data {

struct Batch {
  Tensor images;  // f32 [B, C, S, S] on the loader's device
  Tensor labels;  // i64 [B] on the loader's device
  int64_t number = 0;  // batch index within the epoch
};

// The order of an epoch's samples: 0..n-1, shuffled by (seed, epoch) when asked.
std::vector<int64_t> epoch_order(int64_t n, bool shuffle, uint64_t seed, int epoch);

// Where the training loop takes its batches from: the Loader below (host threads), or the set held
// on the device and augmented there (apps/device_batches.h).
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Starts epoch `epoch`: its order and augmentation draws depend on it.
  virtual void start_epoch(int epoch) = 0;
  // The next batch of the epoch, or false at its end.
  virtual bool next(Batch* out) = 0;
  virtual int64_t batches_per_epoch() const = 0;
};

class Loader : public BatchSource {
 public:
  struct Options {
    int batch = 128;
    bool shuffle = true;
    bool drop_last = false;
    uint64_t seed = 0;
    int workers = 0;   // 0: all cores
    int prefetch = 4;  // batches in flight (ring size)
    Device device = Device::CPU;
  };
  Loader(Subset subset, Augment augment, Options options);
  ~Loader();  // stops the workers, also mid-epoch
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts epoch `epoch` (shuffle order and augmentation draws depend on it). Any batches of an
  // unfinished previous epoch are dropped.
  void start_epoch(int epoch) override;
  // The next batch of the epoch, or false at its end. A batch's host buffer is reused once next()
  // is called again, so a CPU batch is valid until then (device batches stay valid).
  bool next(Batch* out) override;
  int64_t batches_per_epoch() const override;
  int64_t size() const { return subset_.size(); }

 private:
  struct Slot {
    std::shared_ptr<Storage> images, labels;  // host (pinned for CUDA)
    int64_t batch = -1;
    bool ready = false;
    cuda::CopyHandle in_flight;  // device copy still reading this slot
  };
  void worker();
  void fill(Slot& slot, int64_t batch, int epoch, const std::vector<int64_t>& order);

  Subset subset_;
  Augment augment_;
  Options opt_;
  int channels_;
  std::vector<Slot> slots_;
  std::mutex mu_;
  std::condition_variable work_cv_, ready_cv_;
  std::shared_ptr<const std::vector<int64_t>> order_;
  int epoch_ = -1;
  int64_t generation_ = 0;  // bumps on start_epoch so stale work is discarded
  int64_t n_batches_ = 0, next_fill_ = 0, returned_ = 0;
  int busy_ = 0;
  bool stop_ = false;
  std::string error_;
  std::vector<std::thread> threads_;
};

}  // namespace cac::data
