#pragma once
// The evaluation forward (model.outputs in eval mode, no autograd) of fixed-size batches replayed
// from a CUDA graph, as the Trainer does for validation: cac_eval's passes over its sets. After
// `warmup` eager batches of a shape the forward is recorded once; later batches of that shape are
// copied into the graph's input and replayed; other shapes (a set's smaller last batch) run
// eagerly. Off, on the CPU, or after a failed recording (`note` hears why; failure() keeps it):
// eager throughout.
#include <functional>
#include <memory>
#include <string>

#include "models/classifier32.h"

namespace cac {

class ForwardReplay {
 public:
  ForwardReplay(OpenSetClassifier& model, bool on, std::function<void(const std::string&)> note = {},
                int warmup = 2);
  ~ForwardReplay();
  ForwardReplay(const ForwardReplay&) = delete;
  ForwardReplay& operator=(const ForwardReplay&) = delete;
  // A replay's outputs are the graph's own tensors: read them before the next call.
  OpenSetClassifier::Outputs outputs(const Tensor& images);
  OpenSetClassifier& model();
  const std::string& failure() const;
  int64_t replayed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cac
