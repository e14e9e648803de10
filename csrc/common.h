// Shared argument checks for the coreaug ops. The public Python functions validate
// user input with friendly errors first; these guard the raw torch.ops entry points.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#define COREAUG_CHECK_DIM(x, d) \
  TORCH_CHECK((x).dim() == (d), #x " must have " #d " dimensions, got ", (x).dim())

#define COREAUG_CHECK_DTYPE(x, t) \
  TORCH_CHECK((x).scalar_type() == (t), #x " must be ", (t), ", got ", (x).scalar_type())

#define COREAUG_CHECK_DEVICE(x, dev)                                                 \
  TORCH_CHECK((x).device() == (dev), #x " is on ", (x).device(), " but the op runs on ", \
              (dev))

#define COREAUG_CHECK_FLOATING(x)                                            \
  TORCH_CHECK(at::isFloatingType((x).scalar_type()), #x " must be floating point, got ", \
              (x).scalar_type())

namespace coreaug {

// A freshly allocated CPU output of many MB is first written page by page: on Linux each 4 KiB
// page costs a fault, which for a float32 batch of 224x224 images takes several times longer
// than the writes themselves. Advising its 2 MiB-aligned interior as transparent huge pages
// (honoured where THP is in "madvise" or "always" mode) makes those faults 512x fewer. A hint
// only: without THP, or on other systems, nothing changes.
inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
  if (!t.device().is_cpu() || bytes < 2 * kHuge) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (begin + bytes) & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // a hint: errors ignored
#else
  (void)t;
#endif
}

// logits (N, C) floating with C >= 1 unless N == 0, targets (N,) int64 on the same device.
inline void check_logits_targets(const at::Tensor& logits, const at::Tensor& targets) {
  COREAUG_CHECK_DIM(logits, 2);
  COREAUG_CHECK_DIM(targets, 1);
  COREAUG_CHECK_FLOATING(logits);
  COREAUG_CHECK_DTYPE(targets, at::kLong);
  COREAUG_CHECK_DEVICE(targets, logits.device());
  TORCH_CHECK(logits.size(0) == targets.size(0), "logits has ", logits.size(0),
              " rows but targets has ", targets.size(0));
  TORCH_CHECK(logits.size(1) > 0 || logits.size(0) == 0, "logits needs at least one class column");
}

}  // namespace coreaug
