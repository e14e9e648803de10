// Per-row planning and per-pixel math of the fused augmentation op, shared by the CPU
// (augment_cpu.cpp) and CUDA (augment_cuda.cu) bodies so that both compute the same bits.
//
// A row's ops are compiled into "steps" (optionally preceded by the crop/flip step):
//   kGeom / kCrop   a nearest-neighbour coordinate map with a fill value,
//   kLut            a per-channel 256-entry table (brightness, posterize, solarize, invert,
//                   and, once their per-image statistics are known, contrast, autocontrast
//                   and equalize),
//   kColorBlend     saturation: needs all channels of a pixel,
//   kSharpen        the 3x3 stencil: needs the neighbours of its input image.
// A pixel of the image after step t is evaluated by walking the geometric steps backwards
// (output coordinate -> source coordinate, each with torchvision's own rounding, so a pixel
// that left the canvas at an intermediate op becomes that op's fill, exactly as when the ops
// run one after another), then applying the value steps forwards. No intermediate image is
// stored except the input of a sharpen step that is not the first step of its segment.
//
// Every float operation mirrors torchvision 0.29 on uint8 tensors (see
// coreaug_fast/reference/augment.py), including where torch's kernels use fused
// multiply-adds; the helpers below pin each rounding so neither nvcc (which contracts a*b+c
// by default) nor the host compiler changes them.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define CA_HD __host__ __device__ __forceinline__
#else
#define CA_HD inline __attribute__((always_inline))
#endif

namespace coreaug {
namespace augment {

// Positions in coreaug_fast.OPS.
enum OpId : int32_t {
  kIdentity = 0, kShearX, kShearY, kTranslateX, kTranslateY, kRotate, kBrightness, kColor,
  kContrast, kSharpness, kPosterize, kSolarize, kAutoContrast, kEqualize, kInvert, kNumOps
};

constexpr int kMaxOps = 16;
constexpr int kMaxSteps = kMaxOps + 1;  // + the crop/flip step

enum StepKind : int32_t { kGeom = 0, kCrop = 1, kLut = 2, kColorBlend = 3, kSharpen = 4 };
// Where a kLut step's table comes from.
enum LutSource : int32_t { kLutFixed = 0, kLutContrast = 1, kLutAutoContrast = 2, kLutEqualize = 3 };

struct Step {
  int32_t kind;
  int32_t lut;   // LutSource for kLut
  int32_t op;    // the OpId it came from
  int32_t i0;    // kCrop: row shift; posterize: bit mask; kGeom: GridOrder
  int32_t i1;    // kCrop: column shift
  int32_t i2;    // kCrop: horizontal flip
  float r[6];    // kGeom: torchvision's affine matrix divided by (W/2, H/2)
  float ratio;   // blends: factor; brightness: factor; solarize: threshold
  float alpha;   // blends: 1 - factor (as torch rounds it)
};

// ---- arithmetic with pinned rounding -------------------------------------------------
// CA_DEV_OR_HOST(device, host): the device intrinsic in device code, the host form elsewhere.
#ifdef __CUDA_ARCH__
#define CA_DEV_OR_HOST(device, host) device
#else
#define CA_DEV_OR_HOST(device, host) host
#endif

CA_HD float mul_rn(float a, float b) { return CA_DEV_OR_HOST(__fmul_rn(a, b), a * b); }
CA_HD float add_rn(float a, float b) { return CA_DEV_OR_HOST(__fadd_rn(a, b), a + b); }
CA_HD float sub_rn(float a, float b) { return CA_DEV_OR_HOST(__fsub_rn(a, b), a - b); }
CA_HD float div_rn(float a, float b) { return CA_DEV_OR_HOST(__fdiv_rn(a, b), a / b); }
// torch's CPU add(x, y, alpha) and the affine grid's bmm compute a true fused multiply-add;
// on the host the builtin, not std::fma, so that it inlines as one instruction.
CA_HD float fma_rn(float a, float b, float c) {
  return CA_DEV_OR_HOST(__fmaf_rn(a, b, c), __builtin_fmaf(a, b, c));
}
// Round half to even, as grid_sample's nearest mode.
CA_HD float rint_rn(float x) { return CA_DEV_OR_HOST(rintf(x), __builtin_nearbyintf(x)); }
CA_HD double dmul(double a, double b) { return CA_DEV_OR_HOST(__dmul_rn(a, b), a * b); }
CA_HD double dadd(double a, double b) { return CA_DEV_OR_HOST(__dadd_rn(a, b), a + b); }
CA_HD double dsub(double a, double b) { return CA_DEV_OR_HOST(__dsub_rn(a, b), a - b); }
CA_HD double ddiv(double a, double b) { return CA_DEV_OR_HOST(__ddiv_rn(a, b), a / b); }
CA_HD float floor_f(float x) { return CA_DEV_OR_HOST(floorf(x), __builtin_floorf(x)); }

// float -> uint8 as torch's clamp_(0, 255).to(torch.uint8): clamp, then truncate.
CA_HD uint8_t clamp_u8(float x) {
  x = x < 0.f ? 0.f : x;
  x = x > 255.f ? 255.f : x;
  return static_cast<uint8_t>(static_cast<int>(x));
}

// ---- geometry --------------------------------------------------------------------------
constexpr double kPi = 3.14159265358979323846;

// Python's float `a % 360.0` (result in [0, 360)).
CA_HD double py_mod360(double a) {
  double m = fmod(a, 360.0);
  if (m != 0.0) {
    if (m < 0.0) m = dadd(m, 360.0);
  } else {
    m = 0.0;
  }
  return m;
}

// torchvision's _get_inverse_affine_matrix (scale 1), double for double, then the float32
// theta divided by (W/2, H/2) as in its _affine_grid. Angles in degrees.
CA_HD void inverse_affine(double cx, double cy, double angle, double tx, double ty,
                          double shear_x, double shear_y, int64_t H, int64_t W, float r[6]) {
  const double rot = dmul(angle, kPi / 180.0);  // math.radians
  const double sx = dmul(shear_x, kPi / 180.0);
  const double sy = dmul(shear_y, kPi / 180.0);
  const double cos_sy = cos(sy);
  const double tan_sx = tan(sx);
  const double rot_minus_sy = dsub(rot, sy);
  const double cx_plus_tx = dadd(cx, tx);
  const double cy_plus_ty = dadd(cy, ty);
  const double a = ddiv(cos(rot_minus_sy), cos_sy);
  const double b = -dadd(dmul(a, tan_sx), sin(rot));
  const double c = ddiv(sin(rot_minus_sy), cos_sy);
  const double d = dsub(cos(rot), dmul(c, tan_sx));
  double m[6] = {d, -b, 0.0, -c, a, 0.0};
  m[2] = dadd(m[2], dsub(dsub(cx, dmul(m[0], cx_plus_tx)), dmul(m[1], cy_plus_ty)));
  m[5] = dadd(m[5], dsub(dsub(cy, dmul(m[3], cx_plus_tx)), dmul(m[4], cy_plus_ty)));
  const float hw = static_cast<float>(0.5 * static_cast<double>(W));
  const float hh = static_cast<float>(0.5 * static_cast<double>(H));
  r[0] = div_rn(static_cast<float>(m[0]), hw);
  r[1] = div_rn(static_cast<float>(m[1]), hw);
  r[2] = div_rn(static_cast<float>(m[2]), hw);
  r[3] = div_rn(static_cast<float>(m[3]), hh);
  r[4] = div_rn(static_cast<float>(m[4]), hh);
  r[5] = div_rn(static_cast<float>(m[5]), hh);
}

// How the grid's dot product x*a + y*b + 1*c is rounded. torchvision forms it with a float32
// bmm, whose order is the BLAS kernel's: fma(y, b, x*a) + c on AVX-512 MKL and cuBLAS,
// (x*a + y*b) + c with AVX2 MKL (seen on an AMD EPYC). Points that land on a half-pixel
// tie (rotations by 90 degrees of non-square images) round differently between orders, so
// the CPU op asks torch once per image size which one it uses (augment_cpu.cpp).
enum GridOrder : int32_t { kGridFma = 0, kGridSumLeft = 1, kGridSumRight = 2 };

CA_HD float grid_dot(int32_t order, float x, float y, float a, float b, float c) {
  if (order == kGridSumLeft) return add_rn(add_rn(mul_rn(x, a), mul_rn(y, b)), c);
  if (order == kGridSumRight) return add_rn(mul_rn(x, a), add_rn(mul_rn(y, b), c));
  return add_rn(fma_rn(y, b, mul_rn(x, a)), c);
}

// The grid's x (or y) of pixel column j (row i): torchvision's linspace, exact here.
CA_HD float grid_coord(int j, int W) {
  return sub_rn(static_cast<float>(j), static_cast<float>(0.5 * (W - 1)));
}

// Where a kGeom step's output pixel (ci, cj) samples its input, before the canvas test.
// Repeats torchvision's float32 grid: x = j - (W-1)/2, gx = x*r0 + y*r1 + r2 rounded in the
// step's GridOrder (i0), ix = ((gx + 1) * W - 1) / 2 (grid_sample, align_corners=False),
// nearest = rint.
CA_HD void geom_source(const Step& s, int H, int W, int ci, int cj, float& rx, float& ry) {
  const float Wf = static_cast<float>(W), Hf = static_cast<float>(H);
  const float x = grid_coord(cj, W);
  const float y = grid_coord(ci, H);
  const float gx = grid_dot(s.i0, x, y, s.r[0], s.r[1], s.r[2]);
  const float gy = grid_dot(s.i0, x, y, s.r[3], s.r[4], s.r[5]);
  rx = rint_rn(mul_rn(sub_rn(mul_rn(add_rn(gx, 1.f), Wf), 1.f), 0.5f));
  ry = rint_rn(mul_rn(sub_rn(mul_rn(add_rn(gy, 1.f), Hf), 1.f), 0.5f));
}

// Written so that NaN coordinates are off the canvas too.
CA_HD bool on_canvas(float rx, float ry, int H, int W) {
  // & rather than &&: no branches, so the CPU loops vectorise
  return (rx >= 0.f) & (rx < static_cast<float>(W)) & (ry >= 0.f) & (ry < static_cast<float>(H));
}

// Maps an output coordinate (ci, cj) of a geometric step to the coordinate it samples in the
// step's input. Returns false (coordinates untouched) where that lies off the canvas, i.e.
// where the step writes its fill.
CA_HD bool map_coord(const Step& s, int H, int W, int& ci, int& cj) {
  if (s.kind == kCrop) {
    const int y = ci + s.i0;
    const int x = (s.i2 ? W - 1 - cj : cj) + s.i1;
    if (y < 0 || y >= H || x < 0 || x >= W) return false;
    ci = y;
    cj = x;
    return true;
  }
  float rx, ry;
  geom_source(s, H, W, ci, cj, rx, ry);
  if (!on_canvas(rx, ry, H, W)) return false;
  ci = static_cast<int>(ry);
  cj = static_cast<int>(rx);
  return true;
}

// ---- planning ---------------------------------------------------------------------------
// The crop/flip step: crop is (top, left, flip) in the image zero-padded by `padding`.
CA_HD void compile_crop(const int64_t* crop, int64_t padding, Step& s) {
  s.kind = kCrop;
  s.lut = kLutFixed;
  s.op = kIdentity;
  s.i0 = static_cast<int32_t>(crop[0] - padding);
  s.i1 = static_cast<int32_t>(crop[1] - padding);
  s.i2 = crop[2] != 0;
}

// The inverse affine warps of the geometric ops at magnitude m on an H x W image, into r.
CA_HD void shear_warp(int32_t op, double m, int64_t H, int64_t W, float* r) {
  // shear angle = degrees(atan(m)), centre (0, 0): torchvision's (-W/2, -H/2) offset
  const double deg = dmul(atan(m), 180.0 / kPi);
  inverse_affine(-(static_cast<double>(W) * 0.5), -(static_cast<double>(H) * 0.5), 0.0, 0.0,
                 0.0, op == kShearX ? deg : 0.0, op == kShearX ? 0.0 : deg, H, W, r);
}

CA_HD void translate_warp(int32_t op, double m, int64_t H, int64_t W, float* r) {
  const double t = trunc(m);  // int(magnitude)
  inverse_affine(0.0, 0.0, 0.0, op == kTranslateX ? t : 0.0, op == kTranslateX ? 0.0 : t,
                 0.0, 0.0, H, W, r);
}

// The step of op `op` at magnitude `mag` on a C x H x W image, into s; false for an op that
// is exactly the identity here (Identity, Rotate by a multiple of 360, Color on one
// channel, Posterize keeping 8 bits, Sharpness on an image with a side <= 2), which
// torchvision returns unchanged.
CA_HD bool compile_op(int32_t op, float mag, int64_t C, int64_t H, int64_t W, int32_t grid_order, Step& s) {
  const double m = static_cast<double>(mag);
  s.kind = kLut;
  s.lut = kLutFixed;
  s.op = op;
  s.i0 = s.i1 = s.i2 = 0;
  // RandAugment passes 1 + m as the factor; _blend scales by float(factor) and adds
  // alpha = float(1 - factor).
  s.ratio = static_cast<float>(dadd(1.0, m));
  s.alpha = static_cast<float>(dsub(1.0, dadd(1.0, m)));
  switch (op) {
    case kShearX:
    case kShearY:
      s.kind = kGeom;
      shear_warp(op, m, H, W, s.r);
      break;
    case kTranslateX:
    case kTranslateY:
      s.kind = kGeom;
      translate_warp(op, m, H, W, s.r);
      break;
    case kRotate: {
      const double a = py_mod360(m);
      if (a == 0.0) return false;
      s.kind = kGeom;
      inverse_affine(0.0, 0.0, -a, 0.0, 0.0, 0.0, 0.0, H, W, s.r);
      break;
    }
    case kBrightness:
      break;
    case kColor:
      if (C == 1) return false;
      s.kind = kColorBlend;
      break;
    case kContrast:
      s.lut = kLutContrast;
      break;
    case kSharpness:
      if (H <= 2 || W <= 2) return false;
      s.kind = kSharpen;
      break;
    case kPosterize: {
      const int bits = !(m >= 0.0) ? 0 : (m >= 8.0 ? 8 : static_cast<int>(m));
      if (bits >= 8) return false;
      s.i0 = ((1 << bits) - 1) << (8 - bits);
      break;
    }
    case kSolarize:
      s.ratio = mag;  // torch compares uint8 >= float32(threshold)
      break;
    case kAutoContrast:
      s.lut = kLutAutoContrast;
      break;
    case kEqualize:
      s.lut = kLutEqualize;
      break;
    case kInvert:
      break;
    default:  // Identity, or an id the public function rejects
      return false;
  }
  if (s.kind == kGeom) s.i0 = grid_order;
  return true;
}

// Compiles one row into steps; returns how many. crop is (top, left, flip) in the padded
// image or nullptr; ops that are the identity here are dropped (compile_op).
CA_HD int compile_row(const int32_t* ops, const float* mags, int L, const int64_t* crop,
                      int64_t padding, int64_t C, int64_t H, int64_t W, Step* steps,
                      int32_t grid_order = kGridFma) {
  int n = 0;
  if (crop != nullptr) compile_crop(crop, padding, steps[n++]);
  for (int l = 0; l < L; ++l) n += compile_op(ops[l], mags[l], C, H, W, grid_order, steps[n]);
  return n;
}

// Number of sharpen steps whose input must be stored (those not first in the row).
CA_HD int count_materialized(const Step* steps, int n) {
  int k = 0;
  for (int t = 1; t < n; ++t) k += steps[t].kind == kSharpen;
  return k;
}

// ---- value steps -------------------------------------------------------------------------
// Table entry of a kLutFixed step.
CA_HD uint8_t fixed_lut_value(const Step& s, int v) {
  switch (s.op) {
    case kBrightness:
      return clamp_u8(mul_rn(static_cast<float>(v), s.ratio));
    case kPosterize:
      return static_cast<uint8_t>(v & s.i0);
    case kSolarize:
      return static_cast<float>(v) >= s.ratio ? static_cast<uint8_t>(255 - v) : static_cast<uint8_t>(v);
    case kInvert:
      return static_cast<uint8_t>(255 - v);
    default:
      return static_cast<uint8_t>(v);
  }
}

// Contrast: blend with the mean of the (floored) grayscale image.
CA_HD uint8_t contrast_lut_value(const Step& s, float mean, int v) {
  return clamp_u8(fma_rn(mean, s.alpha, mul_rn(static_cast<float>(v), s.ratio)));
}

// AutoContrast of one channel whose values span [lo, hi].
CA_HD uint8_t autocontrast_lut_value(int lo, int hi, int v) {
  if (lo == hi) return static_cast<uint8_t>(v);
  const float inv_scale = mul_rn(sub_rn(static_cast<float>(hi), static_cast<float>(lo)),
                                 static_cast<float>(1.0 / 255.0));
  return clamp_u8(div_rn(sub_rn(static_cast<float>(v), static_cast<float>(lo)), inv_scale));
}

// Equalize (PIL's scheme, as torchvision): cum_prev = number of pixels below v, step =
// (pixels not at the top value) // 255; step == 0 leaves the channel unchanged.
CA_HD uint8_t equalize_lut_value(int64_t cum_prev, int64_t step, int v) {
  if (step == 0) return static_cast<uint8_t>(v);
  if (v == 0) return 0;
  int64_t q = (cum_prev + step / 2) / step;
  return static_cast<uint8_t>(q > 255 ? 255 : q);
}

// torchvision's uint8 -> grayscale: r*0.2989 + g*0.587 + b*0.114 in float32 (the two adds
// fused), floored.
CA_HD float gray_floor(uint8_t r, uint8_t g, uint8_t b) {
  const float t = mul_rn(static_cast<float>(r), static_cast<float>(0.2989));
  const float u = fma_rn(static_cast<float>(g), static_cast<float>(0.587), t);
  return floor_f(fma_rn(static_cast<float>(b), static_cast<float>(0.114), u));
}

// Saturation blend of one RGB pixel, in place.
CA_HD void color_blend(const Step& s, uint8_t& r, uint8_t& g, uint8_t& b) {
  const float gray = gray_floor(r, g, b);
  r = clamp_u8(fma_rn(gray, s.alpha, mul_rn(static_cast<float>(r), s.ratio)));
  g = clamp_u8(fma_rn(gray, s.alpha, mul_rn(static_cast<float>(g), s.ratio)));
  b = clamp_u8(fma_rn(gray, s.alpha, mul_rn(static_cast<float>(b), s.ratio)));
}

// Sharpness at (ci, cj) of one channel plane. The blur is round(S/13) with
// S = 8 neighbours + 5 * centre: S/13 is never within 1/26 of a tie, so torch's float32
// conv2d + round gives exactly this integer. Border pixels are unchanged.
CA_HD uint8_t sharpen_blend(int S, int v, float alpha) {
  // (2S + 13) / 26 by multiply and shift (exact for 2S + 13 <= 6643, checked exhaustively),
  // which vectorises where an integer division does not
  const int blur = ((2 * S + 13) * 40330) >> 20;
  return clamp_u8(fma_rn(static_cast<float>(blur - v), alpha, static_cast<float>(v)));
}

CA_HD uint8_t sharpen_value(const uint8_t* plane, int H, int W, int ci, int cj, float alpha) {
  const uint8_t* p = plane + static_cast<int64_t>(ci) * W + cj;
  const int v = p[0];
  if (ci == 0 || cj == 0 || ci == H - 1 || cj == W - 1) return static_cast<uint8_t>(v);
  const int S = p[-W - 1] + p[-W] + p[-W + 1] + p[-1] + p[1] + p[W - 1] + p[W] + p[W + 1] + 5 * v;
  return sharpen_blend(S, v, alpha);
}

// (v / 255 - mean) / std in float32, as to_dtype(scale=True) then normalize.
CA_HD float normalized_value(int v, float mean, float stdv) {
  return div_rn(sub_rn(mul_rn(static_cast<float>(v), static_cast<float>(1.0 / 255.0)), mean), stdv);
}

}  // namespace augment
}  // namespace coreaug
