#include "models/training.h"

#include "core/autograd.h"
#include "core/profiling.h"
#include "kernels/losses.h"
#include "layers/ops.h"

namespace cac {

Method parse_method(const std::string& s) {
  if (s == "cac") return Method::CAC;
  if (s == "ce") return Method::CE;
  if (s == "cac-learnt") return Method::CACLearnt;
  fail("unknown method '{}': expected cac, ce or cac-learnt", s);
}

Arch parse_arch(const std::string& s) {
  if (s == "classifier32") return Arch::Classifier32;
  if (s == "resnet18") return Arch::ResNet18;
  fail("unknown architecture '{}': expected classifier32 or resnet18", s);
}

const char* arch_name(Arch a) { return a == Arch::ResNet18 ? "resnet18" : "classifier32"; }

const char* method_name(Method m) {
  switch (m) {
    case Method::CAC: return "cac";
    case Method::CE: return "ce";
    case Method::CACLearnt: return "cac-learnt";
  }
  return "?";
}

void StepTotals::reset(DType dtype, Device device) {
  loss_parts = Tensor::zeros({3}, dtype, device);
  correct = Tensor::zeros({}, DType::I64, device);
  samples = steps = 0;
}

StepTotals::Means StepTotals::means() const {
  Means m;
  if (steps == 0) return m;
  std::vector<double> p = loss_parts.to(DType::F64).to_vector<double>();
  m.loss = p[0] / double(steps);
  m.tuplet = p[1] / double(steps);
  m.anchor = p[2] / double(steps);
  m.accuracy = samples ? correct.item() / double(samples) : 0.0;
  return m;
}

Trainer::Trainer(std::shared_ptr<OpenSetClassifier> model, Method method, double lambda,
                 double momentum, double weight_decay)
    : model_(std::move(model)),
      method_(method),
      lambda_(lambda),
      store_(model_->trainable_parameters()),
      sgd_(store_, momentum, weight_decay) {}

Trainer::Forward Trainer::forward_and_loss(const Tensor& images, const Tensor& labels) {
  Forward f;
  Tensor logits = model_->logits(images);
  if (method_ == Method::CE) {
    f.loss = ops::cross_entropy(logits, labels, smoothing_);
    // parts = (loss, loss, 0): CE stands in the tuplet slot, no anchor term.
    f.parts = Tensor::zeros({3}, f.loss.dtype(), f.loss.device());
    f.parts.rows(0, 1).view({}).accumulate_(f.loss.detach());
    f.parts.rows(1, 2).view({}).accumulate_(f.loss.detach());
    f.pred = ops::argmax(logits);  // the CE baseline predicts the largest logit
    return f;
  }
  // CAC: fused distance + loss; the prediction is the nearest anchor.
  ops::CacHead head = ops::cac_head(logits, model_->anchors, labels, lambda_);
  f.loss = head.loss;
  f.parts = head.parts;
  f.pred = ops::argmin(head.distances);
  if (method_ == Method::CACLearnt) {  // supplementary section 5: L_CAC + L_CE
    f.loss = ops::add(f.loss, ops::cross_entropy(logits, labels));
    f.parts = f.parts.clone();
    f.parts.rows(0, 1).view({}).copy_from(f.loss.detach());
  }
  return f;
}

void Trainer::accumulate(const Forward& f, const Tensor& labels, StepTotals& totals) {
  kernels::count_correct(f.pred, labels, totals.correct);
  totals.loss_parts.accumulate_(f.parts);
  totals.samples += labels.numel();
  totals.steps += 1;
}

void Trainer::step(const Tensor& images, const Tensor& labels, double lr, StepTotals& totals) {
  CAC_NVTX_RANGE("train_step");
  model_->train();
  sgd_.zero_grad();
  Forward f;
  {
    CAC_NVTX_RANGE("forward");
    f = forward_and_loss(images, labels);
  }
  {
    CAC_NVTX_RANGE("backward");
    f.loss.backward();
  }
  {
    CAC_NVTX_RANGE("optimizer");
    sgd_.step(lr);
  }
  accumulate(f, labels, totals);
}

void Trainer::evaluate(const Tensor& images, const Tensor& labels, StepTotals& totals) {
  NoGradGuard no_grad;
  model_->eval();
  accumulate(forward_and_loss(images, labels), labels, totals);
}

}  // namespace cac
