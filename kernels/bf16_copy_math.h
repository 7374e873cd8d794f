#pragma once
// Where the optimizer's bf16 copy of the parameter slab puts slab element i (kernels/elementwise.h,
// Bf16Copy), shared by the CPU twin and the CUDA kernel so both place every element alike.
#include <cstdint>

#include "core/rng.h"  // CAC_HD

namespace cac::kernels {

// t: the transposes table, `rows` rows of (offset, outer, rows, cols) sorted by offset, each block
// under 2^31 elements (checked where the table is made, so the local index math is 32-bit: 64-bit
// division costs the GPU several times more).
CAC_HD int64_t bf16_copy_index(int64_t i, const int64_t* t, int rows) {
  int lo = 0, hi = rows;  // lo = the number of blocks starting at or before i
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (t[4 * mid] <= i) lo = mid + 1;
    else hi = mid;
  }
  if (lo == 0) return i;
  const int64_t* b = t + 4 * (lo - 1);
  const int32_t r = int32_t(b[2]), c = int32_t(b[3]), block = r * c;
  if (i - b[0] >= b[1] * block) return i;  // past that block: not transposed
  const int32_t local = int32_t(i - b[0]);
  const int32_t o = local / block, in = local - o * block, row = in / c, col = in - row * c;
  return b[0] + int64_t(o) * block + int64_t(col) * r + row;
}

}  // namespace cac::kernels
