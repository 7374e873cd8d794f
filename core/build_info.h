#pragma once
// What built this engine, for --version, train.log and eval.json: a run's record says which
// engine, revision and libraries produced it.
#include <string>

namespace cac {

// "git v0.1-12-gabcdef012345[-dirty]" or "no git revision" (generated at build time).
const char* build_revision();
// "cac-engine 0.1.0 (git ..., Release; CUDA runtime 13.0, cuDNN 9.10.2)"; the libraries are the
// ones loaded now (a CPU-only build says so).
std::string engine_version();

}  // namespace cac
