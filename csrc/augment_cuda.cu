// augment on the GPU: one block per output image, one launch for the batch. The block
// compiles its row into steps (augment_math.h, as the CPU twin), builds the op tables in
// shared memory, and makes the same passes as the CPU body: one per per-image statistic
// (contrast's mean, autocontrast's min/max, equalize's histogram, reduced in shared memory),
// one per stored sharpen input, and the final pass writing uint8 or normalised floats.
// Pixels are evaluated one per thread: geometric steps walked backwards, value steps
// forwards. The CPU body stores a sharpened image; here the stencil is evaluated on the fly
// from the stored input (same values, no second buffer).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <optional>

#include "augment.h"
#include "augment_math.h"
#include "common.h"

namespace coreaug {

namespace {

using namespace augment;

constexpr int kThreads = 256;  // also the equalize scan width: one thread per bin

struct Args {
  const uint8_t* images;
  int64_t N;
  int C, H, W, L;
  const int32_t* ops;
  const float* mags;
  const int64_t* index;
  const int64_t* crop;
  int64_t padding;
  uint8_t fill[3];
  float mean[3], stdv[3];
  uint8_t* scratch;  // (M, C, H, W) stored images, or nullptr when no row can need one
  void* out;
};

struct Shared {
  Step steps[kMaxSteps];
  uint8_t lut[kMaxSteps][3][256];
  unsigned int hist[3][256];
  int scan[256];
  int lo[3], hi[3];
  unsigned long long sum;
  float norm[3][256];
  int n;
};

// The image after steps [seg, t) of the row at pixel (i, j).
__device__ void eval_pixel(const Shared& sh, const Args& a, const uint8_t* base, int seg, int t, int i, int j,
                           uint8_t v[3]) {
  const int H = a.H, W = a.W, C = a.C;
  const int64_t HW = static_cast<int64_t>(H) * W;
  int ci = i, cj = j, filled = -1;
  for (int s = t - 1; s >= seg; --s) {
    const Step& st = sh.steps[s];
    if ((st.kind == kGeom || st.kind == kCrop) && !map_coord(st, H, W, ci, cj)) {
      filled = s;
      break;
    }
  }
  // Channel loops run to 3 with a guard so that v stays in registers.
  int s0 = seg;
  if (filled >= 0) {
    const bool zero = sh.steps[filled].kind == kCrop;
#pragma unroll
    for (int c = 0; c < 3; ++c) v[c] = zero || c >= C ? 0 : a.fill[c];
    s0 = filled + 1;
  } else if (t > seg && sh.steps[seg].kind == kSharpen) {
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      v[c] = c < C ? sharpen_value(base + c * HW, H, W, ci, cj, sh.steps[seg].alpha) : 0;
    }
    s0 = seg + 1;
  } else {
    const int64_t off = static_cast<int64_t>(ci) * W + cj;
#pragma unroll
    for (int c = 0; c < 3; ++c) v[c] = c < C ? base[c * HW + off] : 0;
  }
  for (int s = s0; s < t; ++s) {
    const Step& st = sh.steps[s];
    if (st.kind == kLut) {
#pragma unroll
      for (int c = 0; c < 3; ++c) v[c] = sh.lut[s][c][v[c]];
    } else if (st.kind == kColorBlend) {
      color_blend(st, v[0], v[1], v[2]);
    }
  }
}

__device__ unsigned long long warp_sum(unsigned long long x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffff, x, o);
  return x;
}

// The statistics step t's table needs, of the image after steps [seg, t), into sh: the
// gray sum (Contrast), per-channel lo/hi (AutoContrast) or histograms (Equalize).
__device__ __forceinline__ void gather_lut_stats(Shared& sh, const Args& a, const uint8_t* base, int seg, int t) {
  const int C = a.C, W = a.W;
  const int HW = a.H * a.W;
  const int tid = threadIdx.x;
  const Step& st = sh.steps[t];
  for (int k = tid; k < 3 * 256; k += kThreads) sh.hist[k / 256][k % 256] = 0;
  if (tid < 3) {
    sh.lo[tid] = 255;
    sh.hi[tid] = 0;
  }
  if (tid == 0) sh.sum = 0;
  __syncthreads();
  unsigned long long sum = 0;
  int lo[3] = {255, 255, 255}, hi[3] = {0, 0, 0};
  for (int p = tid; p < HW; p += kThreads) {
    uint8_t v[3];
    eval_pixel(sh, a, base, seg, t, p / W, p % W, v);
    if (st.lut == kLutContrast) {
      sum += C == 3 ? static_cast<unsigned long long>(gray_floor(v[0], v[1], v[2])) : v[0];
    } else if (st.lut == kLutAutoContrast) {
#pragma unroll
      for (int c = 0; c < 3; ++c) {
        lo[c] = min(lo[c], static_cast<int>(v[c]));
        hi[c] = max(hi[c], static_cast<int>(v[c]));
      }
    } else {
#pragma unroll
      for (int c = 0; c < 3; ++c) {
        if (c < C) atomicAdd(&sh.hist[c][v[c]], 1u);
      }
    }
  }
  if (st.lut == kLutContrast) {
    sum = warp_sum(sum);
    if ((tid & 31) == 0) atomicAdd(&sh.sum, sum);
  } else if (st.lut == kLutAutoContrast) {
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      if (c < C) {
        atomicMin(&sh.lo[c], lo[c]);
        atomicMax(&sh.hi[c], hi[c]);
      }
    }
  }
}

// Equalize's table of channel c, entry v (one per thread), from its histogram in sh.
__device__ __forceinline__ void equalize_table(Shared& sh, int HW, int t, int c, int v) {
  if (v == 0) sh.hi[c] = 0;
  __syncthreads();
  if (sh.hist[c][v] != 0) atomicMax(&sh.hi[c], v);  // the top value present
  sh.scan[v] = static_cast<int>(sh.hist[c][v]);
  __syncthreads();
  for (int off = 1; off < 256; off <<= 1) {  // inclusive prefix sum over the bins
    const int x = v >= off ? sh.scan[v - off] : 0;
    __syncthreads();
    sh.scan[v] += x;
    __syncthreads();
  }
  const int64_t step = (HW - static_cast<int64_t>(sh.hist[c][sh.hi[c]])) / 255;
  const int64_t cum_prev = v == 0 ? 0 : sh.scan[v - 1];
  sh.lut[t][c][v] = equalize_lut_value(cum_prev, step, v);
  __syncthreads();
}

// Fills sh.lut[t] from statistics of the image after steps [seg, t).
__device__ void build_dynamic_lut(Shared& sh, const Args& a, const uint8_t* base, int seg, int t) {
  const int C = a.C;
  const int HW = a.H * a.W;
  const Step& st = sh.steps[t];
  gather_lut_stats(sh, a, base, seg, t);
  __syncthreads();
  const int v = threadIdx.x;  // one table entry per thread
  if (st.lut == kLutContrast) {
    // torch.mean: float32 sum (exact below 2^24) divided by the pixel count
    const float mean = div_rn(static_cast<float>(sh.sum), static_cast<float>(HW));
    const uint8_t y = contrast_lut_value(st, mean, v);
    for (int c = 0; c < C; ++c) sh.lut[t][c][v] = y;
  } else if (st.lut == kLutAutoContrast) {
    for (int c = 0; c < C; ++c) sh.lut[t][c][v] = autocontrast_lut_value(sh.lo[c], sh.hi[c], v);
  } else {
    for (int c = 0; c < C; ++c) equalize_table(sh, HW, t, c, v);
  }
  __syncthreads();
}

// Row m's steps, normalisation tables and fixed tables, into sh (the block's first work).
__device__ __forceinline__ void plan_row(Shared& sh, const Args& a, int64_t m) {
  const int tid = threadIdx.x;
  const int C = a.C;
  if (tid == 0) {
    sh.n = compile_row(a.ops + m * a.L, a.mags + m * a.L, a.L, a.crop ? a.crop + 3 * m : nullptr,
                       a.padding, C, a.H, a.W, sh.steps);
  }
  for (int k = tid; k < C * 256; k += kThreads) {
    const int c = k / 256;
    sh.norm[c][k % 256] = normalized_value(k % 256, a.mean[c], a.stdv[c]);
  }
  __syncthreads();
  const int n = sh.n;
  for (int s = 0; s < n; ++s) {
    if (sh.steps[s].kind == kLut && sh.steps[s].lut == kLutFixed) {
      const uint8_t y = fixed_lut_value(sh.steps[s], tid);
      for (int c = 0; c < C; ++c) sh.lut[s][c][tid] = y;
    }
  }
  __syncthreads();
}

// Steps [seg, t) of every pixel of the image at base, stored as bytes into dst (C, H, W).
__device__ __forceinline__ void store_image(Shared& sh, const Args& a, const uint8_t* base, int seg, int t,
                                            uint8_t* dst) {
  const int C = a.C;
  const int64_t HW = static_cast<int64_t>(a.H) * a.W;
  const int hw = a.H * a.W;
  for (int p = threadIdx.x; p < hw; p += kThreads) {
    uint8_t v[3];
    eval_pixel(sh, a, base, seg, t, p / a.W, p % a.W, v);
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      if (c < C) dst[c * HW + p] = v[c];
    }
  }
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads) augment_kernel(Args a) {
  __shared__ Shared sh;
  const int64_t m = blockIdx.x;
  const int tid = threadIdx.x;
  const int C = a.C;
  const int64_t HW = static_cast<int64_t>(a.H) * a.W;
  // Pixel loops count in 32 bits (the op checks H·W < 2^31): a 64-bit divide per pixel
  // for (row, column) is a ~70-instruction call on the GPU; only buffer offsets are 64-bit.
  const int hw = a.H * a.W;
  T* out = static_cast<T*>(a.out) + m * C * HW;
  plan_row(sh, a, m);
  const int n = sh.n;
  const int64_t src = a.index ? a.index[m] : m;
  if (src < 0 || src >= a.N) {  // the public function rejects this; never read out of bounds
    for (int64_t k = tid; k < C * HW; k += kThreads) out[k] = T(0);
    return;
  }
  const uint8_t* base = a.images + src * C * HW;
  // Stored images alternate between the scratch row and the output row (read as bytes),
  // ending in the scratch row, which the final pass only reads.
  const int stored = count_materialized(sh.steps, n);
  int done = 0;
  int seg = 0;
  for (int t = 0; t < n; ++t) {
    const Step& st = sh.steps[t];
    if (st.kind == kSharpen && t > seg) {
      ++done;
      uint8_t* dst = (stored - done) % 2 == 0 ? a.scratch + m * C * HW : reinterpret_cast<uint8_t*>(out);
      store_image(sh, a, base, seg, t, dst);
      base = dst;
      seg = t;
    }
    if (st.kind == kLut && st.lut != kLutFixed) build_dynamic_lut(sh, a, base, seg, t);
  }
  for (int p = tid; p < hw; p += kThreads) {
    uint8_t v[3];
    eval_pixel(sh, a, base, seg, n, p / a.W, p % a.W, v);
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      if (c >= C) break;
      if constexpr (std::is_same_v<T, uint8_t>) {
        out[c * HW + p] = v[c];
      } else {
        out[c * HW + p] = static_cast<T>(sh.norm[c][v[c]]);
      }
    }
  }
}

// The kernel's view of the op's inputs.
Args args_of(const AugmentInputs& in, int64_t padding, uint8_t* scratch, void* out) {
  Args a{};
  a.images = in.images.data_ptr<uint8_t>();
  a.N = in.N;
  a.C = static_cast<int>(in.C);
  a.H = static_cast<int>(in.H);
  a.W = static_cast<int>(in.W);
  a.L = static_cast<int>(in.L);
  a.ops = in.ops.data_ptr<int32_t>();
  a.mags = in.magnitudes.data_ptr<float>();
  a.index = in.index.defined() ? in.index.data_ptr<int64_t>() : nullptr;
  a.crop = in.crop.defined() ? in.crop.data_ptr<int64_t>() : nullptr;
  a.padding = padding;
  for (int64_t c = 0; c < in.C; ++c) {
    a.fill[c] = in.fill[c];
    a.mean[c] = in.mean[c];
    a.stdv[c] = in.std[c];
  }
  a.scratch = scratch;
  a.out = out;
  return a;
}

}  // namespace

at::Tensor augment_cuda(const AugmentInputs& in, int64_t padding, const std::optional<at::ArrayRef<double>>&,
                        const std::optional<at::ArrayRef<double>>&) {
  const c10::cuda::CUDAGuard guard(in.images.device());
  TORCH_CHECK(in.H * in.W <= 2147483647, "augment: images of ", in.H, " x ", in.W,
              " pixels are too large for the CUDA kernel (at most 2^31 - 1 pixels)");
  auto out = at::empty({in.M, in.C, in.H, in.W}, in.images.options().dtype(in.out_dtype));
  if (out.numel() == 0) return out;
  // Only a sharpen that is not a row's first step stores its input.
  const bool may_store = in.L >= 2 || (in.L >= 1 && in.crop.defined());
  at::Tensor scratch = may_store ? at::empty({in.M, in.C, in.H, in.W}, in.images.options()) : at::Tensor();
  const Args a = args_of(in, padding, may_store ? scratch.data_ptr<uint8_t>() : nullptr, out.data_ptr());
  auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(in.M));
  switch (in.out_dtype) {
    case at::kByte:
      augment_kernel<uint8_t><<<grid, kThreads, 0, stream>>>(a);
      break;
    case at::kFloat:
      augment_kernel<float><<<grid, kThreads, 0, stream>>>(a);
      break;
    case at::kHalf:
      augment_kernel<at::Half><<<grid, kThreads, 0, stream>>>(a);
      break;
    default:
      augment_kernel<at::BFloat16><<<grid, kThreads, 0, stream>>>(a);
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

TORCH_LIBRARY_IMPL(coreaug, CUDA, m) { m.impl("augment", &augment_entry<augment_cuda>); }

}  // namespace coreaug
