// Argument checks shared by the CPU and CUDA bodies of weighted_cross_entropy and its
// backward (header-only, so that each extension source compiles its own copy; no CUDA).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "common.h"

namespace coreaug {

// Losses, log-sum-exps, weights and upstream gradients are float64 for float64 logits
// (gradcheck) and float32 otherwise (half and bfloat16 accumulate in float32).
inline at::ScalarType weighted_ce_acc_type(at::ScalarType logits) {
  return logits == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_weighted_ce_args(const at::Tensor& logits, const at::Tensor& targets,
                                   const std::optional<at::Tensor>& weights,
                                   double label_smoothing) {
  check_logits_targets(logits, targets);
  TORCH_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0,
              "label_smoothing must lie in [0, 1], got ", label_smoothing);
  if (weights.has_value()) {
    const at::Tensor& w = *weights;
    COREAUG_CHECK_DIM(w, 1);
    COREAUG_CHECK_DEVICE(w, logits.device());
    TORCH_CHECK(w.size(0) == logits.size(0), "weights has ", w.size(0), " rows but logits has ",
                logits.size(0));
    const auto acc = weighted_ce_acc_type(logits.scalar_type());
    TORCH_CHECK(w.scalar_type() == acc, "weights must be ", acc, " for ", logits.scalar_type(),
                " logits, got ", w.scalar_type());
  }
}

// A per-row vector (lse, grad_loss): n entries, float32/float64 like the losses.
inline at::Tensor weighted_ce_row_vector(const at::Tensor& v, const char* name, int64_t n,
                                         at::ScalarType acc, const at::Device& device) {
  TORCH_CHECK(v.dim() == 1 && v.size(0) == n, name, " must have shape (", n, "), got ", v.sizes());
  TORCH_CHECK(v.device() == device, name, " is on ", v.device(), " but the op runs on ", device);
  return v.scalar_type() == acc ? v : v.to(acc);
}

}  // namespace coreaug
