// gradient_embeddings on the CPU: one softmax per row, rows in parallel.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "common.h"
#include "embeddings_cpu.h"

namespace coreaug {

at::Tensor gradient_embeddings_cpu(const at::Tensor& logits, const at::Tensor& targets) {
  check_logits_targets(logits, targets);
  const int64_t n = logits.size(0), c = logits.size(1);
  auto x = logits.contiguous();
  auto t = targets.contiguous();
  const int64_t* tp = t.data_ptr<int64_t>();
  // Checked up front: throwing from inside the parallel region would abort.
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(tp[i] >= 0 && tp[i] < c, "targets[", i, "] = ", tp[i], " is outside [0, ", c, ")");
  }
  auto out = at::empty({n, c}, logits.options().dtype(at::kFloat));
  float* op = out.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gradient_embeddings_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> e(static_cast<size_t>(c));
      for (int64_t i = begin; i < end; ++i) gradient_row(xp + i * c, c, tp[i], e.data(), op + i * c);
    });
  });
  return out;
}

TORCH_LIBRARY_IMPL(coreaug, CPU, m) { m.impl("gradient_embeddings", &gradient_embeddings_cpu); }

}  // namespace coreaug
