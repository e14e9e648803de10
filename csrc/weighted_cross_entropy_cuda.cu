// weighted_cross_entropy on the GPU, the twin of weighted_cross_entropy_cpu.cpp: the forward reads
// each row twice (max, then Σexp; the second read hits L1/L2) and writes two numbers per
// row; the backward reads it once more and writes the gradient. One warp per row (8 rows
// per block) for C <= 1024, one 512-thread block per row above; float32 accumulation
// (float64 for float64); 16-byte vector loads where a row is 16-byte aligned, and one
// summation order for every dtype (see for_row).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "weighted_cross_entropy.h"

namespace coreaug {
namespace {

constexpr int kWarpRows = 8;         // rows per block on the warp-per-row path
constexpr int kBlockThreads = 512;   // threads per row on the block-per-row path
constexpr int64_t kWarpMaxC = 1024;  // widest row still given to a single warp

// Every dtype visits a row in one order: element j is in group j / kGroup, group g goes to
// thread g % kThreads, and each thread adds its groups' elements in index order (the last,
// partial group after its full ones). So the 16-bit kernels add exactly the float32
// kernel's terms in the same order, and their results are the float32 results rounded
// once (test_16bit_logits_are_float32_maths_rounded_once). An order tied to 16-byte packs
// (8 halves but 4 floats) or to the row's alignment would not be: only the load
// instructions may depend on those.
constexpr int kGroup = 8;

template <typename scalar_t>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t v[kSize];
};

template <typename scalar_t>
struct Group {
  scalar_t v[kGroup];
};

// Visits this thread's share of row[0, c): `group(j0, Group)` for its full groups (16-byte
// vector loads when the row is 16-byte aligned), then `one(j, value)` for the elements of
// the partial last group if it is this thread's.
template <int kThreads, typename scalar_t, typename One, typename Many>
__device__ __forceinline__ void for_row(const scalar_t* row, int64_t c, int tid, One&& one,
                                        Many&& group) {
  constexpr int kPacks = kGroup / Pack<scalar_t>::kSize;
  static_assert(kGroup % Pack<scalar_t>::kSize == 0, "a group is whole packs");
  const int64_t groups = c / kGroup;
  const bool aligned = reinterpret_cast<uintptr_t>(row) % 16 == 0;
  for (int64_t g = tid; g < groups; g += kThreads) {
    const int64_t j0 = g * kGroup;
    Group<scalar_t> v;
    if (aligned) {
      const Pack<scalar_t>* src = reinterpret_cast<const Pack<scalar_t>*>(row + j0);
#pragma unroll
      for (int p = 0; p < kPacks; ++p) {
        const Pack<scalar_t> q = src[p];
#pragma unroll
        for (int k = 0; k < Pack<scalar_t>::kSize; ++k) v.v[p * Pack<scalar_t>::kSize + k] = q.v[k];
      }
    } else {
#pragma unroll
      for (int k = 0; k < kGroup; ++k) v.v[k] = row[j0 + k];
    }
    group(j0, v);
  }
  if (tid == groups % kThreads) {
    for (int64_t j = groups * kGroup; j < c; ++j) one(j, row[j]);
  }
}

struct Max {
  template <typename T>
  __device__ T operator()(T a, T b) const { return max(a, b); }
};
struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};

// All-reduce over the kThreads threads of a row: shuffles within a warp, then (for a
// block per row) each warp's result through shared memory. smem holds kThreads/32 values;
// the leading barrier lets the same buffer serve consecutive reductions.
template <int kThreads, typename T, typename Op>
__device__ __forceinline__ T row_allreduce(T v, T* smem, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffff, v, o));
  if constexpr (kThreads > 32) {
    constexpr int kWarps = kThreads / 32;
    __syncthreads();
    if (threadIdx.x % 32 == 0) smem[threadIdx.x / 32] = v;
    __syncthreads();
    v = smem[0];
#pragma unroll
    for (int k = 1; k < kWarps; ++k) v = op(v, smem[k]);
  }
  return v;
}

template <typename scalar_t, int kThreads, int kRows, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads* kRows)
    weighted_cross_entropy_forward_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ t,
                               const acc_t* __restrict__ w, acc_t* __restrict__ loss,
                               double* __restrict__ lse, int64_t n, int64_t c, acc_t eps) {
  static_assert(kRows == 1 || kThreads == 32, "rows share a block only on the warp path");
  __shared__ acc_t smem[kThreads / 32];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRows + threadIdx.y;
  if (row >= n) return;  // only on the warp path, where no barrier follows
  const int tid = threadIdx.x;
  const scalar_t* xr = x + row * c;

  // NaN never wins max(); z below carries it instead, as on the CPU.
  acc_t m = -std::numeric_limits<acc_t>::infinity();
  for_row<kThreads>(xr, c, tid, [&](int64_t, scalar_t v) { m = max(m, static_cast<acc_t>(v)); },
                    [&](int64_t, const Group<scalar_t>& p) {
#pragma unroll
                      for (int k = 0; k < kGroup; ++k) m = max(m, static_cast<acc_t>(p.v[k]));
                    });
  m = row_allreduce<kThreads>(m, smem, Max());

  acc_t s = 0, z = 0;
  auto add = [&](acc_t v) {
    const acc_t d = v - m;
    s += exp(d);
    z += d;
  };
  for_row<kThreads>(xr, c, tid, [&](int64_t, scalar_t v) { add(static_cast<acc_t>(v)); },
                    [&](int64_t, const Group<scalar_t>& p) {
#pragma unroll
                      for (int k = 0; k < kGroup; ++k) add(static_cast<acc_t>(p.v[k]));
                    });
  s = row_allreduce<kThreads>(s, smem, Sum());
  z = row_allreduce<kThreads>(z, smem, Sum());

  if (tid == 0) {
    const int64_t y = t[row];
    const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
    // A bad target must not trap (that would poison the context): the row becomes NaN.
    // The public function has already rejected it.
    if (y < 0 || y >= c || isnan(z)) {
      loss[row] = nan;
      lse[row] = static_cast<double>(nan);
      return;
    }
    const acc_t log_s = log(s);
    // (1-ε)(lse - x_y) + ε(lse - mean x) with the max subtracted out; see row_loss on the CPU.
    acc_t ce = (m - static_cast<acc_t>(xr[y])) + log_s;
    if (eps > 0) ce = (1 - eps) * ce + eps * (log_s - z / static_cast<acc_t>(c));
    lse[row] = static_cast<double>(m) + static_cast<double>(log_s);
    loss[row] = (w ? w[row] : acc_t(1)) * ce;
  }
}

template <typename scalar_t, int kThreads, int kRows, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads* kRows)
    weighted_cross_entropy_backward_kernel(const acc_t* __restrict__ g, int64_t g_stride,
                                const scalar_t* __restrict__ x, const int64_t* __restrict__ t,
                                const acc_t* __restrict__ w, const double* __restrict__ lse,
                                scalar_t* __restrict__ out, int64_t n, int64_t c, acc_t eps) {
  static_assert(kRows == 1 || kThreads == 32, "rows share a block only on the warp path");
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRows + threadIdx.y;
  if (row >= n) return;
  const int tid = threadIdx.x;
  const scalar_t* xr = x + row * c;
  scalar_t* o = out + row * c;
  const int64_t y = t[row];
  // x − lse as (x − hi) − lo: with logits far from 0 (say 1000) a float32 lse alone
  // would already be off by half its ulp (3e-5), and so would every softmax value.
  const acc_t hi = static_cast<acc_t>(lse[row]);
  const acc_t lo = static_cast<acc_t>(lse[row] - static_cast<double>(hi));
  acc_t scale = g[row * g_stride] * (w ? w[row] : acc_t(1));
  if (y < 0 || y >= c) scale = std::numeric_limits<acc_t>::quiet_NaN();
  const acc_t off = eps / static_cast<acc_t>(c);
  const acc_t on = 1 - eps + off;
  auto grad = [&](int64_t j, scalar_t v) {
    return static_cast<scalar_t>((exp((static_cast<acc_t>(v) - hi) - lo) - (j == y ? on : off)) * scale);
  };
  // out rows share the logits rows' alignment unless logits is an offset view
  const bool pack_store = reinterpret_cast<uintptr_t>(o) % 16 == 0;
  for_row<kThreads>(xr, c, tid, [&](int64_t j, scalar_t v) { o[j] = grad(j, v); },
                    [&](int64_t j0, const Group<scalar_t>& p) {
                      Group<scalar_t> r;
#pragma unroll
                      for (int k = 0; k < kGroup; ++k) r.v[k] = grad(j0 + k, p.v[k]);
                      if (pack_store) {
                        Pack<scalar_t>* dst = reinterpret_cast<Pack<scalar_t>*>(o + j0);
#pragma unroll
                        for (int q = 0; q < kGroup / Pack<scalar_t>::kSize; ++q) {
                          Pack<scalar_t> pk;
#pragma unroll
                          for (int k = 0; k < Pack<scalar_t>::kSize; ++k) pk.v[k] = r.v[q * Pack<scalar_t>::kSize + k];
                          dst[q] = pk;
                        }
                      } else {
#pragma unroll
                        for (int k = 0; k < kGroup; ++k) o[j0 + k] = r.v[k];
                      }
                    });
}

// Runs launch(threads, rows) (std::integral_constant values, for the kernel's template
// arguments) with the shape for rows of c entries: one warp per row, kWarpRows rows per
// block, up to kWarpMaxC entries; one kBlockThreads-thread block per row above.
template <typename Launch>
void launch_for_width(int64_t n, int64_t c, const Launch& launch) {
  const int64_t blocks = c <= kWarpMaxC ? (n + kWarpRows - 1) / kWarpRows : n;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "weighted_cross_entropy: too many rows (", n, ")");
  const dim3 grid(static_cast<unsigned>(blocks));
  if (c <= kWarpMaxC) {
    launch(grid, std::integral_constant<int, 32>(), std::integral_constant<int, kWarpRows>());
  } else {
    launch(grid, std::integral_constant<int, kBlockThreads>(), std::integral_constant<int, 1>());
  }
}

void weighted_cross_entropy_cuda(const weighted_cross_entropy::Inputs& in, const weighted_cross_entropy::Forward& out,
                                 double label_smoothing) {
  const c10::cuda::CUDAGuard guard(in.x.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.x.scalar_type(), "weighted_cross_entropy_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* wp = in.w.defined() ? in.w.data_ptr<acc_t>() : nullptr;
    const auto eps = static_cast<acc_t>(label_smoothing);
    launch_for_width(in.n, in.c, [&](dim3 grid, auto threads, auto rows) {
      weighted_cross_entropy_forward_kernel<scalar_t, decltype(threads)::value, decltype(rows)::value>
          <<<grid, dim3(threads, rows), 0, stream>>>(in.x.data_ptr<scalar_t>(), in.t.data_ptr<int64_t>(), wp,
                                                     out.loss.data_ptr<acc_t>(), out.lse.data_ptr<double>(), in.n,
                                                     in.c, eps);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void weighted_cross_entropy_backward_cuda(const weighted_cross_entropy::Inputs& in,
                                          const weighted_cross_entropy::Backward& io, double label_smoothing) {
  const c10::cuda::CUDAGuard guard(in.x.device());
  // grad_loss is often a broadcast scalar (stride 0, from .sum()): read it in place.
  const int64_t gs = io.g.stride(0);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.x.scalar_type(), "weighted_cross_entropy_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* wp = in.w.defined() ? in.w.data_ptr<acc_t>() : nullptr;
    const auto eps = static_cast<acc_t>(label_smoothing);
    launch_for_width(in.n, in.c, [&](dim3 grid, auto threads, auto rows) {
      weighted_cross_entropy_backward_kernel<scalar_t, decltype(threads)::value, decltype(rows)::value>
          <<<grid, dim3(threads, rows), 0, stream>>>(io.g.data_ptr<acc_t>(), gs, in.x.data_ptr<scalar_t>(),
                                                     in.t.data_ptr<int64_t>(), wp, io.lse.data_ptr<double>(),
                                                     io.out.data_ptr<scalar_t>(), in.n, in.c, eps);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(coreaug, CUDA, m) {
  m.impl("weighted_cross_entropy", &weighted_cross_entropy::forward_entry<weighted_cross_entropy_cuda>);
  m.impl("weighted_cross_entropy_backward", &weighted_cross_entropy::backward_entry<weighted_cross_entropy_backward_cuda>);
}

}  // namespace coreaug
