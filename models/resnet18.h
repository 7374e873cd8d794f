#pragma once
// ResNet-18, CIFAR variant (He et al. 2016 as used for 32x32 inputs): a 3x3 stem convolution with
// no max-pool, four stages of two basic blocks (64, 128, 256, 512 channels; stride 2 from the
// second stage on), 1x1 projection shortcuts where the shape changes, global average pooling.
// Used for the experiment at false-positive operating points. Parameter names follow torchvision:
// conv1, bn1, layer1.0.conv1, ..., layer2.0.downsample.0 (1x1 conv), layer2.0.downsample.1 (BN).
#include <memory>

#include "layers/module.h"
#include "models/classifier32.h"

namespace cac {

struct ResNet18Config {
  int in_channels = 3;
  int image_size = 32;  // any size >= 8 (global average pooling at the end)
  uint64_t seed = 0;
  // Mixed precision (issue 25): the stages on bf16 channels-last activations (Classifier32Config::bf16),
  // back to float32 NCHW before the pooling.
  bool bf16 = false;
};

// conv3x3-BN-ReLU, conv3x3-BN, + shortcut (identity or 1x1 conv + BN), ReLU.
class BasicBlock : public Layer {
 public:
  BasicBlock(int in, int out, int stride, Generator& gen);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Sequential> downsample_;  // null for the identity shortcut
};

class ResNet18Encoder : public Layer {
 public:
  explicit ResNet18Encoder(const ResNet18Config& cfg);
  Tensor forward(const Tensor& x) override;  // [B, C, H, W] -> [B, 512]
  static constexpr int kFeatureDim = 512;

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<Sequential> layers_[4];
  bool bf16_;
};

// ResNet-18 + the open-set head. Convolutions: Kaiming normal (fan_out, ReLU gain); BN weight 1,
// bias 0; the linear head PyTorch's default uniform(+-1/sqrt(512)), as torchvision's ResNet.
std::shared_ptr<OpenSetClassifier> make_resnet18(const ResNet18Config& cfg, int num_classes, double alpha,
                                                 bool learnt_centres);

}  // namespace cac
