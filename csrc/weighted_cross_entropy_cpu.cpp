// weighted_cross_entropy on the CPU: rows in parallel. The forward reads each row twice
// (max, then Σexp) and writes two numbers per row; the backward reads it once more,
// recomputing the softmax from the saved log-sum-exp, and writes the gradient.
//
// Speed: the unfused `(F.cross_entropy(x, y, reduction="none") * w).sum()` runs ATen's
// AVX2/AVX-512 kernels, so a scalar loop calling std::exp would lose to it despite doing
// less memory traffic. Rows of float32, float16 and bfloat16 are therefore processed in
// float32 with GCC vector extensions, a polynomial exp and vectorised 16-bit conversions.
// On x86-64 the row functions are built three times, 16 lanes for AVX-512, 8 for AVX2+FMA
// and 4 for the baseline, and picked once by CPU features (machine_isa): the one binary runs
// on any x86-64 with the widest vectors the machine has. Machines with different vector
// widths may therefore differ in the last bit. float64 (used by gradcheck) takes a plain
// scalar path with std::exp.
#include <ATen/Dispatch.h>
#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "weighted_cross_entropy.h"

// Targets named by feature lists and chosen by __builtin_cpu_supports, not
// target_clones("arch=x86-64-v3"), whose GCC 12 resolver picked the baseline clone on an
// AVX2 AMD EPYC.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define COREAUG_ISA_DISPATCH 1
#define COREAUG_V4 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2,lzcnt,movbe,popcnt")))
#define COREAUG_V3 __attribute__((target("avx2,fma,f16c,bmi,bmi2,lzcnt,movbe,popcnt")))
#else
#define COREAUG_V4
#define COREAUG_V3
#endif
// The helpers must be inlined into each variant to be compiled for its instruction set.
#define COREAUG_INLINE inline __attribute__((always_inline))

// A vector return value changes the calling convention between the variants; that is
// harmless here, where every helper returning one is inlined and file-local. (Vector
// arguments go by reference, which would otherwise draw the same note.)
#pragma GCC diagnostic ignored "-Wpsabi"

namespace coreaug {
namespace {

// L lanes of float32, uint32 and uint16: 16 for AVX-512, 8 for AVX2, 4 for the baseline.
// Each variant uses its machine's native width: GCC 12 lowers 64-byte vectors on an AVX2
// target element by element (compares and selects included), which ran 2.5x slower than
// ATen's unfused kernels on an AMD EPYC.
template <int L>
struct Vec {
  typedef float F __attribute__((vector_size(4 * L)));
  typedef uint32_t U __attribute__((vector_size(4 * L)));
  typedef uint16_t H __attribute__((vector_size(2 * L)));
};

// exp(x) for x <= 0 (the only arguments softmax needs), as scalar or L lanes:
// x = n·ln2 + r with |r| <= ln2/2, e^r by its degree-7 Taylor polynomial (truncation
// error < 6e-9 relative), 2^n added to the exponent bits. Below -87.3 (where the
// result would be denormal) it returns 0. NaN inputs give an unspecified finite
// value: the row functions detect NaN per row instead (through z = Σ(x − m)).
template <typename F, typename U>
COREAUG_INLINE F exp_nonpositive(const F& x) {
  const F zero = {};
  const F lo = zero - 87.3f;  // a broadcast that compiles for scalars and vectors alike
  const F xc = x < lo ? lo : x;
  const float magic = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer in the low bits
  const F t = xc * 1.44269504088896341f + magic;
  const F n = t - magic;
  const U ni = __builtin_bit_cast(U, t) - __builtin_bit_cast(uint32_t, magic);
  F r = xc - n * 0.693359375f;  // ln 2 split in two so that n·hi is exact
  r = r - n * -2.12194440e-4f;
  F p = r * (1.0f / 5040) + (1.0f / 720);
  p = p * r + (1.0f / 120);
  p = p * r + (1.0f / 24);
  p = p * r + (1.0f / 6);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const F res = __builtin_bit_cast(F, __builtin_bit_cast(U, p) + (ni << 23));
  return x < lo ? zero : res;
}

COREAUG_INLINE float exp_s(float x) { return exp_nonpositive<float, uint32_t>(x); }

template <int L>
COREAUG_INLINE typename Vec<L>::F exp_v(const typename Vec<L>::F& x) {
  return exp_nonpositive<typename Vec<L>::F, typename Vec<L>::U>(x);
}

// 16-bit floats <-> float32 on L lanes with integer vector ops, bit-exact with c10's
// scalar conversions (round to nearest even), which the compiler would not vectorise.
template <int L>
COREAUG_INLINE typename Vec<L>::U load_u16(const void* p) {
  typename Vec<L>::H h;
  std::memcpy(&h, p, sizeof(h));
  return __builtin_convertvector(h, typename Vec<L>::U);
}

template <int L>
COREAUG_INLINE void store_u16(void* p, const typename Vec<L>::U& u) {
  const typename Vec<L>::H h = __builtin_convertvector(u, typename Vec<L>::H);
  std::memcpy(p, &h, sizeof(h));
}

template <int L>
COREAUG_INLINE typename Vec<L>::F half_to_float(const typename Vec<L>::U& h) {
  using F = typename Vec<L>::F;
  using U = typename Vec<L>::U;
  const U em = h & 0x7fffu;
  // exponent and mantissa moved into float position, then rebiased by 2^112 (a multiply,
  // which also normalises half denormals)
  const F f = __builtin_bit_cast(F, em << 13) * 0x1p112f;
  U bits = __builtin_bit_cast(U, f);
  bits = em >= 0x7c00u ? bits | 0x7f800000u : bits;  // inf and NaN keep an all-ones exponent
  return __builtin_bit_cast(F, bits | ((h & 0x8000u) << 16));
}

template <int L>
COREAUG_INLINE typename Vec<L>::U float_to_half(const typename Vec<L>::F& v) {
  using F = typename Vec<L>::F;
  using U = typename Vec<L>::U;
  const U all = __builtin_bit_cast(U, v);
  const U sign = all & 0x80000000u;
  const U a = all ^ sign;
  // |v| >= 65520 rounds to inf; NaN stays (quiet) NaN
  const U big = a > 0x7f800000u ? U{} + 0x7e00u : U{} + 0x7c00u;
  // below 2^-14 the half is denormal: adding 0.5 lets the float adder round to its grid
  const F tiny_f = __builtin_bit_cast(F, a) + 0.5f;
  const U tiny = __builtin_bit_cast(U, tiny_f) - 0x3f000000u;
  // normal: rebias the exponent and round the 13 dropped bits to nearest even
  const U normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
  U o = a >= 0x47800000u ? big : (a < 0x38800000u ? tiny : normal);
  return o | (sign >> 16);
}

template <int L>
COREAUG_INLINE typename Vec<L>::U float_to_bfloat16(const typename Vec<L>::F& v) {
  using U = typename Vec<L>::U;
  const U u = __builtin_bit_cast(U, v);
  const U rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return v != v ? U{} + 0x7fc0u : rounded;
}

template <int L, typename scalar_t>
COREAUG_INLINE typename Vec<L>::F loadv(const scalar_t* p) {
  using F = typename Vec<L>::F;
  if constexpr (std::is_same_v<scalar_t, float>) {
    F v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    return __builtin_bit_cast(F, load_u16<L>(p) << 16);  // the top half of a float32
  } else {
    static_assert(std::is_same_v<scalar_t, c10::Half>);
    return half_to_float<L>(load_u16<L>(p));
  }
}

template <int L, typename scalar_t>
COREAUG_INLINE void storev(scalar_t* p, const typename Vec<L>::F& v) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    std::memcpy(p, &v, sizeof(v));
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    store_u16<L>(p, float_to_bfloat16<L>(v));
  } else {
    static_assert(std::is_same_v<scalar_t, c10::Half>);
    store_u16<L>(p, float_to_half<L>(v));
  }
}

// The last `rem` (< L) elements of a row in the lanes where `real` is set, `fill` in the
// others, so that row tails run through the same vector code as the body. Where the L
// elements from p lie inside the tensor (every row but the last few) this is a plain load
// and a select; only there is it assembled through a buffer, whose scalar stores then
// stall the vector load (no store-to-load forwarding), a cost that small C would feel.
template <int L, typename scalar_t>
COREAUG_INLINE typename Vec<L>::F load_tail(const scalar_t* p, const scalar_t* end, int64_t rem,
                                            const typename Vec<L>::F& real, float fill) {
  using F = typename Vec<L>::F;
  const F filled = F{} + fill;
  if (p + L <= end) return real > 0.0f ? loadv<L>(p) : filled;
  float buf[L];
  for (int k = 0; k < L; ++k) buf[k] = k < rem ? static_cast<float>(p[k]) : fill;
  F v;
  std::memcpy(&v, buf, sizeof(v));
  return v;
}

template <int L>
COREAUG_INLINE typename Vec<L>::F tail_lanes(int64_t rem) {
  typename Vec<L>::F real;
  for (int k = 0; k < L; ++k) real[k] = k < rem ? 1.0f : 0.0f;
  return real;
}

// The first `rem` (< L) lanes of v to p, converted as storev does (c10's scalar
// float -> half conversion would cost more than the rest of a short row).
template <int L, typename scalar_t>
COREAUG_INLINE void store_tail(scalar_t* p, int64_t rem, const typename Vec<L>::F& v) {
  using H = typename Vec<L>::H;
  if constexpr (std::is_same_v<scalar_t, float>) {
    std::memcpy(p, &v, rem * sizeof(float));
  } else {
    H h;
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      h = __builtin_convertvector(float_to_bfloat16<L>(v), H);
    } else {
      h = __builtin_convertvector(float_to_half<L>(v), H);
    }
    std::memcpy(static_cast<void*>(p), &h, rem * sizeof(uint16_t));
  }
}

// Horizontal max and sum by halving: lane k meets lane k + L/2, then k + L/4, ... (log2 L
// steps rather than L − 1 lane extractions).
template <int L>
COREAUG_INLINE void halves(const typename Vec<L>::F& v, typename Vec<L / 2>::F& lo, typename Vec<L / 2>::F& hi) {
  std::memcpy(&lo, &v, sizeof(lo));
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
}

template <int L>
COREAUG_INLINE float hmax(const typename Vec<L>::F& v) {
  if constexpr (L == 2) {
    return v[1] > v[0] ? v[1] : v[0];
  } else {
    typename Vec<L / 2>::F lo, hi;
    halves<L>(v, lo, hi);
    return hmax<L / 2>(hi > lo ? hi : lo);
  }
}

template <int L>
COREAUG_INLINE float hsum(const typename Vec<L>::F& v) {
  if constexpr (L == 2) {
    return v[0] + v[1];
  } else {
    typename Vec<L / 2>::F lo, hi;
    halves<L>(v, lo, hi);
    return hsum<L / 2>(lo + hi);
  }
}

// The per-row loss from the row's max m, log s = log Σexp(x-m) and z = Σ(x-m) (z <= 0):
// CE = (1-ε)(lse - x_y) + ε(lse - mean x), written with m subtracted out so that a large
// common offset in the logits cancels exactly instead of in rounding. With ε = 0 the
// smoothing term is left out rather than multiplied by 0 (z may be -inf).
template <typename acc_t>
COREAUG_INLINE acc_t row_loss(acc_t m, acc_t log_s, acc_t z, acc_t x_target, int64_t c, acc_t eps) {
  acc_t ce = (m - x_target) + log_s;
  if (eps > 0) ce = (1 - eps) * ce + eps * (log_s - z / static_cast<acc_t>(c));
  return ce;
}

// Forward over rows [begin, end) for float, half and bfloat16 logits (float32 maths).
template <int L, typename scalar_t>
COREAUG_INLINE void forward_rows_body(const scalar_t* x, const int64_t* t, const float* w,
                                     float* loss, double* lse, int64_t begin, int64_t end,
                                     int64_t c, float eps) {
  const int64_t cv = c - c % L, rem = c - cv;
  const float inf = std::numeric_limits<float>::infinity();
  using F = typename Vec<L>::F;
  const F real = tail_lanes<L>(rem);
  const scalar_t* x_end = x + end * c;
  for (int64_t i = begin; i < end; ++i) {
    const scalar_t* row = x + i * c;
    // One loop per pass, its last step masked when C is not a multiple of L: a separate
    // tail block after the loop would sit on the row's critical path.
    // NaN compares false, so the max may skip it; z below catches it instead.
    F vm = F{} - inf;
    for (int64_t j = 0; j < c; j += L) {
      const F v = j < cv ? loadv<L>(row + j) : load_tail<L>(row + j, x_end, rem, real, -inf);
      vm = v > vm ? v : vm;
    }
    const float m = hmax<L>(vm);
    F vs = {}, vz = {};
    for (int64_t j = 0; j < c; j += L) {
      if (j < cv) {
        const F d = loadv<L>(row + j) - m;
        vs += exp_v<L>(d);
        vz += d;
      } else {
        const F d = load_tail<L>(row + j, x_end, rem, real, -inf) - m;  // padding: exp(-inf) = 0
        vs += exp_v<L>(d);
        vz += real > 0.0f ? d : F{};
      }
    }
    // s itself carries float32 rounding, so logf loses nothing that log would keep
    const float log_s = std::log(hsum<L>(vs));
    const float z = hsum<L>(vz);
    if (std::isnan(z)) {  // a NaN logit (or m = ±inf): the row's loss is NaN, as in PyTorch
      lse[i] = loss[i] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    lse[i] = static_cast<double>(m) + static_cast<double>(log_s);
    loss[i] = (w ? w[i] : 1.0f) * row_loss<float>(m, log_s, z, static_cast<float>(row[t[i]]), c, eps);
  }
}

// Backward over rows [begin, end): grad = g_i·w_i·(softmax(x_i) − q_i), with q_i the
// (smoothed) target distribution, q_ij = (1−ε)[j = y_i] + ε/C.
template <int L, typename scalar_t>
COREAUG_INLINE void backward_rows_body(const float* g, int64_t g_stride, const scalar_t* x,
                                      const int64_t* t, const float* w, const double* lse,
                                      scalar_t* out, int64_t begin, int64_t end, int64_t c,
                                      float eps) {
  const int64_t cv = c - c % L, rem = c - cv;
  const float off = eps / static_cast<float>(c);
  const float on = 1.0f - eps + off;
  using F = typename Vec<L>::F;
  const F real = tail_lanes<L>(rem);
  const scalar_t* x_end = x + end * c;
  for (int64_t i = begin; i < end; ++i) {
    const scalar_t* row = x + i * c;
    scalar_t* o = out + i * c;
    const float scale = g[i * g_stride] * (w ? w[i] : 1.0f);
    // x − lse as (x − hi) − lo: with logits far from 0 (say 1000) a float32 lse alone
    // would already be off by half its ulp (3e-5), and so would every softmax value.
    const float hi = static_cast<float>(lse[i]);
    const float lo = static_cast<float>(lse[i] - static_cast<double>(hi));
    if (std::isnan(hi)) {
      for (int64_t j = 0; j < c; ++j) o[j] = static_cast<scalar_t>(hi);
      continue;
    }
    for (int64_t j = 0; j < cv; j += L) {
      storev<L>(o + j, (exp_v<L>((loadv<L>(row + j) - hi) - lo) - off) * scale);
    }
    if (rem) {
      store_tail<L>(o + cv, rem, (exp_v<L>((load_tail<L>(row + cv, x_end, rem, real, 0.0f) - hi) - lo) - off) * scale);
    }
    const int64_t y = t[i];
    o[y] = static_cast<scalar_t>((exp_s((static_cast<float>(row[y]) - hi) - lo) - on) * scale);
  }
}

enum class Isa { kBaseline, kAvx2, kAvx512 };

// The widest row functions this CPU runs (and its OS enables), found once; the environment
// variable COREAUG_CPU_ISA=baseline or avx2 asks for narrower ones (the tests run each).
Isa machine_isa() {
#ifdef COREAUG_ISA_DISPATCH
  static const Isa isa = [] {
    const char* want = std::getenv("COREAUG_CPU_ISA");
    if (want && std::strcmp(want, "baseline") == 0) return Isa::kBaseline;
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2") &&
                      __builtin_cpu_supports("lzcnt") && __builtin_cpu_supports("movbe") &&
                      __builtin_cpu_supports("popcnt");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    if (want && std::strcmp(want, "avx2") == 0 && avx2) return Isa::kAvx2;
    return avx512 ? Isa::kAvx512 : avx2 ? Isa::kAvx2 : Isa::kBaseline;
  }();
  return isa;
#else
  return Isa::kBaseline;
#endif
}

// NAME<scalar_t>(args...) runs BODY compiled for the machine's widest vectors: BODY is
// inlined into one function per target, so each copy is compiled for its instruction set.
#define COREAUG_ISA_VARIANTS(NAME, BODY)                                  \
  template <typename scalar_t, typename... A>                             \
  COREAUG_V4 void NAME##_avx512(A... a) { BODY<16, scalar_t>(a...); }      \
  template <typename scalar_t, typename... A>                             \
  COREAUG_V3 void NAME##_avx2(A... a) { BODY<8, scalar_t>(a...); }         \
  template <typename scalar_t, typename... A>                             \
  void NAME(A... a) {                                                     \
    switch (machine_isa()) {                                              \
      case Isa::kAvx512: return NAME##_avx512<scalar_t>(a...);             \
      case Isa::kAvx2: return NAME##_avx2<scalar_t>(a...);                 \
      default: return BODY<4, scalar_t>(a...);                             \
    }                                                                     \
  }

COREAUG_ISA_VARIANTS(forward_rows_vec, forward_rows_body)
COREAUG_ISA_VARIANTS(backward_rows_vec, backward_rows_body)

// float64 (gradcheck, reference-grade use): plain loops, std::exp.
void forward_rows_f64(const double* x, const int64_t* t, const double* w, double* loss,
                      double* lse, int64_t begin, int64_t end, int64_t c, double eps) {
  for (int64_t i = begin; i < end; ++i) {
    const double* row = x + i * c;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < c; ++j) m = row[j] > m ? row[j] : m;
    double s = 0, z = 0;
    for (int64_t j = 0; j < c; ++j) {
      s += std::exp(row[j] - m);
      z += row[j] - m;
    }
    const double wi = w ? w[i] : 1.0;
    if (std::isnan(z)) {
      lse[i] = loss[i] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    lse[i] = m + std::log(s);
    loss[i] = wi * row_loss<double>(m, std::log(s), z, row[t[i]], c, eps);
  }
}

void backward_rows_f64(const double* g, int64_t g_stride, const double* x, const int64_t* t,
                       const double* w, const double* lse, double* out, int64_t begin,
                       int64_t end, int64_t c, double eps) {
  const double off = eps / static_cast<double>(c);
  const double on = 1.0 - eps + off;
  for (int64_t i = begin; i < end; ++i) {
    const double scale = g[i * g_stride] * (w ? w[i] : 1.0);
    for (int64_t j = 0; j < c; ++j) {
      out[i * c + j] = (std::exp(x[i * c + j] - lse[i]) - (j == t[i] ? on : off)) * scale;
    }
  }
}

// Rows per task: enough work per chunk to amortise the thread hand-off.
int64_t grain(int64_t c) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(c, 1)); }

void check_targets(const at::Tensor& t, int64_t c) {
  // Checked before the parallel region: throwing from inside it would abort.
  const int64_t* tp = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    TORCH_CHECK(tp[i] >= 0 && tp[i] < c, "targets[", i, "] = ", tp[i], " is outside [0, ", c, ")");
  }
}

void weighted_cross_entropy_cpu(const weighted_cross_entropy::Inputs& in, const weighted_cross_entropy::Forward& out,
                                double label_smoothing) {
  check_targets(in.t, in.c);
  const int64_t n = in.n, c = in.c;
  const int64_t* tp = in.t.data_ptr<int64_t>();
  if (in.x.scalar_type() == at::kDouble) {
    const double* wp = in.w.defined() ? in.w.data_ptr<double>() : nullptr;
    at::parallel_for(0, n, grain(c), [&](int64_t b, int64_t e) {
      forward_rows_f64(in.x.data_ptr<double>(), tp, wp, out.loss.data_ptr<double>(), out.lse.data_ptr<double>(), b,
                       e, c, label_smoothing);
    });
    return;
  }
  const float* wp = in.w.defined() ? in.w.data_ptr<float>() : nullptr;
  // float64 went above: the vector path covers float32 and the two 16-bit types
  AT_DISPATCH_V2(in.x.scalar_type(), "weighted_cross_entropy_cpu", AT_WRAP([&] {
    const scalar_t* xp = in.x.data_ptr<scalar_t>();
    float* lp = out.loss.data_ptr<float>();
    double* sp = out.lse.data_ptr<double>();
    at::parallel_for(0, n, grain(c), [&](int64_t b, int64_t e) {
      forward_rows_vec<scalar_t>(xp, tp, wp, lp, sp, b, e, c, static_cast<float>(label_smoothing));
    });
  }), at::kFloat, at::kHalf, at::kBFloat16);
}

void weighted_cross_entropy_backward_cpu(const weighted_cross_entropy::Inputs& in,
                                         const weighted_cross_entropy::Backward& io, double label_smoothing) {
  check_targets(in.t, in.c);
  const int64_t n = in.n, c = in.c, gs = io.g.stride(0);
  const int64_t* tp = in.t.data_ptr<int64_t>();
  if (in.x.scalar_type() == at::kDouble) {
    const double* wp = in.w.defined() ? in.w.data_ptr<double>() : nullptr;
    at::parallel_for(0, n, grain(c), [&](int64_t b, int64_t e) {
      backward_rows_f64(io.g.data_ptr<double>(), gs, in.x.data_ptr<double>(), tp, wp, io.lse.data_ptr<double>(),
                        io.out.data_ptr<double>(), b, e, c, label_smoothing);
    });
    return;
  }
  const float* wp = in.w.defined() ? in.w.data_ptr<float>() : nullptr;
  AT_DISPATCH_V2(in.x.scalar_type(), "weighted_cross_entropy_backward_cpu", AT_WRAP([&] {
    const float* gp = io.g.data_ptr<float>();
    const scalar_t* xp = in.x.data_ptr<scalar_t>();
    scalar_t* op = io.out.data_ptr<scalar_t>();
    const double* lp = io.lse.data_ptr<double>();
    at::parallel_for(0, n, grain(c), [&](int64_t b, int64_t e) {
      backward_rows_vec<scalar_t>(gp, gs, xp, tp, wp, lp, op, b, e, c, static_cast<float>(label_smoothing));
    });
  }), at::kFloat, at::kHalf, at::kBFloat16);
}

}  // namespace

TORCH_LIBRARY_IMPL(coreaug, CPU, m) {
  m.impl("weighted_cross_entropy", &weighted_cross_entropy::forward_entry<weighted_cross_entropy_cpu>);
  m.impl("weighted_cross_entropy_backward", &weighted_cross_entropy::backward_entry<weighted_cross_entropy_backward_cpu>);
}

}  // namespace coreaug
