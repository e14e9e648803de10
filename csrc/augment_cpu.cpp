// augment on the CPU: rows (output images) in parallel; within a row, scanline by scanline,
// the steps of augment_math.h run as tight loops over the line (coordinates through the
// geometric steps, one gather, then the value steps), so the compiler can vectorise them.
// Per row: one pass per per-image statistic (contrast, autocontrast, equalize), one per
// stored sharpen input, and the final pass that writes uint8 or normalised floats.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "augment.h"
#include "common.h"

// Only from here on: with the FMA clone below, GCC would otherwise fuse a*b+c where
// torchvision rounds twice (C++ modes default to -ffp-contract=fast). no-trapping-math
// changes no value; it lets branch-free float compares vectorise.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off", "no-trapping-math")
#endif
#include "augment_math.h"

#define CA_INLINE inline __attribute__((always_inline))

// Defined here rather than std::min/max: functions from headers included before the pragma
// carry other optimisation options, and GCC will not inline them into these loops.
template <typename T>
CA_INLINE T lo_of(T a, T b) { return b < a ? b : a; }
template <typename T>
CA_INLINE T hi_of(T a, T b) { return a < b ? b : a; }

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
  const uint8_t* images_end;  // one past the last readable byte of images
  int64_t padding;
  uint8_t fill[3];
  void* out;
  const void* norm;  // (C, 256) table of the output type, for float outputs
  float mean[3], std[3];
  int32_t grid_order;  // GridOrder of torch's CPU bmm at this image size
};

// Buffers of one worker thread.
struct Work {
  explicit Work(const Problem& p)
      : ci(p.W), cj(p.W), fs(p.W), idx(p.W), v(p.C * p.W) {}
  std::vector<int32_t> ci, cj;  // source coordinate of each pixel of the line
  std::vector<int32_t> fs;      // step that wrote the pixel's fill, or -1
  std::vector<int32_t> idx;     // flat source offset of each pixel of the line
  std::vector<uint8_t> v;       // (C, W) values of the line
  std::vector<uint8_t> buf[2];  // stored images (sharpen inputs and outputs), ping-pong,
                                // kGatherSlack bytes longer than an image
  Step steps[kMaxSteps];
  uint8_t lut[kMaxSteps][3][256];
  int64_t hist[3][4][256];
};

// The AVX2 gather loads 4 bytes per pixel: a plane is gathered that way when 3 bytes past
// its end are still readable.
constexpr int64_t kGatherSlack = 3;

// vc[j] = plane[idx[j]] for the first 8*k pixels; returns 8*k. A real call (one per line):
// GCC inlines target-specific code only into callers compiled for that target.
__attribute__((target("avx2"), noinline)) int gather_line_avx2(
    const uint8_t* __restrict__ plane, const int32_t* __restrict__ idx, uint8_t* __restrict__ vc, int W) {
  // low byte of each 32-bit lane, packed into the low 8 bytes of the register
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
  int j = 0;
  for (; j + 8 <= W; j += 8) {
    const __m256i ix = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + j));
    const __m256i g = _mm256_i32gather_epi32(reinterpret_cast<const int*>(plane), ix, 1);
    const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(g, pick), order);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(vc + j), _mm256_castsi256_si128(b));
  }
  return j;
}

// vc[j] = plane[idx[j]] for j < W; wide_ok: 3 bytes past the plane are readable.
template <bool kAvx2>
CA_INLINE void gather_line(const uint8_t* __restrict__ plane, const int32_t* __restrict__ idx,
                           uint8_t* __restrict__ vc, int W, bool wide_ok) {
  int j = 0;
  if constexpr (kAvx2) {
    if (wide_ok) j = gather_line_avx2(plane, idx, vc, W);
  }
  for (; j < W; ++j) vc[j] = plane[idx[j]];
}

// Line i of the crop/flip step st (the only step before the value steps) into v: line
// i + dy of the source, shifted by dx, maybe mirrored, zeros outside.
CA_INLINE void crop_line(const Step& st, const uint8_t* base, uint8_t* __restrict__ v, int H, int W, int C,
                         int64_t HW, int i) {
  const int y = i + st.i0;
  const int dx = st.i1;
  // valid output columns: 0 <= (flip ? W-1-j : j) + dx < W
  const int first = st.i2 ? hi_of(0, dx) : hi_of(0, -dx);
  const int last = st.i2 ? lo_of(W - 1, W - 1 + dx) : lo_of(W - 1, W - 1 - dx);
  for (int c = 0; c < C; ++c) {
    uint8_t* __restrict__ vc = v + c * W;
    if (y < 0 || y >= H || first > last) {
      std::memset(vc, 0, W);
      continue;
    }
    const uint8_t* __restrict__ row = base + c * HW + static_cast<int64_t>(y) * W;
    std::memset(vc, 0, first);
    if (st.i2) {
      for (int j = first; j <= last; ++j) vc[j] = row[W - 1 - j + dx];
    } else {
      std::memcpy(vc + first, row + first + dx, last - first + 1);
    }
    std::memset(vc + last + 1, 0, W - 1 - last);
  }
}

// Line i through the geometric (and crop) steps of [seg, t), walked backwards to source
// coordinates, then one gather into w.v. w.fs[j] = the step whose fill pixel j takes, -1
// for none. A pixel that falls off the canvas keeps its last (valid) coordinates, so the
// gather needs no branch; its fill is written by apply_value_steps.
template <bool kAvx2>
CA_INLINE void geometric_line(const Problem& p, Work& w, const uint8_t* base, const uint8_t* base_end, int seg,
                              int t, int i) {
  const int H = static_cast<int>(p.H), W = static_cast<int>(p.W), C = static_cast<int>(p.C);
  const int64_t HW = p.H * p.W;
  int32_t* __restrict__ fs = w.fs.data();
  int32_t* __restrict__ ci = w.ci.data();
  int32_t* __restrict__ cj = w.cj.data();
  for (int j = 0; j < W; ++j) {
    ci[j] = i;
    cj[j] = j;
    fs[j] = -1;
  }
  for (int s = t - 1; s >= seg; --s) {
    const Step& st = w.steps[s];
    if (st.kind == kGeom) {
      const float Wm1 = static_cast<float>(W - 1), Hm1 = static_cast<float>(H - 1);
      for (int j = 0; j < W; ++j) {
        float rx, ry;
        geom_source(st, H, W, ci[j], cj[j], rx, ry);
        const bool ok = on_canvas(rx, ry, H, W);
        const bool live = fs[j] < 0;
        const int nx = static_cast<int>(lo_of(hi_of(rx, 0.f), Wm1));
        const int ny = static_cast<int>(lo_of(hi_of(ry, 0.f), Hm1));
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
  int32_t* __restrict__ idx = w.idx.data();
  for (int j = 0; j < W; ++j) idx[j] = ci[j] * W + cj[j];
  uint8_t* __restrict__ v = w.v.data();
  for (int c = 0; c < C; ++c) {
    const uint8_t* plane = base + c * HW;
    gather_line<kAvx2>(plane, idx, v + c * W, W, base_end - (plane + HW) >= kGatherSlack);
  }
}

// Forwards through the value steps of [seg, t) on the line in w.v; a step's fill replaces
// whatever the pixel held (geometric: the walk left w.fs; otherwise the crop's zeros are
// already in place).
CA_INLINE void apply_value_steps(const Problem& p, Work& w, int seg, int t, bool geometric) {
  const int W = static_cast<int>(p.W), C = static_cast<int>(p.C);
  uint8_t* __restrict__ v = w.v.data();
  const int32_t* __restrict__ fs = w.fs.data();
  for (int s = seg; s < t; ++s) {
    const Step& st = w.steps[s];
    switch (st.kind) {
      case kGeom:
      case kCrop:
        if (!geometric) break;
        for (int c = 0; c < C; ++c) {
          const uint8_t f = st.kind == kCrop ? 0 : p.fill[c];
          uint8_t* __restrict__ vc = v + c * W;
          for (int j = 0; j < W; ++j) vc[j] = fs[j] == s ? f : vc[j];
        }
        break;
      case kLut:
        for (int c = 0; c < C; ++c) {
          const uint8_t* __restrict__ lut = w.lut[s][c];
          uint8_t* __restrict__ vc = v + c * W;
          for (int j = 0; j < W; ++j) vc[j] = lut[vc[j]];
        }
        break;
      case kColorBlend: {
        uint8_t* __restrict__ r = v;
        uint8_t* __restrict__ g = v + W;
        uint8_t* __restrict__ b = v + 2 * W;
        for (int j = 0; j < W; ++j) {
          uint8_t x = r[j], y = g[j], z = b[j];
          color_blend(st, x, y, z);
          r[j] = x;
          g[j] = y;
          b[j] = z;
        }
        break;
      }
      default:
        break;
    }
  }
}

// The image after steps [seg, t) of the row, line i, into w.v. No step in [seg, t) is a
// sharpen: those are stored images (run_row). base_end: one past its last readable byte.
template <bool kAvx2>
CA_INLINE void eval_line(const Problem& p, Work& w, const uint8_t* base, const uint8_t* base_end, int seg,
                         int t, int i) {
  const int64_t HW = p.H * p.W;
  const int W = static_cast<int>(p.W), C = static_cast<int>(p.C);
  // The crop/flip step is only ever step 0, so its zeros come before every value step and
  // can be written by the copy; other geometric steps take the general path.
  bool geometric = false;
  const bool crop = t > seg && w.steps[seg].kind == kCrop;
  for (int s = seg + (crop ? 1 : 0); s < t; ++s) geometric |= w.steps[s].kind == kGeom;
  if (geometric) {
    geometric_line<kAvx2>(p, w, base, base_end, seg, t, i);
  } else if (crop) {
    crop_line(w.steps[seg], base, w.v.data(), static_cast<int>(p.H), W, C, HW, i);
  } else {
    uint8_t* __restrict__ v = w.v.data();
    for (int c = 0; c < C; ++c) std::memcpy(v + c * W, base + c * HW + static_cast<int64_t>(i) * W, W);
  }
  apply_value_steps(p, w, seg, t, geometric);
}

// Contrast's table: the blend towards the mean of the gray image after steps [seg, t).
template <bool kAvx2>
CA_INLINE void contrast_table(const Problem& p, Work& w, const uint8_t* base, const uint8_t* base_end, int seg,
                              int t) {
  const int H = static_cast<int>(p.H), W = static_cast<int>(p.W), C = static_cast<int>(p.C);
  int64_t sum = 0;
  for (int i = 0; i < H; ++i) {
    eval_line<kAvx2>(p, w, base, base_end, seg, t, i);
    const uint8_t* __restrict__ v = w.v.data();
    int32_t line = 0;  // < 255 * W
    if (C == 3) {
      for (int j = 0; j < W; ++j) line += static_cast<int32_t>(gray_floor(v[j], v[W + j], v[2 * W + j]));
    } else {
      for (int j = 0; j < W; ++j) line += v[j];
    }
    sum += line;
  }
  // torch.mean: float32 sum (exact below 2^24) divided by the pixel count
  const float mean = div_rn(static_cast<float>(sum), static_cast<float>(p.H * p.W));
  for (int v = 0; v < 256; ++v) {
    const uint8_t y = contrast_lut_value(w.steps[t], mean, v);
    for (int c = 0; c < C; ++c) w.lut[t][c][v] = y;
  }
}

// AutoContrast's tables: each channel stretched from its lowest to its highest value.
template <bool kAvx2>
CA_INLINE void autocontrast_table(const Problem& p, Work& w, const uint8_t* base, const uint8_t* base_end, int seg,
                                  int t) {
  const int H = static_cast<int>(p.H), W = static_cast<int>(p.W), C = static_cast<int>(p.C);
  uint8_t lo[3] = {255, 255, 255}, hi[3] = {0, 0, 0};
  for (int i = 0; i < H; ++i) {
    eval_line<kAvx2>(p, w, base, base_end, seg, t, i);
    for (int c = 0; c < C; ++c) {
      const uint8_t* __restrict__ vc = w.v.data() + c * W;
      uint8_t l = lo[c], h = hi[c];
      for (int j = 0; j < W; ++j) {
        l = lo_of(l, vc[j]);
        h = hi_of(h, vc[j]);
      }
      lo[c] = l;
      hi[c] = h;
    }
  }
  for (int c = 0; c < C; ++c) {
    for (int v = 0; v < 256; ++v) w.lut[t][c][v] = autocontrast_lut_value(lo[c], hi[c], v);
  }
}

// Equalize's tables, from each channel's histogram: four interleaved histograms per
// channel, so that runs of one value do not serialise on one counter.
template <bool kAvx2>
CA_INLINE void equalize_table(const Problem& p, Work& w, const uint8_t* base, const uint8_t* base_end, int seg,
                              int t) {
  const int H = static_cast<int>(p.H), W = static_cast<int>(p.W), C = static_cast<int>(p.C);
  std::memset(w.hist, 0, sizeof(w.hist));
  for (int i = 0; i < H; ++i) {
    eval_line<kAvx2>(p, w, base, base_end, seg, t, i);
    for (int c = 0; c < C; ++c) {
      const uint8_t* __restrict__ vc = w.v.data() + c * W;
      int64_t(*h)[256] = w.hist[c];
      int j = 0;
      for (; j + 4 <= W; j += 4) {
        ++h[0][vc[j]];
        ++h[1][vc[j + 1]];
        ++h[2][vc[j + 2]];
        ++h[3][vc[j + 3]];
      }
      for (; j < W; ++j) ++h[0][vc[j]];
    }
  }
  for (int c = 0; c < C; ++c) {
    int64_t h[256];
    for (int v = 0; v < 256; ++v) h[v] = w.hist[c][0][v] + w.hist[c][1][v] + w.hist[c][2][v] + w.hist[c][3][v];
    int top = 255;
    while (top > 0 && h[top] == 0) --top;
    const int64_t step = (p.H * p.W - h[top]) / 255;
    int64_t cum = 0;
    for (int v = 0; v < 256; ++v) {
      w.lut[t][c][v] = equalize_lut_value(cum, step, v);
      cum += h[v];
    }
  }
}

// Fills w.lut[t] from statistics of the image after steps [seg, t).
template <bool kAvx2>
CA_INLINE void build_dynamic_lut(const Problem& p, Work& w, const uint8_t* base, const uint8_t* base_end,
                                 int seg, int t) {
  if (w.steps[t].lut == kLutContrast) {
    contrast_table<kAvx2>(p, w, base, base_end, seg, t);
  } else if (w.steps[t].lut == kLutAutoContrast) {
    autocontrast_table<kAvx2>(p, w, base, base_end, seg, t);
  } else {
    equalize_table<kAvx2>(p, w, base, base_end, seg, t);
  }
}

// Sharpness of a whole stored image src into dst (both (C, H, W)).
CA_INLINE void sharpen_image(const Problem& p, const Step& st, const uint8_t* src, uint8_t* dst) {
  const int64_t H = p.H, W = p.W, HW = H * W;
  for (int64_t c = 0; c < p.C; ++c) {
    const uint8_t* __restrict__ in = src + c * HW;
    uint8_t* __restrict__ out = dst + c * HW;
    std::memcpy(out, in, W);
    std::memcpy(out + (H - 1) * W, in + (H - 1) * W, W);
    for (int64_t i = 1; i + 1 < H; ++i) {
      const uint8_t* __restrict__ a = in + (i - 1) * W;
      const uint8_t* __restrict__ m = in + i * W;
      const uint8_t* __restrict__ b = in + (i + 1) * W;
      uint8_t* __restrict__ o = out + i * W;
      o[0] = m[0];
      o[W - 1] = m[W - 1];
      for (int64_t j = 1; j + 1 < W; ++j) {
        const int v = m[j];
        const int S = a[j - 1] + a[j] + a[j + 1] + m[j - 1] + m[j + 1] + b[j - 1] + b[j] + b[j + 1] + 5 * v;
        o[j] = sharpen_blend(S, v, st.alpha);
      }
    }
  }
}

// Row m's steps and their fixed tables, into w; returns how many steps.
CA_INLINE int plan_row(const Problem& p, Work& w, int64_t m) {
  const int n = compile_row(p.ops + m * p.L, p.mags + m * p.L, static_cast<int>(p.L),
                            p.crop ? p.crop + 3 * m : nullptr, p.padding, p.C, p.H, p.W, w.steps,
                            p.grid_order);
  for (int s = 0; s < n; ++s) {
    if (w.steps[s].kind == kLut && w.steps[s].lut == kLutFixed) {
      for (int v = 0; v < 256; ++v) {
        const uint8_t y = fixed_lut_value(w.steps[s], v);
        for (int c = 0; c < p.C; ++c) w.lut[s][c][v] = y;
      }
    }
  }
  return n;
}

// The image the next steps read: the source, or one of w.buf (held) after a sharpen.
struct Source {
  const uint8_t* base;
  const uint8_t* end;  // one past its last readable byte
  int held;            // which w.buf it is, -1 for the source image
};

// Stores the image of steps [seg, t) of src into the w.buf src does not hold (C, H, W
// plus kGatherSlack bytes); src then reads it.
template <bool kAvx2>
CA_INLINE void store_image(const Problem& p, Work& w, Source& src, int seg, int t) {
  const int64_t C = p.C, H = p.H, W = p.W, HW = H * W;
  const int to = src.held == 0 ? 1 : 0;
  std::vector<uint8_t>& dst = w.buf[to];
  dst.resize(C * HW + kGatherSlack);
  for (int64_t i = 0; i < H; ++i) {
    eval_line<kAvx2>(p, w, src.base, src.end, seg, t, static_cast<int>(i));
    for (int64_t c = 0; c < C; ++c) std::memcpy(dst.data() + c * HW + i * W, w.v.data() + c * W, W);
  }
  src = {dst.data(), dst.data() + dst.size(), to};
}

// Steps [seg, n) of every pixel of src, written to row m of the output as T.
template <typename T, bool kAvx2>
CA_INLINE void write_row(const Problem& p, Work& w, int64_t m, const Source& src, int seg, int n) {
  const int64_t C = p.C, H = p.H, W = p.W, HW = H * W;
  T* out = static_cast<T*>(p.out) + m * C * HW;
  const T* norm = static_cast<const T*>(p.norm);
  for (int64_t i = 0; i < H; ++i) {
    eval_line<kAvx2>(p, w, src.base, src.end, seg, n, static_cast<int>(i));
    for (int64_t c = 0; c < C; ++c) {
      const uint8_t* __restrict__ vc = w.v.data() + c * W;
      T* __restrict__ o = out + c * HW + i * W;
      if constexpr (std::is_same_v<T, uint8_t>) {
        std::memcpy(o, vc, W);
      } else if constexpr (std::is_same_v<T, float>) {
        // the table's own arithmetic, in a loop that vectorises
        const float mu = p.mean[c], sd = p.std[c];
        for (int64_t j = 0; j < W; ++j) o[j] = normalized_value(vc[j], mu, sd);
      } else {
        const T* __restrict__ table = norm + c * 256;
        for (int64_t j = 0; j < W; ++j) o[j] = table[vc[j]];
      }
    }
  }
}

template <typename T, bool kAvx2>
CA_INLINE void run_row(const Problem& p, Work& w, int64_t m) {
  const int64_t C = p.C, HW = p.H * p.W;
  const int n = plan_row(p, w, m);
  const int64_t row = p.index ? p.index[m] : m;
  Source src{p.images + row * C * HW, p.images_end, -1};
  int seg = 0;
  for (int t = 0; t < n; ++t) {
    const Step& st = w.steps[t];
    if (st.kind == kSharpen) {
      // The stencil needs its input image: store it unless it is already stored (or the
      // source), then store the sharpened image and continue from there.
      if (t > seg) store_image<kAvx2>(p, w, src, seg, t);
      const int to = src.held == 0 ? 1 : 0;
      w.buf[to].resize(C * HW + kGatherSlack);
      sharpen_image(p, st, src.base, w.buf[to].data());
      src = {w.buf[to].data(), w.buf[to].data() + w.buf[to].size(), to};
      seg = t + 1;
      continue;
    }
    if (st.kind == kLut && st.lut != kLutFixed) build_dynamic_lut<kAvx2>(p, w, src.base, src.end, seg, t);
  }
  write_row<T, kAvx2>(p, w, m, src, seg, n);
}

template <typename T, bool kAvx2>
CA_INLINE void run_rows_body(const Problem& p, int64_t begin, int64_t end) {
  Work w(p);
  for (int64_t m = begin; m < end; ++m) run_row<T, kAvx2>(p, w, m);
}

// Two copies of the whole row pipeline: one where fused multiply-adds (which torch's own
// kernels use, and which must round once) are single instructions, one portable.
template <typename T>
__attribute__((target("avx2,fma"))) void run_rows_fma(const Problem& p, int64_t b, int64_t e) {
  run_rows_body<T, true>(p, b, e);
}

template <typename T>
void run_rows_portable(const Problem& p, int64_t b, int64_t e) {
  run_rows_body<T, false>(p, b, e);
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

// The GridOrder of torch's float32 bmm on this CPU for an H x W grid, as torchvision calls
// it (rows (x, y, 1) times a transposed 2x3 matrix). The BLAS kernel, and with it the
// rounding order, depends on the CPU and perhaps the size, so each size is asked once: a
// grid with a generic matrix (rotation, translation and shear together) tells the orders
// apart. If none matches exactly, the closest is used.
int32_t torch_grid_order(int64_t H, int64_t W) {
  static std::mutex mu;
  static std::map<std::pair<int64_t, int64_t>, int32_t> known;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(H, W);
  if (auto it = known.find(key); it != known.end()) return it->second;
  float r[6];
  inverse_affine(-0.5 * static_cast<double>(W), -0.5 * static_cast<double>(H), -33.3, 3.0, -2.0, 17.0, -9.0, H,
                 W, r);
  auto base = at::empty({1, H * W, 3}, at::TensorOptions().dtype(at::kFloat));
  float* b = base.data_ptr<float>();
  for (int64_t i = 0; i < H; ++i) {
    for (int64_t j = 0; j < W; ++j) {
      float* row = b + 3 * (i * W + j);
      row[0] = grid_coord(static_cast<int>(j), static_cast<int>(W));
      row[1] = grid_coord(static_cast<int>(i), static_cast<int>(H));
      row[2] = 1.f;
    }
  }
  const auto theta = at::from_blob(r, {1, 2, 3}, at::TensorOptions().dtype(at::kFloat)).clone().transpose(1, 2);
  const auto grid = at::bmm(base, theta).contiguous();
  const float* g = grid.data_ptr<float>();
  int32_t best = kGridFma;
  int64_t best_misses = -1;
  for (int32_t order : {kGridFma, kGridSumLeft, kGridSumRight}) {
    int64_t misses = 0;
    for (int64_t k = 0; k < H * W; ++k) {
      const float x = b[3 * k], y = b[3 * k + 1];
      misses += grid_dot(order, x, y, r[0], r[1], r[2]) != g[2 * k];
      misses += grid_dot(order, x, y, r[3], r[4], r[5]) != g[2 * k + 1];
    }
    if (best_misses < 0 || misses < best_misses) {
      best = order;
      best_misses = misses;
    }
  }
  known.emplace(key, best);
  return best;
}

at::ScalarType check_args(const at::Tensor& images, const at::Tensor& ops,
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
  TORCH_CHECK(images.size(2) * images.size(3) < (int64_t{1} << 31),
              "images of more than 2^31 pixels are not supported");
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

}  // namespace

AugmentInputs augment_inputs(const at::Tensor& images, const at::Tensor& ops, const at::Tensor& magnitudes,
                             const std::optional<at::Tensor>& index, const std::optional<at::Tensor>& crop,
                             int64_t padding, at::IntArrayRef fill, std::optional<at::ScalarType> out_dtype,
                             const std::optional<at::ArrayRef<double>>& mean,
                             const std::optional<at::ArrayRef<double>>& stdv) {
  AugmentInputs in;
  in.out_dtype = check_args(images, ops, magnitudes, index, crop, padding, fill, out_dtype, mean, stdv);
  in.N = images.size(0);
  in.C = images.size(1);
  in.H = images.size(2);
  in.W = images.size(3);
  in.M = ops.size(0);
  in.L = ops.size(1);
  in.images = images.contiguous();
  in.ops = ops.contiguous();
  in.magnitudes = magnitudes.contiguous();
  in.index = index ? index->contiguous() : at::Tensor();
  in.crop = crop ? crop->contiguous() : at::Tensor();
  for (int64_t c = 0; c < in.C; ++c) {
    in.fill[c] = static_cast<uint8_t>(fill[fill.size() == 1 ? 0 : c]);
    in.mean[c] = mean ? static_cast<float>((*mean)[mean->size() == 1 ? 0 : c]) : 0.f;
    in.std[c] = stdv ? static_cast<float>((*stdv)[stdv->size() == 1 ? 0 : c]) : 1.f;
  }
  return in;
}

namespace {

// Op ids and image indices, checked up front: throwing from inside the parallel region
// would abort.
void check_values(const AugmentInputs& in) {
  const int32_t* op = in.ops.data_ptr<int32_t>();
  for (int64_t k = 0; k < in.M * in.L; ++k) {
    TORCH_CHECK(op[k] >= 0 && op[k] < augment::kNumOps, "ops holds ", op[k], ", not an op id in [0, ",
                static_cast<int>(augment::kNumOps), ")");
  }
  if (in.index.defined()) {
    const int64_t* ip = in.index.data_ptr<int64_t>();
    for (int64_t k = 0; k < in.M; ++k) {
      TORCH_CHECK(ip[k] >= 0 && ip[k] < in.N, "index[", k, "] = ", ip[k], " is outside [0, ", in.N, ")");
    }
  }
}

Problem problem_of(const AugmentInputs& in, int64_t padding, const at::Tensor& out) {
  Problem p{};
  p.images = in.images.data_ptr<uint8_t>();
  p.images_end = p.images + in.images.numel();
  p.N = in.N;
  p.C = in.C;
  p.H = in.H;
  p.W = in.W;
  p.M = in.M;
  p.L = in.L;
  p.ops = in.ops.data_ptr<int32_t>();
  p.mags = in.magnitudes.data_ptr<float>();
  p.index = in.index.defined() ? in.index.data_ptr<int64_t>() : nullptr;
  p.crop = in.crop.defined() ? in.crop.data_ptr<int64_t>() : nullptr;
  p.padding = padding;
  p.grid_order = torch_grid_order(in.H, in.W);
  for (int64_t c = 0; c < in.C; ++c) {
    p.fill[c] = in.fill[c];
    p.mean[c] = in.mean[c];
    p.std[c] = in.std[c];
  }
  p.out = out.data_ptr();
  return p;
}

// Every row, for output type T; float outputs read their values from a (C, 256) table.
template <typename T>
void run_rows_to(Problem& p, const std::optional<at::ArrayRef<double>>& mean,
                 const std::optional<at::ArrayRef<double>>& stdv, at::ScalarType dt) {
  at::Tensor table;
  if constexpr (!std::is_same_v<T, uint8_t>) {
    table = norm_table<T>(p.C, mean, stdv, dt);
    p.norm = table.data_ptr();
  }
  run_rows<T>(p);
}

}  // namespace

at::Tensor augment_cpu(const AugmentInputs& in, int64_t padding, const std::optional<at::ArrayRef<double>>& mean,
                       const std::optional<at::ArrayRef<double>>& stdv) {
  check_values(in);
  auto out = at::empty({in.M, in.C, in.H, in.W}, in.images.options().dtype(in.out_dtype));
  if (out.numel() == 0) return out;
  advise_huge_pages(out);
  Problem p = problem_of(in, padding, out);
  switch (in.out_dtype) {
    case at::kByte:
      run_rows_to<uint8_t>(p, mean, stdv, in.out_dtype);
      break;
    case at::kFloat:
      run_rows_to<float>(p, mean, stdv, in.out_dtype);
      break;
    case at::kHalf:
      run_rows_to<at::Half>(p, mean, stdv, in.out_dtype);
      break;
    default:
      run_rows_to<at::BFloat16>(p, mean, stdv, in.out_dtype);
      break;
  }
  return out;
}

TORCH_LIBRARY_IMPL(coreaug, CPU, m) { m.impl("augment", &augment_entry<augment_cpu>); }

}  // namespace coreaug
