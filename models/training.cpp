#include "models/training.h"

#include "core/autograd.h"
#include "kernels/losses.h"
#include "layers/ops.h"

namespace cac {

Method parse_method(const std::string& s) {
  if (s == "cac") return Method::CAC;
  if (s == "ce") return Method::CE;
  if (s == "cac-learnt") return Method::CACLearnt;
  fail("unknown method '{}': expected cac, ce or cac-learnt", s);
}

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

Tensor Trainer::loss_of(const OpenSetOutput& out, const Tensor& labels, Tensor& parts) {
  if (method_ == Method::CE) {
    Tensor loss = ops::cross_entropy(out.logits, labels);
    // parts = (loss, loss, 0): CE stands in the tuplet slot, no anchor term.
    parts = Tensor::zeros({3}, loss.dtype(), loss.device());
    parts.rows(0, 1).view({}).accumulate_(loss.detach());
    parts.rows(1, 2).view({}).accumulate_(loss.detach());
    return loss;
  }
  ops::CacLoss cac = ops::cac_loss(out.distances, labels, lambda_);
  parts = cac.parts;
  if (method_ == Method::CAC) return cac.loss;
  Tensor loss = ops::add(cac.loss, ops::cross_entropy(out.logits, labels));
  parts = parts.clone();
  parts.rows(0, 1).view({}).copy_from(loss.detach());
  return loss;
}

void Trainer::accumulate(const OpenSetOutput& out, const Tensor& labels, const Tensor& parts,
                         StepTotals& totals) {
  // CAC predicts the nearest anchor; the CE baseline the largest logit.
  Tensor pred = method_ == Method::CE ? ops::argmax(out.logits) : ops::argmin(out.distances);
  kernels::count_correct(pred, labels, totals.correct);
  totals.loss_parts.accumulate_(parts);
  totals.samples += labels.numel();
  totals.steps += 1;
}

void Trainer::step(const Tensor& images, const Tensor& labels, double lr, StepTotals& totals) {
  model_->train();
  sgd_.zero_grad();
  OpenSetOutput out = model_->forward(images);
  Tensor parts;
  Tensor loss = loss_of(out, labels, parts);
  loss.backward();
  sgd_.step(lr);
  accumulate(out, labels, parts, totals);
}

void Trainer::evaluate(const Tensor& images, const Tensor& labels, StepTotals& totals) {
  NoGradGuard no_grad;
  model_->eval();
  OpenSetOutput out = model_->forward(images);
  Tensor parts;
  loss_of(out, labels, parts);
  accumulate(out, labels, parts, totals);
}

}  // namespace cac
