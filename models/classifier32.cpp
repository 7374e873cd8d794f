#include "models/classifier32.h"

#include "layers/ops.h"

namespace cac {

Classifier32Encoder::Classifier32Encoder(const Classifier32Config& cfg) : bf16_(cfg.bf16) {
  CAC_CHECK(cfg.image_size == 32 || cfg.image_size == 64,
            "classifier32: image size must be 32 or 64, got {}", cfg.image_size);
  CAC_CHECK(cfg.in_channels == 1 || cfg.in_channels == 3,
            "classifier32: input must have 1 or 3 channels, got {}", cfg.in_channels);
  CAC_CHECK(cfg.dropout >= 0 && cfg.dropout < 1, "classifier32: dropout {} outside [0, 1)",
            cfg.dropout);
  Generator gen(cfg.seed, /*stream=*/1);
  const int in[9] = {cfg.in_channels, 64, 64, 128, 128, 128, 128, 128, 128};
  const int out[9] = {64, 64, 128, 128, 128, 128, 128, 128, 128};
  for (int i = 0; i < 9; ++i) {
    const int stride = i % 3 == 2 ? 2 : 1;
    conv_[i] = register_module("conv" + std::to_string(i + 1),
                               std::make_shared<Conv2d>(in[i], out[i], 3, stride, 1, false, gen));
    bn_[i] = register_module("bn" + std::to_string(i + 1), std::make_shared<BatchNorm2d>(out[i]));
  }
  for (int i = 0; i < 3; ++i)
    dr_[i] = register_module("dr" + std::to_string(i + 1),
                             std::make_shared<Dropout2d>(cfg.dropout, gen.split(100 + i).next_u64()));
  const int side = cfg.image_size / 8;
  feature_dim_ = 128 * side * side;
}

Tensor Classifier32Encoder::forward(const Tensor& x) {
  Tensor h = bf16_ ? ops::to_channels_last_bf16(x) : x;
  for (int i = 0; i < 9; ++i) {
    h = bn_[i]->forward_leaky_relu(conv_[i]->forward(h), 0.2);  // fused BN + LeakyReLU(0.2)
    if (i % 3 == 2) h = dr_[i / 3]->forward(h);
  }
  return ops::flatten(bf16_ ? ops::to_nchw_f32(h) : h);
}

OpenSetClassifier::OpenSetClassifier(std::shared_ptr<Layer> enc, int feature_dim, int num_classes,
                                     double alpha, bool learnt_centres, Generator& gen, double head_init_std)
    : num_classes_(num_classes) {
  CAC_CHECK(num_classes >= 2, "open-set classifier: need at least 2 known classes, got {}",
            num_classes);
  encoder = register_module("encoder", std::move(enc));
  classify = register_module("classify", std::make_shared<Linear>(feature_dim, num_classes, gen, head_init_std));
  std::vector<float> eye(size_t(num_classes) * num_classes, 0.0f);
  for (int i = 0; i < num_classes; ++i) eye[size_t(i) * num_classes + i] = float(alpha);
  anchors = register_parameter("anchors", Tensor::from_vector(eye, {num_classes, num_classes}),
                               learnt_centres);
}

Tensor OpenSetClassifier::logits(const Tensor& x) { return classify->forward(encoder->forward(x)); }

OpenSetClassifier::Outputs OpenSetClassifier::outputs(const Tensor& x) {
  Outputs o;
  o.features = encoder->forward(x);
  o.logits = classify->forward(o.features);
  return o;
}

OpenSetOutput OpenSetClassifier::forward(const Tensor& x) {
  OpenSetOutput out;
  out.logits = logits(x);
  out.distances = ops::pairwise_distance(out.logits, anchors);
  return out;
}

void OpenSetClassifier::set_anchors(const Tensor& centres) {
  CAC_CHECK(centres.shape() == anchors.shape(), "set_anchors: got {}, expected {}",
            shape_str(centres.shape()), shape_str(anchors.shape()));
  anchors.copy_from(centres.to(anchors.dtype()).to(anchors.device()));
}

std::shared_ptr<OpenSetClassifier> make_classifier32(const Classifier32Config& cfg, int num_classes,
                                                     double alpha, bool learnt_centres) {
  auto enc = std::make_shared<Classifier32Encoder>(cfg);
  Generator gen(cfg.seed, /*stream=*/2);
  const int dim = enc->feature_dim();
  return std::make_shared<OpenSetClassifier>(std::move(enc), dim, num_classes, alpha, learnt_centres, gen);
}

}  // namespace cac
