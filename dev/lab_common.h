#pragma once
// What the kernel labs share: the command line (--shape AxBxCxD, repeatable, and --iters N) and the
// start (a usable device, named).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/cuda_runtime.h"
#include "core/error.h"
#include "core/tensor.h"

namespace cac::lab {

struct LabArgs {
  std::vector<Shape> shapes;  // empty: the lab's own list
  int iters = 20;
};

// "128x64x32x32" as a shape of four; `order` names the dimensions in the error (e.g. "NxCxHxW").
inline Shape parse_shape(const std::string& text, const char* order) {
  Shape s;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i)
    if (i == text.size() || text[i] == 'x') {
      s.push_back(std::stoll(text.substr(start, i - start)));
      start = i + 1;
    }
  CAC_CHECK(s.size() == 4, "--shape {}: expected {}", text, order);
  return s;
}

// False, after printing the usage line, on an argument the labs do not take.
inline bool parse_lab_args(int argc, char** argv, const char* lab, const char* order, LabArgs* out) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--shape" && i + 1 < argc) {
      out->shapes.push_back(parse_shape(argv[++i], order));
    } else if (a == "--iters" && i + 1 < argc) {
      out->iters = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--shape %s]... [--iters N]\n", lab, order);
      return false;
    }
  }
  return true;
}

// False (after saying why) without a usable CUDA device; else names it on stdout.
inline bool start_lab(const char* lab) {
  std::string why;
  if (!cac::cuda::device_available(&why)) {
    std::fprintf(stderr, "%s: no usable CUDA device: %s\n", lab, why.c_str());
    return false;
  }
  std::printf("%s on %s\n", lab, cac::cuda::device_description().c_str());
  return true;
}

}  // namespace cac::lab
