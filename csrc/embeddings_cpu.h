// One row of gradient_embeddings on the CPU, shared by the op (embeddings_cpu.cpp) and the
// selector's row preparation (class_rows_cpu.cpp): both compile this one body with the
// same flags, so a row gets the same bits from either.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace coreaug {

// The largest entry of a row, over eight running maxima so that the comparisons do not
// wait on each other. A max is exact, so it is the one-by-one scan's value (up to the sign
// of a zero maximum, which x − max and its exponential do not see); NaN entries are
// skipped as std::max skips them (their own exponential makes the row NaN).
template <typename acc_t, typename scalar_t>
inline acc_t row_max(const scalar_t* row, int64_t c) {
  acc_t m[8];
  std::fill(m, m + 8, -std::numeric_limits<acc_t>::infinity());
  int64_t j = 0;
  for (; j + 8 <= c; j += 8)
    for (int l = 0; l < 8; ++l) m[l] = std::max(m[l], static_cast<acc_t>(row[j + l]));
  for (; j < c; ++j) m[0] = std::max(m[0], static_cast<acc_t>(row[j]));
  for (int l = 1; l < 8; ++l) m[0] = std::max(m[0], m[l]);
  return m[0];
}

// out[j] = softmax(row)[j] − (j == target), float32, for a row of c entries; e holds c
// acc_t. Each exponential is computed once and kept: the scalar exp is most of the cost.
// out may be the row itself (float32 input): every entry is read before any is written.
template <typename acc_t, typename scalar_t>
inline void gradient_row(const scalar_t* row, int64_t c, int64_t target, acc_t* e, float* out) {
  const acc_t mx = row_max<acc_t>(row, c);
  // A float running sum over tens of thousands of classes drifts by ~1e-5 relative.
  double sum = 0;
  for (int64_t j = 0; j < c; ++j) {
    e[j] = std::exp(static_cast<acc_t>(row[j]) - mx);
    sum += e[j];
  }
  const acc_t inv = static_cast<acc_t>(1.0 / sum);
  for (int64_t j = 0; j < c; ++j) out[j] = static_cast<float>(e[j] * inv - (j == target));
}

}  // namespace coreaug
