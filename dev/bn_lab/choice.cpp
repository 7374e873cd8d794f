#include "dev/bn_lab/choice.h"

#include <algorithm>
#include <cmath>

namespace cac::lab {

bool agrees_with_reference(const std::vector<float>& ref, const std::vector<float>& got, double rel) {
  if (ref.size() != got.size()) return false;
  double scale = 0;
  for (float r : ref) scale = std::max(scale, double(std::fabs(r)));
  const double tol = rel * (1.0 + scale);
  for (size_t i = 0; i < ref.size(); ++i)
    if (!(std::fabs(double(got[i]) - double(ref[i])) <= tol)) return false;  // NaN fails too
  return true;
}

int pick_measured(const std::vector<double>& ms, double slack) {
  int best = -1;
  for (size_t i = 0; i < ms.size(); ++i)
    if (std::isfinite(ms[i]) && (best < 0 || ms[i] < ms[size_t(best)])) best = int(i);
  if (best < 0) return -1;
  for (size_t i = 0; i < ms.size(); ++i)
    if (std::isfinite(ms[i]) && ms[i] <= ms[size_t(best)] * (1.0 + slack)) return int(i);
  return best;
}

}  // namespace cac::lab
