#include "models/resnet18.h"

#include "core/profiling.h"
#include "layers/ops.h"

namespace cac {

BasicBlock::BasicBlock(int in, int out, int stride, Generator& gen) {
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(in, out, 3, stride, 1, false, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(out));
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(out, out, 3, 1, 1, false, gen));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out));
  if (stride != 1 || in != out) {
    downsample_ = register_module("downsample", std::make_shared<Sequential>());
    downsample_->add("0", std::make_shared<Conv2d>(in, out, 1, stride, 0, false, gen));
    downsample_->add("1", std::make_shared<BatchNorm2d>(out));
  }
}

Tensor BasicBlock::forward(const Tensor& x) {
  CAC_NVTX_RANGE("BasicBlock.forward");
  Tensor h = bn1_->forward_leaky_relu(conv1_->forward(x), 0.0);  // fused BN + ReLU (slope 0)
  h = bn2_->forward(conv2_->forward(h));
  return ops::relu(ops::add(h, downsample_ ? downsample_->forward(x) : x));
}

ResNet18Encoder::ResNet18Encoder(const ResNet18Config& cfg) : bf16_(cfg.bf16) {
  CAC_CHECK(cfg.in_channels == 1 || cfg.in_channels == 3, "resnet18: input must have 1 or 3 channels, got {}",
            cfg.in_channels);
  CAC_CHECK(cfg.image_size >= 8, "resnet18: image size must be at least 8 (three stride-2 stages), got {}",
            cfg.image_size);
  Generator gen(cfg.seed, /*stream=*/1);
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(cfg.in_channels, 64, 3, 1, 1, false, gen));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(64));
  const int width[4] = {64, 128, 256, 512};
  int in = 64;
  for (int s = 0; s < 4; ++s) {
    layers_[s] = register_module("layer" + std::to_string(s + 1), std::make_shared<Sequential>());
    layers_[s]->add("0", std::make_shared<BasicBlock>(in, width[s], s == 0 ? 1 : 2, gen));
    layers_[s]->add("1", std::make_shared<BasicBlock>(width[s], width[s], 1, gen));
    in = width[s];
  }
}

Tensor ResNet18Encoder::forward(const Tensor& x) {
  Tensor h = bn1_->forward_leaky_relu(conv1_->forward(bf16_ ? ops::to_channels_last_bf16(x) : x), 0.0);
  for (auto& stage : layers_) h = stage->forward(h);
  return ops::global_avg_pool(bf16_ ? ops::to_nchw_f32(h) : h);
}

std::shared_ptr<OpenSetClassifier> make_resnet18(const ResNet18Config& cfg, int num_classes, double alpha,
                                                 bool learnt_centres) {
  auto enc = std::make_shared<ResNet18Encoder>(cfg);
  Generator gen(cfg.seed, /*stream=*/2);
  return std::make_shared<OpenSetClassifier>(std::move(enc), ResNet18Encoder::kFeatureDim, num_classes, alpha,
                                             learnt_centres, gen, /*head_init_std=*/0.0);
}

}  // namespace cac
