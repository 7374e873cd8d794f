// explain_gpu and describe_architectures (core/cuda_runtime.h): plain functions of what a probe
// found, compiled in every build so that their messages are tested on machines without a GPU.
#include <fmt/format.h>

#include <sstream>

#include "core/cuda_runtime.h"

namespace cac::cuda {

namespace {
std::string cuda_version(int v) { return fmt::format("{}.{}", v / 1000, v % 1000 / 10); }
}  // namespace

std::string describe_architectures(const std::string& cmake_list) {
  std::string out, item, list = cmake_list;
  for (char& ch : list)
    if (ch == ',') ch = ';';  // the build passes the list joined by ','
  std::istringstream in(list);
  while (std::getline(in, item, ';')) {
    if (item.empty()) continue;
    std::string text;
    const auto dash = item.find('-');
    const std::string number = item.substr(0, dash), kind = dash == std::string::npos ? "" : item.substr(dash + 1);
    if (number.empty() || number.find_first_not_of("0123456789") != std::string::npos) {
      text = item;  // "all", "all-major", "native": CMake's own words
    } else if (kind == "virtual") {
      text = "compute_" + number + " (PTX)";
    } else if (kind == "real") {
      text = "sm_" + number;
    } else {
      text = "sm_" + number + " + PTX";  // a plain number: SASS and PTX, which newer GPUs compile at load
    }
    out += (out.empty() ? "" : ", ") + text;
  }
  return out.empty() ? "none" : out;
}

GpuState explain_gpu(const GpuProbe& p, std::string* why) {
  auto say = [&](GpuState s, std::string text) {
    if (why) *why = std::move(text);
    return s;
  };
  if (!p.built_with_cuda) return say(GpuState::Absent, "built without the CUDA backend");
  if (p.driver_version == 0) return say(GpuState::Absent, "no NVIDIA driver (no GPU, or its driver is not installed)");
  switch (p.count) {
    case GpuProbe::Count::Ok: break;
    case GpuProbe::Count::NoDevice: return say(GpuState::Absent, "no CUDA device found");
    case GpuProbe::Count::DriverTooOld:
      return say(GpuState::Unusable,
                 fmt::format("the NVIDIA driver supports CUDA {} but this build uses the CUDA {} runtime: update "
                             "the driver, or build with a CUDA toolkit no newer than {}",
                             cuda_version(p.driver_version), cuda_version(p.runtime_version),
                             cuda_version(p.driver_version)));
    case GpuProbe::Count::Failed:
      return say(GpuState::Unusable, fmt::format("the CUDA runtime cannot use the GPU ({})", p.error));
  }
  if (p.devices == 0) return say(GpuState::Absent, "no CUDA device found");
  if (!p.has_code) {
    const std::string arch = fmt::format("{}{}", p.major, p.minor);
    return say(GpuState::Unusable,
               fmt::format("{} is sm_{}, and this build has GPU code only for {}: rebuild with "
                           "-DCMAKE_CUDA_ARCHITECTURES={} (or configure a fresh build folder on this machine, "
                           "which builds for the GPUs it finds)",
                           p.name, arch, describe_architectures(p.built_for), arch));
  }
  return say(GpuState::Usable, "");
}

}  // namespace cac::cuda
