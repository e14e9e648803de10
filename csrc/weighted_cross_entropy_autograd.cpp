// Autograd for coreaug::weighted_cross_entropy, registered in C++ for every device.
//
// A Python autograd registration (torch.library.register_autograd) costs tens of
// microseconds per call, more than the whole fused forward and backward at training batch
// sizes on the CPU; registered here it costs about as much as any aten op. The backward
// is the fused weighted_cross_entropy_backward op, except under create_graph=True, where
// it is built from differentiable aten ops so that second derivatives are exact.
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "weighted_cross_entropy.h"

namespace coreaug {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor> forward_op(const at::Tensor& logits, const at::Tensor& targets,
                                              const std::optional<at::Tensor>& weights,
                                              double label_smoothing) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("coreaug::weighted_cross_entropy", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, double)>();
  return op.call(logits, targets, weights, label_smoothing);
}

at::Tensor backward_op(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& targets,
                       const std::optional<at::Tensor>& weights, const at::Tensor& lse,
                       double label_smoothing) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("coreaug::weighted_cross_entropy_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&, const at::Tensor&, double)>();
  return op.call(grad_loss, logits, targets, weights, lse, label_smoothing);
}

struct WeightedCrossEntropy : public torch::autograd::Function<WeightedCrossEntropy> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets,
                               const std::optional<at::Tensor>& weights, double label_smoothing) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [loss, lse] = forward_op(logits, targets, weights, label_smoothing);
    ctx->save_for_backward({logits, targets, weights.value_or(at::Tensor()), lse});
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->mark_non_differentiable({lse});  // for the backward only; no gradient formula
    return {loss, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& logits = saved[0];
    const at::Tensor& targets = saved[1];
    const std::optional<at::Tensor> weights =
        saved[2].defined() ? std::optional<at::Tensor>(saved[2]) : std::nullopt;
    const at::Tensor& lse = saved[3];
    const double eps = ctx->saved_data["label_smoothing"].toDouble();
    const at::Tensor& grad_loss = grads[0];
    at::Tensor grad_logits, grad_weights;
    if (!grad_loss.defined()) return {grad_logits, at::Tensor(), grad_weights, at::Tensor()};
    const bool want_logits = ctx->needs_input_grad(0);
    const bool want_weights = weights.has_value() && ctx->needs_input_grad(2);
    const int64_t c = logits.size(1);
    if (at::GradMode::is_enabled()) {
      // backward(create_graph=True): a graph must be recorded, so differentiable ops (two
      // N×C buffers more) instead of the fused kernel.
      const auto acc = weighted_cross_entropy::acc_type(logits.scalar_type());
      const at::Tensor logp = at::log_softmax(logits.to(acc), 1);
      const at::Tensor q = at::one_hot(targets, c).to(acc) * (1.0 - eps) + eps / static_cast<double>(c);
      if (want_logits) {
        const at::Tensor scale = weights ? grad_loss * *weights : grad_loss;
        grad_logits = ((logp.exp() - q) * scale.unsqueeze(1)).to(logits.scalar_type());
      }
      if (want_weights) grad_weights = grad_loss * -(q * logp).sum(1);
      return {grad_logits, at::Tensor(), grad_weights, at::Tensor()};
    }
    if (want_logits) grad_logits = backward_op(grad_loss, logits, targets, weights, lse, eps);
    if (want_weights) {
      // CE_i from the saved float64 lse: lse − (1−ε)·x_{i,y_i} − ε·mean_j x_ij. O(N)
      // without smoothing, one row-sum pass with it; no N×C buffer either way.
      at::Tensor ce = lse - logits.gather(1, targets.unsqueeze(1)).squeeze(1).to(at::kDouble);
      if (eps > 0) {
        ce = (1.0 - eps) * ce + eps * (lse - logits.sum(/*dim=*/1, /*keepdim=*/false, at::kDouble) / static_cast<double>(c));
      }
      grad_weights = grad_loss * ce.to(grad_loss.scalar_type());
    }
    return {grad_logits, at::Tensor(), grad_weights, at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> weighted_cross_entropy_autograd(const at::Tensor& logits,
                                                                   const at::Tensor& targets,
                                                                   const std::optional<at::Tensor>& weights,
                                                                   double label_smoothing) {
  auto out = WeightedCrossEntropy::apply(logits, targets, weights, label_smoothing);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(coreaug, Autograd, m) {
  m.impl("weighted_cross_entropy", &weighted_cross_entropy_autograd);
}

}  // namespace coreaug
