#pragma once
// The --device option of every program: auto | cpu | cuda (cac_bench: cpu | cuda). A PyTorch-style
// "cuda:1" is refused with the way to pick that GPU here (CUDA_VISIBLE_DEVICES), which holds for
// every thread of the process, the data loader's included.
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace cac::app {

// "" when `value` is one of `allowed`, else what is wrong with it and what to write instead (for
// the command line and for settings read from a config.json).
inline std::string device_problem(const std::string& value,
                                  const std::vector<std::string>& allowed = {"auto", "cpu", "cuda"}) {
  std::string names;
  for (const std::string& a : allowed) {
    if (value == a) return "";
    names += (names.empty() ? "" : ", ") + a;
  }
  if (value.rfind("cuda:", 0) == 0)
    return "'" + value + "': pick the GPU with CUDA_VISIBLE_DEVICES=" + value.substr(5) +
           " in front of the command and pass --device cuda";
  return "'" + value + "' is not one of " + names;
}

inline CLI::Validator device_choice(std::vector<std::string> allowed = {"auto", "cpu", "cuda"}) {
  std::string shown;
  for (const std::string& a : allowed) shown += (shown.empty() ? "{" : ",") + a;
  return CLI::Validator([allowed](std::string& v) { return device_problem(v, allowed); }, shown + "}");
}

}  // namespace cac::app
