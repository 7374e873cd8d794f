#pragma once
// The paper's VGG-style "classifier32" (after Neal et al. 2018) and the open-set head that turns
// its logits into distances to class anchors.
#include <array>
#include <memory>

#include "layers/module.h"

namespace cac {

struct Classifier32Config {
  int in_channels = 3;
  int image_size = 32;  // 32 or 64
  double dropout = 0.2;
  uint64_t seed = 0;
  // Mixed precision (issue 25): the convolution stack on bf16 channels-last activations (weights
  // converted from the float32 masters at each forward), the features back in float32 NCHW order
  // for the head, so checkpoints and the head are the float32 network's.
  bool bf16 = false;
};

// Nine 3x3 convolutions (padding 1, no bias; strides 1,1,2 per group of three), each followed by
// BatchNorm2d and LeakyReLU(0.2); Dropout2d after every third block; then flatten.
class Classifier32Encoder : public Layer {
 public:
  explicit Classifier32Encoder(const Classifier32Config& cfg);
  Tensor forward(const Tensor& x) override;
  int feature_dim() const { return feature_dim_; }

 private:
  std::array<std::shared_ptr<Conv2d>, 9> conv_;
  std::array<std::shared_ptr<BatchNorm2d>, 9> bn_;
  std::array<std::shared_ptr<Dropout2d>, 3> dr_;
  int feature_dim_;
  bool bf16_;
};

struct OpenSetOutput {
  Tensor logits;     // z = f(x), [B, N]
  Tensor distances;  // ||z - c_j||, [B, N]
};

// encoder -> Linear (classify) -> distances to the anchors. Anchors start at alpha * e_i and are
// trainable only for the learnt-centres variant; evaluation replaces them by class means.
class OpenSetClassifier : public Module {
 public:
  // head_init_std: Normal(0, std) for the classify layer's weights (the protocol's 0.01 for
  // classifier32); 0 = PyTorch's default uniform.
  OpenSetClassifier(std::shared_ptr<Layer> encoder, int feature_dim, int num_classes, double alpha,
                    bool learnt_centres, Generator& gen, double head_init_std = 0.01);
  OpenSetOutput forward(const Tensor& x);
  Tensor logits(const Tensor& x);  // z = classify(encoder(x)), without the distance layer
  // The penultimate features (the classify layer's input: classifier32's 128 x s x s maps
  // flattened, as the CAC authors' code does; ResNet-18's 512 pooled) and the logits from them.
  struct Outputs {
    Tensor features, logits;
  };
  Outputs outputs(const Tensor& x);
  void set_anchors(const Tensor& centres);  // [N, N], copied in place
  int num_classes() const { return num_classes_; }

  std::shared_ptr<Layer> encoder;
  std::shared_ptr<Linear> classify;
  Tensor anchors;

 private:
  int num_classes_;
};

// classifier32 + open-set head with the protocol's initialisation (Linear ~ Normal(0, 0.01)).
std::shared_ptr<OpenSetClassifier> make_classifier32(const Classifier32Config& cfg, int num_classes,
                                                     double alpha, bool learnt_centres);

}  // namespace cac
