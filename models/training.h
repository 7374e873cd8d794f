#pragma once
// One training step of an open-set classifier (forward, loss, backward, SGD) and an evaluation
// forward, shared by cac_train, the benchmarks and the tests. The step returns device tensors and
// never reads them back: loss sums and correct counts accumulate on the device until the caller
// reads them (once per progress line).
#include <memory>
#include <string>

#include "core/parameter_store.h"
#include "layers/optim.h"
#include "models/classifier32.h"

namespace cac {

enum class Method { CAC, CE, CACLearnt };
Method parse_method(const std::string& s);  // "cac" | "ce" | "cac-learnt"
const char* method_name(Method m);
// The encoder behind the open-set head: the paper's classifier32 or the CIFAR ResNet-18.
enum class Arch { Classifier32, ResNet18 };
Arch parse_arch(const std::string& s);  // "classifier32" | "resnet18"
const char* arch_name(Arch a);

struct StepTotals {
  Tensor loss_parts;  // [3] running sums of (loss, tuplet or CE, anchor), model dtype
  Tensor correct;     // i64 scalar running count
  int64_t samples = 0;
  int64_t steps = 0;
  void reset(DType dtype, Device device);
  // Host read-out: mean loss parts and accuracy (synchronises).
  struct Means {
    double loss = 0, tuplet = 0, anchor = 0, accuracy = 0;
  };
  Means means() const;
};

class Trainer {
 public:
  // Builds the parameter slab over the model's trainable parameters (call after model->to()).
  Trainer(std::shared_ptr<OpenSetClassifier> model, Method method, double lambda, double momentum,
          double weight_decay);
  // images [B, C, H, W] on the model's device, labels i64 [B] there too.
  void step(const Tensor& images, const Tensor& labels, double lr, StepTotals& totals);
  // Eval-mode forward without a graph; accumulates the same totals (no parameter change).
  void evaluate(const Tensor& images, const Tensor& labels, StepTotals& totals);

  OpenSetClassifier& model() { return *model_; }
  ParameterStore& store() { return store_; }
  SGD& optimizer() { return sgd_; }
  Method method() const { return method_; }
  // CE: train against (1 - eps) onehot + eps / K (label smoothing); 0 = plain cross-entropy.
  void set_label_smoothing(double eps) { smoothing_ = eps; }

 private:
  struct Forward {
    Tensor loss;   // scalar, differentiable
    Tensor parts;  // [3] (loss, tuplet or CE, anchor)
    Tensor pred;   // i64 [B]
  };
  Forward forward_and_loss(const Tensor& images, const Tensor& labels);
  void accumulate(const Forward& f, const Tensor& labels, StepTotals& totals);

  std::shared_ptr<OpenSetClassifier> model_;
  Method method_;
  double lambda_;
  double smoothing_ = 0;
  ParameterStore store_;
  SGD sgd_;
};

}  // namespace cac
