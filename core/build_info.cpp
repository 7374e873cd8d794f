#include "core/build_info.h"

#include <fmt/format.h>

#include "core/cuda_runtime.h"

namespace cac {

std::string engine_version() {
  return fmt::format("cac-engine {} ({}, {}; {})", CAC_ENGINE_VERSION, build_revision(), CAC_BUILD_TYPE,
                     cuda::library_versions());
}

}  // namespace cac
