#include "core/autograd.h"

#include "core/profiling.h"

#include <unordered_map>
#include <unordered_set>


namespace cac {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

bool needs_grad(const Tensor& t) { return t.defined() && (t.requires_grad() || t.grad_fn()); }

bool record(Tensor& out, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn) {
  if (!g_grad_enabled) return false;
  auto node = std::make_shared<Node>();
  bool any = false;
  for (const Tensor& in : inputs) {
    bool need = needs_grad(in);
    any |= need;
    node->needs.push_back(need);
    Edge e;
    if (need) {
      if (in.grad_fn()) e.node = in.grad_fn();
      else e.leaf = in.impl_ptr();
    }
    node->edges.push_back(std::move(e));
  }
  if (!any) return false;
  node->name = name;
  node->backward = std::move(fn);
  out.set_grad_fn(std::move(node));
  return true;
}

void run_backward(const Tensor& root, const Tensor& grad_root) {
  check_same_shape("backward", root, grad_root);
  if (!root.grad_fn()) {
    CAC_CHECK(root.requires_grad(), "backward: the tensor {} does not require grad and has no graph",
              root.str());
    Tensor g = root.grad();
    if (g.defined()) g.accumulate_(grad_root);
    else const_cast<Tensor&>(root).set_grad(grad_root.clone());
    return;
  }
  // Topological order by iterative post-order DFS over nodes. `order` owns the nodes: clearing a
  // node's edges after its backward would otherwise free producers not yet visited.
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack{{root.grad_fn(), 0}};
  seen.insert(root.grad_fn().get());
  while (!stack.empty()) {
    auto& top = stack.back();
    if (top.second < top.first->edges.size()) {
      std::shared_ptr<Node> child = top.first->edges[top.second++].node;
      if (child && seen.insert(child.get()).second) stack.emplace_back(std::move(child), 0);
    } else {
      order.push_back(std::move(top.first));
      stack.pop_back();
    }
  }
  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = grad_root;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = it->get();
    CAC_CHECK(node->backward, "backward: the graph through '{}' was already freed by an earlier "
              "backward() call", node->name);
    auto found = grads.find(node);
    if (found == grads.end()) continue;  // no gradient reached this node
    Tensor g = std::move(found->second);
    grads.erase(found);
    CAC_NVTX_RANGE(node->name);  // one range per op's backward in Nsight Systems
    std::vector<Tensor> in_grads = node->backward(g, node->needs);
    for (size_t i = 0; i < node->edges.size(); ++i) {
      if (!node->needs[i]) continue;
      const Tensor& gi = in_grads.at(i);
      CAC_CHECK(gi.defined(), "backward of '{}' returned no gradient for input {}", node->name, i);
      Edge& e = node->edges[i];
      if (e.node) {
        auto slot = grads.find(e.node.get());
        // Out-of-place sum: the first gradient may alias a tensor another edge also received.
        if (slot == grads.end()) grads.emplace(e.node.get(), gi);
        else {
          Tensor sum = slot->second.clone();
          sum.accumulate_(gi);
          slot->second = std::move(sum);
        }
      } else {
        Tensor leaf(e.leaf);
        CAC_CHECK(gi.shape() == leaf.shape(), "backward of '{}': gradient {} for input {} of shape {}",
                  node->name, shape_str(gi.shape()), i, shape_str(leaf.shape()));
        Tensor lg = leaf.grad();
        if (lg.defined()) lg.accumulate_(gi);
        else leaf.set_grad(gi.clone());
      }
    }
    node->backward = nullptr;  // frees saved tensors now, not when the outputs die
    node->edges.clear();
  }
}

}  // namespace cac
