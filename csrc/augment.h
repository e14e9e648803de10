// Declarations shared by the CPU and CUDA bodies of the augment op (no CUDA headers, so
// host C++ can include it).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace coreaug {

// augment_cpu.cpp: the raw op's argument checks, shared by both bodies (the public
// function has already given friendly errors); returns the output dtype.
at::ScalarType augment_check_args(const at::Tensor& images, const at::Tensor& ops,
                                  const at::Tensor& magnitudes, const std::optional<at::Tensor>& index,
                                  const std::optional<at::Tensor>& crop, int64_t padding,
                                  at::IntArrayRef fill, std::optional<at::ScalarType> out_dtype,
                                  const std::optional<at::ArrayRef<double>>& mean,
                                  const std::optional<at::ArrayRef<double>>& stdv);

}  // namespace coreaug
