// augment on the CPU: rows (output images) in parallel; within a row, scanline by scanline,
// the steps of augment_math.h run as tight loops over the line (coordinates through the
// geometric steps, one gather, then the value steps), so the compiler can vectorise them.
// Per row: one pass per per-image statistic (contrast, autocontrast, equalize), one per
// stored sharpen input, and the final pass that writes uint8 or normalised floats.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "common.h"

// Only from here on: with the FMA clone below, GCC would otherwise fuse a*b+c where
// torchvision rounds twice (C++ modes default to -ffp-contract=fast).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "augment_math.h"

#define CA_INLINE inline __attribute__((always_inline))

namespace coreaug {
namespace {

using namespace augment;

struct Problem {
  const uint8_t* images;
  int64_t N, C, H, W, M, L;
  const int32_t* ops;
  const float* mags;
  const int64_t* index;  // nullptr: row m reads image m
  const int64_t* crop;   // (M, 3) top, left, flip; nullptr: no crop/flip step
  int64_t padding;
  uint8_t fill[3];
  void* out;
  const void* norm;  // (C, 256) table of the output type, for float outputs
};

// Buffers of one worker thread.
struct Work {
  explicit Work(const Problem& p)
      : ci(p.W), cj(p.W), fs(p.W), v(p.C * p.W), buf{std::vector<uint8_t>(), std::vector<uint8_t>()} {}
  std::vector<int32_t> ci, cj;  // source coordinate of each pixel of the line
  std::vector<int32_t> fs;      // step that wrote the pixel's fill, or -1
  std::vector<uint8_t> v;       // (C, W) values of the line
  std::vector<uint8_t> buf[2];  // stored sharpen inputs, ping-pong
  Step steps[kMaxSteps];
  uint8_t lut[kMaxSteps][3][256];
  int64_t hist[3][256];
};

// The image after steps [seg, t) of the row, line i, into w.v.
CA_INLINE void eval_line(const Problem& p, Work& w, const uint8_t* base, int seg, int t, int i) {
  const int H = static_cast<int>(p.H), W = static_cast<int>(p.W), C = static_cast<int>(p.C);
  int32_t* ci = w.ci.data();
  int32_t* cj = w.cj.data();
  int32_t* fs = w.fs.data();
  uint8_t* v = w.v.data();
  for (int j = 0; j < W; ++j) {
    ci[j] = i;
    cj[j] = j;
    fs[j] = -1;
  }
  // Backwards through the geometric steps. A pixel that falls off the canvas keeps its last
  // (valid) coordinates, so the gather below needs no branch; its fill is written later.
  for (int s = t - 1; s >= seg; --s) {
    const Step& st = w.steps[s];
    if (st.kind == kGeom) {
      const float Wm1 = static_cast<float>(W - 1), Hm1 = static_cast<float>(H - 1);
      for (int j = 0; j < W; ++j) {
        float rx, ry;
        geom_source(st, H, W, ci[j], cj[j], rx, ry);
        const bool ok = on_canvas(rx, ry, H, W);
        const bool live = fs[j] < 0;
        const int nx = static_cast<int>(std::min(std::max(rx, 0.f), Wm1));
        const int ny = static_cast<int>(std::min(std::max(ry, 0.f), Hm1));
        cj[j] = (live & ok) ? nx : cj[j];
        ci[j] = (live & ok) ? ny : ci[j];
        fs[j] = (live & !ok) ? s : fs[j];
      }
    } else if (st.kind == kCrop) {
      for (int j = 0; j < W; ++j) {
        const int y = ci[j] + st.i0;
        const int x = (st.i2 ? W - 1 - cj[j] : cj[j]) + st.i1;
        const bool ok = (y >= 0) & (y < H) & (x >= 0) & (x < W);
        const bool live = fs[j] < 0;
        cj[j] = (live & ok) ? x : cj[j];
        ci[j] = (live & ok) ? y : ci[j];
        fs[j] = (live & !ok) ? s : fs[j];
      }
    }
  }
  const int64_t HW = p.H * p.W;
  const bool sharp = t > seg && w.steps[seg].kind == kSharpen;
  for (int c = 0; c < C; ++c) {
    const uint8_t* plane = base + c * HW;
    uint8_t* vc = v + c * W;
    if (sharp) {
      const float alpha = w.steps[seg].alpha;
      for (int j = 0; j < W; ++j) vc[j] = sharpen_value(plane, H, W, ci[j], cj[j], alpha);
    } else {
      for (int j = 0; j < W; ++j) vc[j] = plane[static_cast<int64_t>(ci[j]) * W + cj[j]];
    }
  }
  // Forwards through the value steps; a step's fill replaces whatever the pixel held.
  for (int s = seg + (sharp ? 1 : 0); s < t; ++s) {
    const Step& st = w.steps[s];
    switch (st.kind) {
      case kGeom:
      case kCrop:
        for (int c = 0; c < C; ++c) {
          const uint8_t f = st.kind == kCrop ? 0 : p.fill[c];
          uint8_t* vc = v + c * W;
          for (int j = 0; j < W; ++j) vc[j] = fs[j] == s ? f : vc[j];
        }
        break;
      case kLut:
        for (int c = 0; c < C; ++c) {
          const uint8_t* lut = w.lut[s][c];
          uint8_t* vc = v + c * W;
          for (int j = 0; j < W; ++j) vc[j] = lut[vc[j]];
        }
        break;
      case kColorBlend:
        for (int j = 0; j < W; ++j) color_blend(st, v[j], v[W + j], v[2 * W + j]);
        break;
      default:
        break;
    }
  }
}

// Fills w.lut[t] from statistics of the image after steps [seg, t).
CA_INLINE void build_dynamic_lut(const Problem& p, Work& w, const uint8_t* base, int seg, int t) {
  const int H = static_cast<int>(p.H), W = static_cast<int>(p.W), C = static_cast<int>(p.C);
  const Step& st = w.steps[t];
  if (st.lut == kLutContrast) {
    int64_t sum = 0;
    for (int i = 0; i < H; ++i) {
      eval_line(p, w, base, seg, t, i);
      const uint8_t* v = w.v.data();
      if (C == 3) {
        for (int j = 0; j < W; ++j) sum += static_cast<int64_t>(gray_floor(v[j], v[W + j], v[2 * W + j]));
      } else {
        for (int j = 0; j < W; ++j) sum += v[j];
      }
    }
    // torch.mean: float32 sum (exact below 2^24) divided by the pixel count
    const float mean = div_rn(static_cast<float>(sum), static_cast<float>(p.H * p.W));
    for (int v = 0; v < 256; ++v) {
      const uint8_t y = contrast_lut_value(st, mean, v);
      for (int c = 0; c < C; ++c) w.lut[t][c][v] = y;
    }
    return;
  }
  std::memset(w.hist, 0, sizeof(w.hist));
  for (int i = 0; i < H; ++i) {
    eval_line(p, w, base, seg, t, i);
    for (int c = 0; c < C; ++c) {
      const uint8_t* vc = w.v.data() + c * W;
      int64_t* h = w.hist[c];
      for (int j = 0; j < W; ++j) ++h[vc[j]];
    }
  }
  for (int c = 0; c < C; ++c) {
    const int64_t* h = w.hist[c];
    int lo = 0, hi = 255;
    while (lo < 255 && h[lo] == 0) ++lo;
    while (hi > 0 && h[hi] == 0) --hi;
    if (st.lut == kLutAutoContrast) {
      for (int v = 0; v < 256; ++v) w.lut[t][c][v] = autocontrast_lut_value(lo, hi, v);
    } else {
      const int64_t step = (p.H * p.W - h[hi]) / 255;
      int64_t cum = 0;
      for (int v = 0; v < 256; ++v) {
        w.lut[t][c][v] = equalize_lut_value(cum, step, v);
        cum += h[v];
      }
    }
  }
}

template <typename T>
CA_INLINE void run_row(const Problem& p, Work& w, int64_t m) {
  const int64_t C = p.C, H = p.H, W = p.W, HW = H * W;
  const int n = compile_row(p.ops + m * p.L, p.mags + m * p.L, static_cast<int>(p.L),
                            p.crop ? p.crop + 3 * m : nullptr, p.padding, C, H, W, w.steps);
  for (int s = 0; s < n; ++s) {
    if (w.steps[s].kind == kLut && w.steps[s].lut == kLutFixed) {
      for (int v = 0; v < 256; ++v) {
        const uint8_t y = fixed_lut_value(w.steps[s], v);
        for (int c = 0; c < C; ++c) w.lut[s][c][v] = y;
      }
    }
  }
  const int64_t src = p.index ? p.index[m] : m;
  const uint8_t* base = p.images + src * C * HW;
  int seg = 0, which = 0;
  for (int t = 0; t < n; ++t) {
    const Step& st = w.steps[t];
    if (st.kind == kSharpen && t > seg) {
      std::vector<uint8_t>& dst = w.buf[which];
      which ^= 1;
      dst.resize(C * HW);
      for (int i = 0; i < H; ++i) {
        eval_line(p, w, base, seg, t, static_cast<int>(i));
        for (int64_t c = 0; c < C; ++c) std::memcpy(dst.data() + c * HW + i * W, w.v.data() + c * W, W);
      }
      base = dst.data();
      seg = t;
    }
    if (st.kind == kLut && st.lut != kLutFixed) build_dynamic_lut(p, w, base, seg, t);
  }
  T* out = static_cast<T*>(p.out) + m * C * HW;
  const T* norm = static_cast<const T*>(p.norm);
  for (int i = 0; i < H; ++i) {
    eval_line(p, w, base, seg, n, static_cast<int>(i));
    for (int64_t c = 0; c < C; ++c) {
      const uint8_t* vc = w.v.data() + c * W;
      T* o = out + c * HW + i * W;
      if constexpr (std::is_same_v<T, uint8_t>) {
        std::memcpy(o, vc, W);
      } else {
        const T* table = norm + c * 256;
        for (int64_t j = 0; j < W; ++j) o[j] = table[vc[j]];
      }
    }
  }
}

template <typename T>
CA_INLINE void run_rows_body(const Problem& p, int64_t begin, int64_t end) {
  Work w(p);
  for (int64_t m = begin; m < end; ++m) run_row<T>(p, w, m);
}

// Two copies of the whole row pipeline: one where fused multiply-adds (which torch's own
// kernels use, and which must round once) are single instructions, one portable.
template <typename T>
__attribute__((target("avx2,fma"))) void run_rows_fma(const Problem& p, int64_t b, int64_t e) {
  run_rows_body<T>(p, b, e);
}

template <typename T>
void run_rows_portable(const Problem& p, int64_t b, int64_t e) {
  run_rows_body<T>(p, b, e);
}

template <typename T>
void run_rows(const Problem& p) {
  static const bool has_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  at::parallel_for(0, p.M, 1, [&](int64_t b, int64_t e) {
    if (has_fma) {
      run_rows_fma<T>(p, b, e);
    } else {
      run_rows_portable<T>(p, b, e);
    }
  });
}

template <typename T>
at::Tensor norm_table(int64_t C, const std::optional<at::ArrayRef<double>>& mean,
                      const std::optional<at::ArrayRef<double>>& stdv, at::ScalarType dtype) {
  auto table = at::empty({C, 256}, at::TensorOptions().dtype(dtype));
  T* t = table.data_ptr<T>();
  for (int64_t c = 0; c < C; ++c) {
    const float mu = mean ? static_cast<float>((*mean)[mean->size() == 1 ? 0 : c]) : 0.f;
    const float sd = stdv ? static_cast<float>((*stdv)[stdv->size() == 1 ? 0 : c]) : 1.f;
    for (int v = 0; v < 256; ++v) t[c * 256 + v] = static_cast<T>(normalized_value(v, mu, sd));
  }
  return table;
}

}  // namespace

// Shared argument checks of the raw op (the public function has already given friendly
// errors); returns the output dtype.
at::ScalarType augment_check_args(const at::Tensor& images, const at::Tensor& ops,
                                   const at::Tensor& magnitudes,
                                   const std::optional<at::Tensor>& index,
                                   const std::optional<at::Tensor>& crop, int64_t padding,
                                   at::IntArrayRef fill, std::optional<at::ScalarType> out_dtype,
                                   const std::optional<at::ArrayRef<double>>& mean,
                                   const std::optional<at::ArrayRef<double>>& stdv) {
  COREAUG_CHECK_DIM(images, 4);
  COREAUG_CHECK_DTYPE(images, at::kByte);
  const int64_t C = images.size(1);
  TORCH_CHECK(C == 1 || C == 3, "images must have 1 or 3 channels, got ", C);
  COREAUG_CHECK_DIM(ops, 2);
  COREAUG_CHECK_DTYPE(ops, at::kInt);
  COREAUG_CHECK_DIM(magnitudes, 2);
  COREAUG_CHECK_DTYPE(magnitudes, at::kFloat);
  TORCH_CHECK(ops.sizes() == magnitudes.sizes(), "ops ", ops.sizes(), " and magnitudes ",
              magnitudes.sizes(), " differ in shape");
  TORCH_CHECK(ops.size(1) <= augment::kMaxOps, "at most ", augment::kMaxOps, " ops per row, got ",
              ops.size(1));
  const int64_t M = ops.size(0);
  COREAUG_CHECK_DEVICE(ops, images.device());
  COREAUG_CHECK_DEVICE(magnitudes, images.device());
  if (index) {
    COREAUG_CHECK_DIM((*index), 1);
    COREAUG_CHECK_DTYPE((*index), at::kLong);
    COREAUG_CHECK_DEVICE((*index), images.device());
    TORCH_CHECK(index->size(0) == M, "index has ", index->size(0), " rows, ops has ", M);
  } else {
    TORCH_CHECK(images.size(0) == M, "without index, ops needs one row per image: ", M, " vs ",
                images.size(0));
  }
  if (crop) {
    COREAUG_CHECK_DIM((*crop), 2);
    COREAUG_CHECK_DTYPE((*crop), at::kLong);
    COREAUG_CHECK_DEVICE((*crop), images.device());
    TORCH_CHECK(crop->size(0) == M && crop->size(1) == 3, "crop must be (", M, ", 3), got ",
                crop->sizes());
  }
  TORCH_CHECK(padding >= 0, "padding must be >= 0, got ", padding);
  TORCH_CHECK(fill.size() == 1 || static_cast<int64_t>(fill.size()) == C,
              "fill needs 1 or C values, got ", fill.size());
  for (int64_t f : fill) TORCH_CHECK(f >= 0 && f <= 255, "fill values must lie in [0, 255], got ", f);
  const at::ScalarType dt = out_dtype.value_or(at::kByte);
  TORCH_CHECK(dt == at::kByte || dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16,
              "out_dtype must be uint8, float32, float16 or bfloat16, got ", dt);
  for (const auto* v : {&mean, &stdv}) {
    if (v->has_value()) {
      TORCH_CHECK(dt != at::kByte, "mean/std need a floating out_dtype");
      TORCH_CHECK((*v)->size() == 1 || static_cast<int64_t>((*v)->size()) == C,
                  "mean/std need 1 or C values, got ", (*v)->size());
    }
  }
  if (stdv) {
    for (double s : *stdv) TORCH_CHECK(s != 0.0, "std must be nonzero");
  }
  return dt;
}

at::Tensor augment_cpu(const at::Tensor& images, const at::Tensor& ops, const at::Tensor& magnitudes,
                       const std::optional<at::Tensor>& index, const std::optional<at::Tensor>& crop,
                       int64_t padding, at::IntArrayRef fill, std::optional<at::ScalarType> out_dtype,
                       std::optional<at::ArrayRef<double>> mean, std::optional<at::ArrayRef<double>> stdv) {
  const at::ScalarType dt =
      augment_check_args(images, ops, magnitudes, index, crop, padding, fill, out_dtype, mean, stdv);
  const int64_t N = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  const int64_t M = ops.size(0), L = ops.size(1);
  auto x = images.contiguous();
  auto o = ops.contiguous();
  auto mg = magnitudes.contiguous();
  at::Tensor idx = index ? index->contiguous() : at::Tensor();
  at::Tensor cr = crop ? crop->contiguous() : at::Tensor();
  // Checked up front: throwing from inside the parallel region would abort.
  const int32_t* op = o.data_ptr<int32_t>();
  for (int64_t k = 0; k < M * L; ++k) {
    TORCH_CHECK(op[k] >= 0 && op[k] < augment::kNumOps, "ops holds ", op[k], ", not an op id in [0, ",
                static_cast<int>(augment::kNumOps), ")");
  }
  if (index) {
    const int64_t* ip = idx.data_ptr<int64_t>();
    for (int64_t k = 0; k < M; ++k) {
      TORCH_CHECK(ip[k] >= 0 && ip[k] < N, "index[", k, "] = ", ip[k], " is outside [0, ", N, ")");
    }
  }
  auto out = at::empty({M, C, H, W}, images.options().dtype(dt));
  if (out.numel() == 0) return out;

  Problem p{};
  p.images = x.data_ptr<uint8_t>();
  p.N = N;
  p.C = C;
  p.H = H;
  p.W = W;
  p.M = M;
  p.L = L;
  p.ops = op;
  p.mags = mg.data_ptr<float>();
  p.index = index ? idx.data_ptr<int64_t>() : nullptr;
  p.crop = crop ? cr.data_ptr<int64_t>() : nullptr;
  p.padding = padding;
  for (int64_t c = 0; c < C; ++c) p.fill[c] = static_cast<uint8_t>(fill[fill.size() == 1 ? 0 : c]);
  p.out = out.data_ptr();
  at::Tensor table;
  switch (dt) {
    case at::kByte:
      run_rows<uint8_t>(p);
      break;
    case at::kFloat:
      table = norm_table<float>(C, mean, stdv, dt);
      p.norm = table.data_ptr();
      run_rows<float>(p);
      break;
    case at::kHalf:
      table = norm_table<at::Half>(C, mean, stdv, dt);
      p.norm = table.data_ptr();
      run_rows<at::Half>(p);
      break;
    default:
      table = norm_table<at::BFloat16>(C, mean, stdv, dt);
      p.norm = table.data_ptr();
      run_rows<at::BFloat16>(p);
      break;
  }
  return out;
}

TORCH_LIBRARY_IMPL(coreaug, CPU, m) { m.impl("augment", &augment_cpu); }

}  // namespace coreaug
