#pragma once
// Reverse-mode autograd over a graph of nodes. Each differentiable op creates one Node holding
// edges to the producers of its inputs and a backward closure that captures only what backward
// needs. backward() walks the graph in reverse topological order, accumulates into leaf .grad and
// frees every closure (and so every saved tensor) as soon as it has run.
#include <functional>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace cac {

// grads[i] is the gradient for input i, or an undefined Tensor when needs[i] is false.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out,
                                                     const std::vector<bool>& needs)>;

struct Edge {
  std::shared_ptr<Node> node;        // producer of a non-leaf input
  std::shared_ptr<TensorImpl> leaf;  // or the leaf itself (requires_grad, no grad_fn)
};

struct Node {
  const char* name = "";
  std::vector<Edge> edges;
  std::vector<bool> needs;  // per input: does a gradient flow into it?
  BackwardFn backward;
};

bool grad_enabled();

// Evaluation scope: ops record no graph while one is alive (thread-local, nests).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when a gradient must flow into t (a leaf with requires_grad or an op result in a graph).
bool needs_grad(const Tensor& t);

// Attach a backward to `out` when grad mode is on and any input needs a gradient. Inputs may be
// undefined (optional bias). Returns true when a node was recorded.
bool record(Tensor& out, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn);

void run_backward(const Tensor& root, const Tensor& grad_root);

}  // namespace cac
