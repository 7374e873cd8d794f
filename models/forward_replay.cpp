#include "models/forward_replay.h"

#include <map>

#include "core/autograd.h"
#include "core/cuda_runtime.h"

namespace cac {

struct ForwardReplay::Impl {
  OpenSetClassifier& model;
  bool on;
  std::function<void(const std::string&)> note;
  int warmup;
  std::map<Shape, int> seen;  // eager batches of each shape
  std::unique_ptr<cuda::RecordedWork> work;
  Tensor input;                       // the graph's input: each batch is copied here
  OpenSetClassifier::Outputs output;  // the graph's outputs, rewritten by each replay
  std::string failure;
  int64_t replayed = 0;

  OpenSetClassifier::Outputs eager(const Tensor& images) {
    NoGradGuard no_grad;
    model.eval();
    return model.outputs(images);
  }
  bool record(const Tensor& images) {
    input = Tensor::empty(images.shape(), images.dtype(), images.device());
    try {
      work = std::make_unique<cuda::RecordedWork>([&] { output = eager(input); });
      return true;
    } catch (const std::exception& e) {
      failure = e.what();
      if (note) note("CUDA graphs: recording the forward failed, running eagerly from now on: " + failure);
      output = {};
      input = Tensor();
      return false;
    }
  }
};

ForwardReplay::ForwardReplay(OpenSetClassifier& model, bool on, std::function<void(const std::string&)> note,
                             int warmup)
    : impl_(std::make_unique<Impl>(Impl{model, on, std::move(note), std::max(0, warmup), {}, nullptr, {}, {}, {}, 0})) {}
ForwardReplay::~ForwardReplay() = default;

OpenSetClassifier::Outputs ForwardReplay::outputs(const Tensor& images) {
  Impl& m = *impl_;
  if (!m.on || !m.failure.empty() || images.device() != Device::CUDA) return m.eager(images);
  const bool recorded = m.work != nullptr;
  if (!recorded) {
    int& seen = m.seen[images.shape()];
    if (seen < m.warmup) {
      ++seen;
      return m.eager(images);
    }
    if (!m.record(images)) return m.eager(images);
  } else if (m.input.shape() != images.shape()) {
    return m.eager(images);
  }
  m.input.copy_from(images);  // device to device, stream-ordered
  m.work->replay();
  ++m.replayed;
  return m.output;
}

OpenSetClassifier& ForwardReplay::model() { return impl_->model; }
const std::string& ForwardReplay::failure() const { return impl_->failure; }
int64_t ForwardReplay::replayed() const { return impl_->replayed; }

}  // namespace cac
