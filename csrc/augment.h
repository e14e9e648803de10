// Declarations shared by the CPU and CUDA bodies of the augment op (no CUDA headers, so
// host C++ can include it).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace coreaug {

// The op's arguments as both bodies read them: checked (the raw op's guard; the public
// function has already given friendly errors), tensors contiguous, per-channel values
// expanded to C entries.
struct AugmentInputs {
  at::ScalarType out_dtype;     // uint8, float32, float16 or bfloat16
  int64_t N, C, H, W, M, L;     // images (N, C, H, W); ops and magnitudes (M, L)
  at::Tensor images, ops, magnitudes;
  at::Tensor index, crop;       // undefined when not given
  uint8_t fill[3];
  float mean[3], std[3];        // 0 and 1 without normalisation
};

// augment_cpu.cpp: the checks and the layout above, shared by the CPU and CUDA bodies.
AugmentInputs augment_inputs(const at::Tensor& images, const at::Tensor& ops, const at::Tensor& magnitudes,
                             const std::optional<at::Tensor>& index, const std::optional<at::Tensor>& crop,
                             int64_t padding, at::IntArrayRef fill, std::optional<at::ScalarType> out_dtype,
                             const std::optional<at::ArrayRef<double>>& mean,
                             const std::optional<at::ArrayRef<double>>& stdv);

// A body of the op (augment_cpu, augment_cuda): the checked inputs, the padding, and the
// normalisation's mean and std as given (the CPU body builds its tables from the doubles).
using AugmentBody = at::Tensor (*)(const AugmentInputs& in, int64_t padding,
                                   const std::optional<at::ArrayRef<double>>& mean,
                                   const std::optional<at::ArrayRef<double>>& stdv);

// The op's kernel on one device: the C++ form of its schema (csrc/ops.cpp), written once,
// which runs augment_inputs and hands the result to Body. Each body registers
// &augment_entry<its body>.
template <AugmentBody Body>
at::Tensor augment_entry(const at::Tensor& images, const at::Tensor& ops, const at::Tensor& magnitudes,
                         const std::optional<at::Tensor>& index, const std::optional<at::Tensor>& crop,
                         int64_t padding, at::IntArrayRef fill, std::optional<at::ScalarType> out_dtype,
                         std::optional<at::ArrayRef<double>> mean, std::optional<at::ArrayRef<double>> stdv) {
  return Body(augment_inputs(images, ops, magnitudes, index, crop, padding, fill, out_dtype, mean, stdv), padding,
              mean, stdv);
}

}  // namespace coreaug
