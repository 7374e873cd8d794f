#pragma once
// The lab's host-side judgement of candidates (tested on the CPU, dev/bn_lab/test_choice.cpp):
// whether a candidate computed what the CPU twin computes, and which one wins.
#include <vector>

namespace cac::lab {

// Every element finite and within rel * (1 + max|ref|) of the reference. Candidates differ only in
// rounding (about 1e-6 relative); a wrong index or a race is of the order of max|ref|.
bool agrees_with_reference(const std::vector<float>& ref, const std::vector<float>& got, double rel = 1e-3);

// The first candidate (listed in order of preference) whose time is within `slack` (relative) of
// the fastest, so that timing noise does not flip the choice between equally fast ones; a time
// that is not finite marks a candidate that could not run or disagreed. -1 when none ran.
int pick_measured(const std::vector<double>& ms, double slack);

}  // namespace cac::lab
