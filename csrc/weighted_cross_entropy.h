// What the CPU and CUDA bodies of weighted_cross_entropy and its backward share: the
// argument checks and the layout of their inputs and outputs (header-only, so that each
// extension source compiles its own copy; no CUDA).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "common.h"

namespace coreaug {
namespace weighted_cross_entropy {

// Losses, log-sum-exps, weights and upstream gradients are float64 for float64 logits
// (gradcheck) and float32 otherwise (half and bfloat16 accumulate in float32).
inline at::ScalarType acc_type(at::ScalarType logits) {
  return logits == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_args(const at::Tensor& logits, const at::Tensor& targets, const std::optional<at::Tensor>& weights,
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
    const auto acc = acc_type(logits.scalar_type());
    TORCH_CHECK(w.scalar_type() == acc, "weights must be ", acc, " for ", logits.scalar_type(),
                " logits, got ", w.scalar_type());
  }
}

// A per-row vector (lse, grad_loss): n entries, float32/float64 like the losses.
inline at::Tensor row_vector(const at::Tensor& v, const char* name, int64_t n, at::ScalarType acc,
                             const at::Device& device) {
  TORCH_CHECK(v.dim() == 1 && v.size(0) == n, name, " must have shape (", n, "), got ", v.sizes());
  TORCH_CHECK(v.device() == device, name, " is on ", v.device(), " but the op runs on ", device);
  return v.scalar_type() == acc ? v : v.to(acc);
}

// The (checked) inputs of a body, contiguous, with n rows of c classes; w undefined
// without weights.
struct Inputs {
  int64_t n = 0, c = 0;
  at::Tensor x, t, w;
};

inline Inputs inputs(const at::Tensor& logits, const at::Tensor& targets, const std::optional<at::Tensor>& weights) {
  return {logits.size(0), logits.size(1), logits.contiguous(), targets.contiguous(),
          weights.has_value() ? weights->contiguous() : at::Tensor()};
}

// The forward's outputs: per-row losses (n,) float32/float64 and log-sum-exps (n,) float64.
struct Forward {
  at::Tensor loss, lse;
};

inline Forward forward_outputs(const at::Tensor& logits) {
  const int64_t n = logits.size(0);
  return {at::empty({n}, logits.options().dtype(acc_type(logits.scalar_type()))),
          at::empty({n}, logits.options().dtype(at::kDouble))};
}

// The backward's row vectors, checked: grad_loss (n,) in the loss dtype, read through its
// stride (often 0: a broadcast scalar from .sum()), and lse (n,) float64 contiguous; and
// its output, the (n, c) gradient in the logits' dtype, contiguous.
struct Backward {
  at::Tensor g, lse, out;
};

inline Backward backward_tensors(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& lse) {
  const int64_t n = logits.size(0), c = logits.size(1);
  const auto acc = acc_type(logits.scalar_type());
  Backward b;
  b.g = row_vector(grad_loss, "grad_loss", n, acc, logits.device());
  b.lse = row_vector(lse, "lse", n, at::kDouble, logits.device()).contiguous();
  b.out = at::empty({n, c}, logits.options().memory_format(at::MemoryFormat::Contiguous));
  return b;
}

// A device's bodies: they run on rows n >= 1 of inputs already checked and laid out, and
// write into outputs already allocated.
using ForwardBody = void (*)(const Inputs& in, const Forward& out, double label_smoothing);
using BackwardBody = void (*)(const Inputs& in, const Backward& io, double label_smoothing);

// The ops' kernels on one device: the C++ form of their schemas (csrc/ops.cpp), written
// once, with the checks and layout above, then the device's body. Each body file registers
// &forward_entry<its forward> and &backward_entry<its backward>.
template <ForwardBody Body>
std::tuple<at::Tensor, at::Tensor> forward_entry(const at::Tensor& logits, const at::Tensor& targets,
                                                 const std::optional<at::Tensor>& weights, double label_smoothing) {
  check_args(logits, targets, weights, label_smoothing);
  const Forward out = forward_outputs(logits);
  if (logits.size(0) > 0) Body(inputs(logits, targets, weights), out, label_smoothing);
  return {out.loss, out.lse};
}

template <BackwardBody Body>
at::Tensor backward_entry(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& targets,
                          const std::optional<at::Tensor>& weights, const at::Tensor& lse, double label_smoothing) {
  check_args(logits, targets, weights, label_smoothing);
  const Backward io = backward_tensors(grad_loss, logits, lse);
  if (logits.size(0) > 0) Body(inputs(logits, targets, weights), io, label_smoothing);
  return io.out;
}

}  // namespace weighted_cross_entropy
}  // namespace coreaug
