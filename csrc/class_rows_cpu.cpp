// class_rows_ on the CPU: the rows one run of the selector compares, prepared class by
// class into a buffer the caller reuses from run to run: gathered from the source (and
// turned into softmax − onehot when targets are given), centred, scaled. It reproduces the
// torch composite that CUDA tensors take (coreaug_fast.selection.class_rows: take, centred,
// unit_scaled) bit for bit: the rows are gradient_embeddings' (one shared row body), the
// class mean is segment_reduce's (a float running sum of the rows in order, divided by
// n_c), the scale an exact power of two. Done per class, the steps after the gather read a
// class while it is still in cache; segment_reduce's CPU kernel walks each column down the
// rows (a stride of D floats), and fresh buffers for every run cost a page fault per 4 KiB.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "common.h"
#include "embeddings_cpu.h"

namespace coreaug {
namespace {

// Rows minus the class mean: sum row by row (each column in row order, as segment_reduce),
// divide by n, subtract.
void centre_class(float* x, int64_t n, int64_t d, float* mean) {
  std::fill(mean, mean + d, 0.f);
  for (int64_t r = 0; r < n; ++r) {
    const float* row = x + r * d;
    for (int64_t j = 0; j < d; ++j) mean[j] = mean[j] + row[j];
  }
  const float count = static_cast<float>(n);
  for (int64_t j = 0; j < d; ++j) mean[j] = mean[j] / count;
  for (int64_t r = 0; r < n; ++r) {
    float* row = x + r * d;
    for (int64_t j = 0; j < d; ++j) row[j] = row[j] - mean[j];
  }
}

// The power of two 2^-e with the class's largest |entry| in [0.5, 1) after scaling (1 for
// an all-zero class), e clamped to [-126, 126] as unit_scaled clamps it; rows scaled by it.
float scale_class(float* x, int64_t n, int64_t d) {
  float m[16] = {};  // sixteen running maxima: a max is exact in any order
  const int64_t len = n * d;
  int64_t i = 0;
  for (; i + 16 <= len; i += 16)
    for (int l = 0; l < 16; ++l) m[l] = std::max(m[l], std::abs(x[i + l]));
  for (; i < len; ++i) m[0] = std::max(m[0], std::abs(x[i]));
  float big = 0.f;
  for (int l = 0; l < 16; ++l) big = std::max(big, m[l]);
  int e = 0;
  std::frexp(big, &e);
  const float s = std::ldexp(1.f, std::clamp(-e, -126, 126));
  for (i = 0; i < len; ++i) x[i] = x[i] * s;
  return s;
}

// The op's arguments, checked before any thread starts (throwing inside a parallel region
// would abort), with each class's first row in the run.
struct Run {
  at::Tensor rows, counts, targets;  // contiguous int64; targets undefined without
  std::vector<int64_t> start;        // (m + 1,) class starts in rows and out
};

Run check_args(const at::Tensor& out, const at::Tensor& source, const std::optional<at::Tensor>& targets,
               const at::Tensor& rows, const at::Tensor& counts) {
  COREAUG_CHECK_DIM(out, 2);
  COREAUG_CHECK_DIM(source, 2);
  COREAUG_CHECK_DIM(rows, 1);
  COREAUG_CHECK_DIM(counts, 1);
  COREAUG_CHECK_DTYPE(out, at::kFloat);
  COREAUG_CHECK_FLOATING(source);
  COREAUG_CHECK_DTYPE(rows, at::kLong);
  COREAUG_CHECK_DTYPE(counts, at::kLong);
  TORCH_CHECK(out.is_contiguous(), "out must be contiguous");
  TORCH_CHECK(source.size(1) <= 1 || source.stride(1) == 1, "source rows must be contiguous (stride(1) == 1)");
  TORCH_CHECK(out.size(0) == rows.size(0) && out.size(1) == source.size(1), "out must be (rows, ", source.size(1),
              "), got (", out.size(0), ", ", out.size(1), ")");
  const int64_t n_src = source.size(0), d = source.size(1), m = counts.size(0), total = rows.size(0);
  Run run{rows.contiguous(), counts.contiguous(), at::Tensor(), std::vector<int64_t>(m + 1, 0)};
  const int64_t* ip = run.rows.data_ptr<int64_t>();
  const int64_t* cp = run.counts.data_ptr<int64_t>();
  if (targets.has_value()) {
    COREAUG_CHECK_DIM(*targets, 1);
    COREAUG_CHECK_DTYPE(*targets, at::kLong);
    TORCH_CHECK(targets->size(0) == n_src, "targets has ", targets->size(0), " rows, source has ", n_src);
    run.targets = targets->contiguous();
  }
  const int64_t* tp = run.targets.defined() ? run.targets.data_ptr<int64_t>() : nullptr;
  for (int64_t c = 0; c < m; ++c) {
    TORCH_CHECK(cp[c] >= 0, "counts must be >= 0, got ", cp[c]);
    run.start[c + 1] = run.start[c] + cp[c];
  }
  TORCH_CHECK(run.start[m] == total, "counts sum to ", run.start[m], " but rows has ", total, " entries");
  for (int64_t r = 0; r < total; ++r) {
    TORCH_CHECK(ip[r] >= 0 && ip[r] < n_src, "rows[", r, "] = ", ip[r], " is outside [0, ", n_src, ")");
    if (tp) TORCH_CHECK(tp[ip[r]] >= 0 && tp[ip[r]] < d, "targets[", ip[r], "] = ", tp[ip[r]], " is outside [0, ", d, ")");
  }
  return run;
}

at::Tensor class_rows_cpu(at::Tensor out, const at::Tensor& source, const std::optional<at::Tensor>& targets,
                          const at::Tensor& rows, const at::Tensor& counts, bool centre, bool scale) {
  const Run run = check_args(out, source, targets, rows, counts);
  const int64_t d = source.size(1), m = counts.size(0);
  const int64_t* ip = run.rows.data_ptr<int64_t>();
  const int64_t* cp = run.counts.data_ptr<int64_t>();
  const int64_t* tp = run.targets.defined() ? run.targets.data_ptr<int64_t>() : nullptr;
  const std::vector<int64_t>& start = run.start;
  auto factors = at::ones({m}, out.options());
  float* op = out.data_ptr<float>();
  float* fp = factors.data_ptr<float>();
  const int64_t ld = source.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, source.scalar_type(), "class_rows_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* sp = source.data_ptr<scalar_t>();
    at::parallel_for(0, m, 1, [&](int64_t lo, int64_t hi) {
      std::vector<acc_t> e(tp ? static_cast<size_t>(d) : 0);
      std::vector<float> mean(static_cast<size_t>(d));
      for (int64_t c = lo; c < hi; ++c) {
        const int64_t n = cp[c];
        float* x = op + start[c] * d;
        for (int64_t r = 0; r < n; ++r) {
          const int64_t i = ip[start[c] + r];
          const scalar_t* src = sp + i * ld;
          if (tp) {
            gradient_row(src, d, tp[i], e.data(), x + r * d);
          } else {
            for (int64_t j = 0; j < d; ++j) x[r * d + j] = static_cast<float>(src[j]);
          }
        }
        if (n == 0 || d == 0) continue;
        if (centre) centre_class(x, n, d, mean.data());
        if (scale) fp[c] = scale_class(x, n, d);
      }
    });
  });
  return factors;
}

}  // namespace

TORCH_LIBRARY_IMPL(coreaug, CPU, m) { m.impl("class_rows_", &class_rows_cpu); }

}  // namespace coreaug
