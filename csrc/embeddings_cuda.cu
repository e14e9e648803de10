// gradient_embeddings on the GPU: one warp per row, shuffles for the max and the sum.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common.h"

namespace coreaug {
namespace {

constexpr int kRowsPerBlock = 8;

template <typename T>
__device__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

template <typename T>
__device__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

template <typename scalar_t>
__global__ void gradient_embeddings_kernel(const scalar_t* __restrict__ x,
                                           const int64_t* __restrict__ t,
                                           float* __restrict__ out, int64_t n, int64_t c) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (row >= n) return;
  const scalar_t* xr = x + row * c;
  acc_t mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < c; j += 32) mx = max(mx, static_cast<acc_t>(xr[j]));
  mx = warp_max(mx);
  acc_t sum = 0;
  for (int64_t j = threadIdx.x; j < c; j += 32) sum += exp(static_cast<acc_t>(xr[j]) - mx);
  const acc_t inv = acc_t(1) / warp_sum(sum);
  const int64_t target = t[row];
  // A bad target must not trap (that would poison the context): the row becomes NaN.
  const bool ok = target >= 0 && target < c;
  float* o = out + row * c;
  for (int64_t j = threadIdx.x; j < c; j += 32) {
    o[j] = ok ? static_cast<float>(exp(static_cast<acc_t>(xr[j]) - mx) * inv - (j == target))
              : NAN;
  }
}

}  // namespace

at::Tensor gradient_embeddings_cuda(const at::Tensor& logits, const at::Tensor& targets) {
  check_logits_targets(logits, targets);
  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t n = logits.size(0), c = logits.size(1);
  auto x = logits.contiguous();
  auto t = targets.contiguous();
  auto out = at::empty({n, c}, logits.options().dtype(at::kFloat));
  if (n == 0 || c == 0) return out;
  const dim3 block(32, kRowsPerBlock);
  const dim3 grid(static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gradient_embeddings_cuda", [&] {
    gradient_embeddings_kernel<scalar_t><<<grid, block, 0, stream>>>(
        x.data_ptr<scalar_t>(), t.data_ptr<int64_t>(), out.data_ptr<float>(), n, c);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

TORCH_LIBRARY_IMPL(coreaug, CUDA, m) { m.impl("gradient_embeddings", &gradient_embeddings_cuda); }

}  // namespace coreaug
