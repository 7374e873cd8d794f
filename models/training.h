#pragma once
// One training step of an open-set classifier (forward, loss, backward, SGD) and an evaluation
// forward, shared by cac_train, the benchmarks and the tests. The step returns device tensors and
// never reads them back: loss sums and correct counts accumulate on the device until the caller
// reads them (once per progress line).
#include <functional>
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
  // Zeroes the sums in place where they already have this dtype and device (a recorded step keeps
  // adding to the same device memory), else makes them.
  void reset(DType dtype, Device device);
  // Host read-out: mean loss parts and accuracy (synchronises).
  struct Means {
    double loss = 0, tuplet = 0, anchor = 0, accuracy = 0;
  };
  Means means() const;
};

// What became of a trainer's CUDA graphs (cac_train's log and tests).
struct GraphCounts {
  int64_t recorded = 0;  // graphs recorded (training step, evaluation forward; again if totals moved)
  int64_t replayed = 0;  // steps and evaluations run as a replay
  int64_t eager = 0;     // run eagerly while graphs were on (warm-up, other batch shapes)
};

class Trainer {
 public:
  // Builds the parameter slab over the model's trainable parameters (call after model->to()).
  Trainer(std::shared_ptr<OpenSetClassifier> model, Method method, double lambda, double momentum,
          double weight_decay);
  ~Trainer();

  // CUDA graphs (a model on the GPU): after `warmup` eager runs of a batch shape (cuDNN has found
  // its algorithms, the workspace has grown), the training step of that shape is recorded once
  // and replayed for every later batch of it; likewise the evaluation forward. Only the first shape
  // to get there is recorded (the full batch); others, such as an epoch's smaller last batch, run
  // eagerly: one step per epoch, not worth a second step's memory. Each batch is copied into the
  // graph's inputs; the learning rate and the dropout counters live on the device. `note` hears of
  // each recording and of a failed one, after which the trainer stays eager.
  void use_graphs(bool on, std::function<void(const std::string&)> note = {}, int warmup = 2);
  GraphCounts graph_counts() const;
  // Mixed precision (a model whose convolutions run on bf16): the optimizer keeps every
  // convolution weight's bf16 channels-last copy beside the float32 slab, written by its update
  // kernel, and training forwards read it instead of converting the weights. weights_loaded():
  // after weights are written other than by the optimizer (a checkpoint loaded into the model), so
  // the next forward reads them.
  void keep_bf16_weights();
  void weights_loaded() { sgd_.refresh_bf16_copy(); }
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
  void eager_step(const Tensor& images, const Tensor& labels, StepTotals& totals);
  void eager_evaluate(const Tensor& images, const Tensor& labels, StepTotals& totals);
  using Work = std::function<void(const Tensor&, const Tensor&)>;
  struct Recorded;
  struct Graphs;
  // `work` on this batch: replayed, recorded then replayed, or eagerly.
  void run(bool training, const Tensor& images, const Tensor& labels, StepTotals& totals, const Work& work);
  std::unique_ptr<Recorded> record(bool training, const Tensor& images, const Tensor& labels, StepTotals& totals,
                                   const Work& work);
  void replay(Recorded& r, const Tensor& images, const Tensor& labels, StepTotals& totals);
  std::vector<Tensor> host_counters() const;

  std::shared_ptr<OpenSetClassifier> model_;
  Method method_;
  double lambda_;
  double smoothing_ = 0;
  ParameterStore store_;
  SGD sgd_;
  std::unique_ptr<Graphs> graphs_;
};

}  // namespace cac
