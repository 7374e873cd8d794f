#include "models/training.h"

#include <map>

#include "core/autograd.h"
#include "core/cuda_runtime.h"
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
  samples = steps = 0;
  if (loss_parts.defined() && loss_parts.dtype() == dtype && loss_parts.device() == device) {
    loss_parts.zero_();
    correct.zero_();
    return;
  }
  loss_parts = Tensor::zeros({3}, dtype, device);
  correct = Tensor::zeros({}, DType::I64, device);
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

namespace {
std::vector<Conv2d*> trainable_convs(Module& model) {
  std::vector<Conv2d*> convs;
  model.visit([&](const std::string&, Module& m) {
    if (auto* c = dynamic_cast<Conv2d*>(&m); c && c->weight.requires_grad()) convs.push_back(c);
  });
  return convs;
}
}  // namespace

// The bf16 weights are this optimizer's: a later trainer of the model must not read them.
Trainer::~Trainer() {
  for (Conv2d* c : trainable_convs(*model_)) c->bf16_weight = Tensor();
}

void Trainer::keep_bf16_weights() {
  const std::vector<Conv2d*> convs = trainable_convs(*model_);
  std::vector<Tensor> weights;
  for (Conv2d* c : convs) weights.push_back(c->weight);
  sgd_.keep_bf16_copy(weights);
  for (Conv2d* c : convs) c->bf16_weight = sgd_.bf16_copy_of(c->weight);
}

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

void Trainer::eager_step(const Tensor& images, const Tensor& labels, StepTotals& totals) {
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
    sgd_.step();
  }
  accumulate(f, labels, totals);
}

void Trainer::eager_evaluate(const Tensor& images, const Tensor& labels, StepTotals& totals) {
  NoGradGuard no_grad;
  model_->eval();
  accumulate(forward_and_loss(images, labels), labels, totals);
}

void Trainer::step(const Tensor& images, const Tensor& labels, double lr, StepTotals& totals) {
  sgd_.set_lr(lr);  // a copy to the device when it changes: outside any recording
  run(true, images, labels, totals, [&](const Tensor& x, const Tensor& y) { eager_step(x, y, totals); });
}

void Trainer::evaluate(const Tensor& images, const Tensor& labels, StepTotals& totals) {
  run(false, images, labels, totals, [&](const Tensor& x, const Tensor& y) { eager_evaluate(x, y, totals); });
}

// ---- CUDA graphs ---------------------------------------------------------------------------------
struct Trainer::Recorded {
  std::unique_ptr<cuda::RecordedWork> work;
  Tensor images, labels;                // the graph's inputs: each batch is copied here
  const void* parts = nullptr;          // the totals it adds to
  const void* correct = nullptr;
  std::vector<Tensor> counters;         // the model's host counters (host_counters())
  std::vector<int64_t> counter_steps;   // how far each moves per replay
};

struct Trainer::Graphs {
  std::function<void(const std::string&)> note;
  int warmup = 2;
  bool failed = false;                   // a recording failed: eager from then on
  std::map<std::pair<bool, Shape>, int> seen;  // eager runs of (training, batch shape)
  std::unique_ptr<Recorded> train, eval;
  GraphCounts counts;
  void say(const std::string& s) const {
    if (note) note(s);
  }
};

void Trainer::use_graphs(bool on, std::function<void(const std::string&)> note, int warmup) {
  graphs_.reset();  // drops recorded graphs (their memory returns to the allocator)
  model_->visit([](const std::string&, Module& m) {
    if (auto* d = dynamic_cast<Dropout2d*>(&m)) d->stop_counting_on_device();
  });
  if (!on) return;
  graphs_ = std::make_unique<Graphs>();
  graphs_->note = std::move(note);
  graphs_->warmup = std::max(1, warmup);
}

GraphCounts Trainer::graph_counts() const { return graphs_ ? graphs_->counts : GraphCounts{}; }

// Host-side counters a step advances (dropout's mask counts, batch norm's num_batches_tracked):
// a replay does not run the host code, so the trainer moves them as the recording did.
std::vector<Tensor> Trainer::host_counters() const {
  std::vector<Tensor> out;
  for (const NamedTensors& group : {model_->state_dict(), model_->resume_state()})
    for (const auto& [name, t] : group)
      if (t.dtype() == DType::I64 && t.numel() == 1 && t.device() == Device::CPU) out.push_back(t);
  return out;
}

void Trainer::run(bool training, const Tensor& images, const Tensor& labels, StepTotals& totals, const Work& work) {
  Graphs* g = graphs_.get();
  if (!g || g->failed || images.device() != Device::CUDA) return work(images, labels);
  std::unique_ptr<Recorded>& slot = training ? g->train : g->eval;
  const bool same_shape = slot && slot->images.shape() == images.shape() && slot->labels.shape() == labels.shape();
  if (same_shape && slot->parts == totals.loss_parts.raw() && slot->correct == totals.correct.raw())
    return replay(*slot, images, labels, totals);
  int& seen = g->seen[{training, images.shape()}];
  if ((slot && !same_shape) || seen < g->warmup) {
    ++seen;
    ++g->counts.eager;
    return work(images, labels);
  }
  slot.reset();  // (totals elsewhere: recorded again for them)
  slot = record(training, images, labels, totals, work);
  if (slot) return replay(*slot, images, labels, totals);
  ++g->counts.eager;
  work(images, labels);
}

std::unique_ptr<Trainer::Recorded> Trainer::record(bool training, const Tensor& images, const Tensor& labels,
                                                   StepTotals& totals, const Work& work) {
  Graphs& g = *graphs_;
  auto r = std::make_unique<Recorded>();
  r->images = Tensor::empty(images.shape(), images.dtype(), images.device());
  r->labels = Tensor::empty(labels.shape(), labels.dtype(), labels.device());
  if (training)
    model_->visit([](const std::string&, Module& m) {
      if (auto* d = dynamic_cast<Dropout2d*>(&m)) d->count_on_device(Device::CUDA);
    });
  r->counters = host_counters();
  std::vector<int64_t> before;
  for (const Tensor& c : r->counters) before.push_back(c.data<int64_t>()[0]);
  const int64_t samples = totals.samples, steps = totals.steps;
  std::string error;
  try {
    r->work = std::make_unique<cuda::RecordedWork>([&] { work(r->images, r->labels); });
  } catch (const std::exception& e) {
    error = e.what();
  }
  // The recording ran the host code once and the device code not at all: undo the host's counts.
  for (size_t i = 0; i < r->counters.size(); ++i) {
    int64_t& c = r->counters[i].data<int64_t>()[0];
    r->counter_steps.push_back(c - before[i]);
    c = before[i];
  }
  totals.samples = samples, totals.steps = steps;
  const char* what = training ? "training step" : "evaluation forward";
  if (!error.empty()) {
    g.failed = true;
    g.say(fmt::format("CUDA graphs: recording the {} failed, running eagerly from now on: {}", what, error));
    return nullptr;
  }
  r->parts = totals.loss_parts.raw();
  r->correct = totals.correct.raw();
  ++g.counts.recorded;
  g.say(fmt::format("CUDA graphs: the {} of {} images recorded ({} nodes) after {} eager runs; replayed from now on",
                    what, images.dim(0), r->work->launches(), g.warmup));
  return r;
}

void Trainer::replay(Recorded& r, const Tensor& images, const Tensor& labels, StepTotals& totals) {
  r.images.copy_from(images);  // device to device, stream-ordered
  r.labels.copy_from(labels);
  r.work->replay();
  for (size_t i = 0; i < r.counters.size(); ++i) r.counters[i].data<int64_t>()[0] += r.counter_steps[i];
  totals.samples += labels.numel();
  totals.steps += 1;
  ++graphs_->counts.replayed;
}

}  // namespace cac
