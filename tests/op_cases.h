#pragma once
// The op-case table: one entry per differentiable op (and variant), with its input shapes, how to
// run it, and the numbers the checks need. One table drives three modes: the CPU finite-difference
// gradient check (double), GPU-vs-CPU agreement (label `cuda`), and the kernel benchmark.
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace cac::testing {

struct InputSpec {
  enum Kind { Normal, Positive, Labels };
  Shape shape;
  Kind kind = Normal;
  bool needs_grad = true;
  int64_t num_classes = 0;  // for Labels
};

struct OpCase {
  std::string name;
  std::vector<InputSpec> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> run;
  // The longest sum that feeds one output or gradient element; sets the float32 tolerance of the
  // GPU-vs-CPU comparison (rounding error of a length-L sum grows like L * eps in the worst case).
  int64_t reduction_length = 1;
  double fd_eps = 1e-6;  // central-difference step in double
};

const std::vector<OpCase>& op_cases();

// Deterministic inputs for a case: Normal ~ N(0,1), Positive in [0.5, 3], labels in [0, K).
std::vector<Tensor> make_inputs(const OpCase& c, DType dtype, uint64_t seed);
// A fixed random tensor shaped like the output, used to project the output to a scalar.
Tensor projection_like(const Tensor& y, uint64_t seed);

struct Tolerance {
  double atol, rtol;
  bool close(double a, double ref) const;
};
// Float32 tolerance for a result accumulated over `reduction_length` terms (see OpCase).
Tolerance f32_tolerance(int64_t reduction_length);

}  // namespace cac::testing

namespace cac::testing {
// Test names print the case's name, not its bytes.
inline void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }
}  // namespace cac::testing
