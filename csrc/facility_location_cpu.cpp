// facility_location on the CPU: per class, the pairwise cost matrix and the greedy
// maximisation of the facility-location function, naive, lazy (exact) or stochastic.
// (Entry: coreaug_fast/selection/facility_location.py; GPU body: kernels/facility_location.py;
// the similarity/optimizer codes: facility_location.h; twin: reference/facility_location.py.)
//
// Every similarity is handled as a cost K (smaller = more similar) and a start level b:
//   "distance"   K = ‖x_i − x_j‖,            b = max K over the class (the C of s = C − K)
//   "sqdistance" K = ‖x_i − x_j‖²,           b = max K over the class
//   "exp"        K = −exp(−‖x_i − x_j‖/dim), b = 0
// With u_i = min(b, min_{j∈S} K_ij), the marginal gain of e is Σ_i max(0, u_i − K_ie), which
// is F(S ∪ {e}) − F(S) for s = b − K. One routine (gain_of) computes every gain, in a fixed
// order with non-negative terms, so a computed gain can only shrink as u shrinks: stale
// gains are exact upper bounds and lazy greedy returns naive greedy's sequence bit for bit.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common.h"
#include "facility_location.h"

namespace coreaug {
namespace {

// Rows up to this width get their distances by direct differences (exact for duplicates,
// no cancellation); wider rows go through blocked GEMMs.
constexpr int64_t kDirectMaxDim = 32;
// Squared distances below kDupTol · (‖x_i‖² + ‖x_j‖²) are below float32's resolution of the
// expansion ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j and count as 0 on every path (CPU, GPU, reference),
// so duplicates are duplicates whichever way their distance was computed.
constexpr float kDupTol = 1.f / (1 << 18);
// Rows of costs are padded to a multiple of kPad with cost 0 and level u = 0 (a zero term),
// so every loop runs whole vectors: no scalar tail computes a value differently.
constexpr int64_t kPad = 16;
inline int64_t padded(int64_t n) { return (n + kPad - 1) / kPad * kPad; }

// Hot loops are compiled for AVX-512 and AVX2 too and picked at load time. They use GCC
// vector types: element-wise IEEE operations, so every clone returns the same bits.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define COREAUG_HOT __attribute__((target_clones("avx512f", "avx2", "default"), optimize("no-math-errno")))
#else
#define COREAUG_HOT
#endif

typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

// Unaligned loads through a may_alias vector type (no helper returning a vector: that
// would change the ABI of the non-AVX clone).
typedef float v8fu __attribute__((vector_size(32), aligned(4), may_alias));
#define LOAD8(p) (*reinterpret_cast<const v8fu*>(p))



// Σ_i max(0, u_i − k_i) over a padded row: float terms summed into 16 double lanes (lane l
// takes i ≡ l mod 16), lanes combined in order. Deterministic, and non-decreasing in u.
// 16-row blocks marked dead in `alive` (one bit per block) are skipped, and blocks whose
// 16 terms are all 0 are marked dead: u only decreases, so they stay 0. Skipped terms are
// +0.0, and adding +0.0 changes no lane, so the value is the dense sum's bit for bit; only
// the cache lines read shrink as the coreset grows.
COREAUG_HOT
double gain_of_alive(const float* __restrict k, const float* __restrict u, uint64_t* __restrict alive,
                     int64_t np) {
  const v8f zero = {0, 0, 0, 0, 0, 0, 0, 0};
  v8d acc0 = {0, 0, 0, 0, 0, 0, 0, 0}, acc1 = acc0;
  const int64_t blocks = np / kPad, words = (blocks + 63) / 64;
  for (int64_t w = 0; w < words; ++w) {
    uint64_t bits = alive[w], dead = 0;
    while (bits) {
      const int b = __builtin_ctzll(bits);
      bits &= bits - 1;
      const int64_t i = (w * 64 + b) * kPad;
      v8f d0 = LOAD8(u + i) - LOAD8(k + i);
      v8f d1 = LOAD8(u + i + 8) - LOAD8(k + i + 8);
      d0 = d0 > zero ? d0 : zero;
      d1 = d1 > zero ? d1 : zero;
      const v8f both = d0 + d1;  // terms are >= 0: the sum is 0 only if all 16 are
      uint64_t nz[4];
      __builtin_memcpy(nz, &both, sizeof(nz));
      if ((nz[0] | nz[1] | nz[2] | nz[3]) == 0) {
        dead |= uint64_t(1) << b;
        continue;
      }
      acc0 += __builtin_convertvector(d0, v8d);
      acc1 += __builtin_convertvector(d1, v8d);
    }
    alive[w] &= ~dead;
  }
  double s = 0;
  for (int l = 0; l < 8; ++l) s += acc0[l];
  for (int l = 0; l < 8; ++l) s += acc1[l];
  return s;
}

// u_i = min(u_i, k_i), and assign_i = pos where k_i < u_i (all rows when first).
COREAUG_HOT
void update_levels(const float* __restrict k, float* __restrict u, int64_t* __restrict assign, int64_t n,
                   int64_t pos, bool first) {
  for (int64_t i = 0; i < n; ++i) {
    const bool closer = first || k[i] < u[i];
    assign[i] = closer ? pos : assign[i];
    u[i] = k[i] < u[i] ? k[i] : u[i];
  }
}

// out_i = ‖x_e − x_i‖² for the padded i range; xt is the class transposed (dim × np) so
// the inner loop runs over i, and each entry sums its dims in order ((a−b)² == (b−a)², so
// the matrix is exactly symmetric).
COREAUG_HOT
void sqdist_row_direct(const float* __restrict xt, int64_t dim, int64_t np, const float* __restrict xe,
                       const float* __restrict norm2, float ne, float* __restrict out) {
  std::fill(out, out + np, 0.f);
  for (int64_t c = 0; c < dim; ++c) {
    const float* col = xt + c * np;
    const float v = xe[c];
    for (int64_t i = 0; i < np; ++i) {
      const float d = v - col[i];
      out[i] += d * d;
    }
  }
  for (int64_t i = 0; i < np; ++i) out[i] = out[i] > kDupTol * (ne + norm2[i]) ? out[i] : 0.f;
}

// out_i = ‖a_e⊗h_e − a_i⊗h_i‖² from the transposed factors and the rows' squared norms.
COREAUG_HOT
void sqdist_row_factored(const float* __restrict at, int64_t da, const float* __restrict ht, int64_t dh,
                         const float* __restrict norm2, int64_t np, const float* __restrict ae,
                         const float* __restrict he, float ne, float* __restrict dot_a,
                         float* __restrict out) {
  std::fill(dot_a, dot_a + np, 0.f);
  std::fill(out, out + np, 0.f);
  for (int64_t c = 0; c < da; ++c) {
    const float* col = at + c * np;
    const float v = ae[c];
    for (int64_t i = 0; i < np; ++i) dot_a[i] += v * col[i];
  }
  for (int64_t c = 0; c < dh; ++c) {
    const float* col = ht + c * np;
    const float v = he[c];
    for (int64_t i = 0; i < np; ++i) out[i] += v * col[i];
  }
  for (int64_t i = 0; i < np; ++i) {
    const float d2 = ne + norm2[i] - 2.f * dot_a[i] * out[i];
    out[i] = d2 > kDupTol * (ne + norm2[i]) ? d2 : 0.f;
  }
}

// Squared distances -> costs, in place.
COREAUG_HOT
void transform_row(float* __restrict k, int64_t n, int64_t sim, float inv_dim) {
  if (sim == kSqDistance) return;
  if (sim == kDistance) {
    for (int64_t i = 0; i < n; ++i) k[i] = __builtin_sqrtf(k[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) k[i] = -std::exp(-__builtin_sqrtf(k[i]) * inv_dim);
  }
}

// out_j = max(ni + nj − 2·ga_j[·gh_j], 0): GEMM dots -> squared distances.
COREAUG_HOT
void sqdist_from_dots(const float* __restrict ga, const float* __restrict gh, const float* __restrict norms,
                      float ni, float* __restrict out, int64_t len) {
  if (gh) {
    for (int64_t j = 0; j < len; ++j) {
      const float d2 = ni + norms[j] - 2.f * (ga[j] * gh[j]);
      out[j] = d2 > kDupTol * (ni + norms[j]) ? d2 : 0.f;
    }
  } else {
    for (int64_t j = 0; j < len; ++j) {
      const float d2 = ni + norms[j] - 2.f * ga[j];
      out[j] = d2 > kDupTol * (ni + norms[j]) ? d2 : 0.f;
    }
  }
}

// One class's rows and how to get its costs.
struct ClassProblem {
  int64_t n = 0;
  int64_t da = 0, dh = 0;  // dh == 0: plain rows
  const float* a = nullptr;
  const float* h = nullptr;
  int64_t sim = kDistance;
  float inv_dim = 1.f;
};

// Σ and max of k[0..len): row statistics for the lazy bounds (any order will do: they
// only have to bound gains from above, with slack).
COREAUG_HOT
void sum_and_max(const float* __restrict k, int64_t len, double* sum, float* mx) {
  v8d acc = {0, 0, 0, 0, 0, 0, 0, 0};
  v8f m = {*mx, *mx, *mx, *mx, *mx, *mx, *mx, *mx};
  int64_t j = 0;
  for (; j + 8 <= len; j += 8) {
    const v8f v = LOAD8(k + j);
    acc += __builtin_convertvector(v, v8d);
    m = v > m ? v : m;
  }
  double s = 0;
  float r = *mx;
  for (int l = 0; l < 8; ++l) {
    s += acc[l];
    r = m[l] > r ? m[l] : r;
  }
  for (; j < len; ++j) {
    s += static_cast<double>(k[j]);
    r = k[j] > r ? k[j] : r;
  }
  *sum += s;
  *mx = r;
}

// dst row r (stride ld_dst) = column r of the 8×8 block at src (stride ld_src).
COREAUG_HOT
void transpose8(const float* __restrict src, int64_t ld_src, float* __restrict dst, int64_t ld_dst) {
  v8f r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = LOAD8(src + i * ld_src);
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int c = 0; c < 4; ++c) {
    const v8f lo = __builtin_shufflevector(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    const v8f hi = __builtin_shufflevector(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    __builtin_memcpy(dst + c * ld_dst, &lo, sizeof(lo));
    __builtin_memcpy(dst + (c + 4) * ld_dst, &hi, sizeof(hi));
  }
}

// col_j += k_j: column sums of the upper triangle, one array per thread.
COREAUG_HOT
void add_to(const float* __restrict k, int64_t len, double* __restrict col) {
  for (int64_t j = 0; j < len; ++j) col[j] += static_cast<double>(k[j]);
}

// out[r] = Σ_c v[r·d + c]² in double, each row in column order, for rows r < R: R chains
// that do not wait on each other (one row's chain is latency-bound).
template <int R>
void sq_sums(const float* v, int64_t d, double* out) {
  double acc[R] = {};
  for (int64_t c = 0; c < d; ++c)
    for (int r = 0; r < R; ++r) acc[r] += double(v[r * d + c]) * v[r * d + c];
  for (int r = 0; r < R; ++r) out[r] = acc[r];
}

// The squared norms of the (plain or factored) rows, in double then rounded.
std::vector<float> row_norms(const ClassProblem& p, int64_t np) {
  std::vector<float> out(np, 0.f);
  constexpr int kRows = 4;
  double na[kRows], nh[kRows] = {};
  for (int64_t i0 = 0; i0 < p.n; i0 += kRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, p.n - i0));
    if (rows == kRows) {
      sq_sums<kRows>(p.a + i0 * p.da, p.da, na);
      if (p.dh) sq_sums<kRows>(p.h + i0 * p.dh, p.dh, nh);
    } else {
      for (int r = 0; r < rows; ++r) {
        sq_sums<1>(p.a + (i0 + r) * p.da, p.da, na + r);
        if (p.dh) sq_sums<1>(p.h + (i0 + r) * p.dh, p.dh, nh + r);
      }
    }
    for (int r = 0; r < rows; ++r) out[i0 + r] = static_cast<float>(p.dh ? na[r] * nh[r] : na[r]);
  }
  return out;
}

// Costs of one class, as padded rows of length np: a stored n×np matrix or rows computed
// on demand (by the same routine every time, so a row never changes between evaluations).
// Either way one pass also yields the class's largest cost and every row's cost sum.
class CostSource {
 public:
  CostSource(const ClassProblem& p, bool store, bool parallel)
      : p_(p), np_(padded(p.n)), stored_(store), parallel_(parallel), grain_(parallel ? 1 : p.n + 1),
        threads_(parallel ? at::get_num_threads() : 1) {
    const int64_t n = p.n;
    // Transposed copies make on-demand rows and the direct matrix vectorise over i.
    if (!stored_ || (p.dh == 0 && p.da <= kDirectMaxDim)) {
      at_.assign(static_cast<size_t>(np_ * p.da), 0.f);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < p.da; ++c) at_[c * np_ + i] = p.a[i * p.da + c];
      if (p.dh > 0) {
        ht_.assign(static_cast<size_t>(np_ * p.dh), 0.f);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t c = 0; c < p.dh; ++c) ht_[c * np_ + i] = p.h[i * p.dh + c];
      }
      norm2_ = row_norms(p, np_);
    }
    sums_.assign(n, 0.0);
    if (stored_ && !(p.dh == 0 && p.da <= kDirectMaxDim)) {
      build_matrix_gemm();
    } else {
      if (stored_) mat_.reset(new float[static_cast<size_t>(n * np_)]);  // not zero-filled
      scan_rows();
    }
  }

  bool stored() const { return stored_; }
  int64_t np() const { return np_; }
  float max_cost() const { return max_; }
  const std::vector<double>& row_sums() const { return sums_; }
  int threads() const { return threads_; }
  int thread() const { return parallel_ ? at::get_thread_num() : 0; }

  // Padded row e of K. `scratch` holds 2·np floats for on-demand rows.
  const float* row(int64_t e, float* scratch) const {
    if (stored_) return mat_.get() + e * np_;
    compute_row(e, scratch, scratch + np_);
    return scratch;
  }

 private:
  void compute_row(int64_t e, float* out, float* tmp) const {
    const int64_t n = p_.n;
    if (p_.dh == 0) {
      sqdist_row_direct(at_.data(), p_.da, np_, p_.a + e * p_.da, norm2_.data(), norm2_[e], out);
    } else {
      sqdist_row_factored(at_.data(), p_.da, ht_.data(), p_.dh, norm2_.data(), np_, p_.a + e * p_.da,
                          p_.h + e * p_.dh, norm2_[e], tmp, out);
    }
    out[e] = 0.f;  // the factored expansion leaves rounding residue on the diagonal
    transform_row(out, n, p_.sim, p_.inv_dim);
    std::fill(out + n, out + np_, 0.f);
  }

  // Every row once (into the matrix when stored): row sums and the largest cost.
  void scan_rows() {
    const int64_t n = p_.n;
    std::vector<float> row_max(n, -std::numeric_limits<float>::infinity());
    std::vector<float> scratch(stored_ ? 0 : static_cast<size_t>(2 * np_ * threads_));
    at::parallel_for(0, n, grain_, [&](int64_t lo, int64_t hi) {
      float* s = stored_ ? nullptr : scratch.data() + 2 * np_ * thread();
      for (int64_t e = lo; e < hi; ++e) {
        float* r = stored_ ? mat_.get() + e * np_ : s;
        compute_row(e, r, r + np_);
        sum_and_max(r, n, &sums_[e], &row_max[e]);
      }
    });
    max_ = *std::max_element(row_max.begin(), row_max.end());
  }

  // Upper triangle by row blocks of GEMMs (half the flops of X Xᵀ) whose epilogue also
  // gathers row sums, column sums and maxima; then mirror_upper.
  void build_matrix_gemm() {
    const int64_t n = p_.n;
    mat_.reset(new float[static_cast<size_t>(n * np_)]);
    const bool factored = p_.dh > 0;
    auto opts = at::TensorOptions().dtype(at::kFloat);
    at::Tensor a = at::from_blob(const_cast<float*>(p_.a), {n, p_.da}, opts);
    at::Tensor h = factored ? at::from_blob(const_cast<float*>(p_.h), {n, p_.dh}, opts) : at::Tensor();
    const std::vector<float> norms = row_norms(p_, np_);
    const float diag = p_.sim == kExp ? -1.f : 0.f;
    std::vector<double> cols(static_cast<size_t>(threads_ * n), 0.0);
    std::vector<float> row_max(n, diag);
    const int64_t block = 512;
    at::Tensor ga = at::empty({std::min(block, n), n}, opts), gh;
    if (factored) gh = at::empty({std::min(block, n), n}, opts);
    for (int64_t r0 = 0; r0 < n; r0 += block) {
      const int64_t rows = std::min(block, n - r0), width = n - r0;
      at::Tensor oa = ga.narrow(0, 0, rows).narrow(1, 0, width);
      at::mm_out(oa, a.narrow(0, r0, rows), a.narrow(0, r0, width).t());
      at::Tensor oh;
      if (factored) {
        oh = gh.narrow(0, 0, rows).narrow(1, 0, width);
        at::mm_out(oh, h.narrow(0, r0, rows), h.narrow(0, r0, width).t());
      }
      const int64_t ld = oa.stride(0);
      const float* pa = oa.data_ptr<float>();
      const float* ph = factored ? oh.data_ptr<float>() : nullptr;
      at::parallel_for(0, rows, grain_, [&](int64_t b, int64_t e) {
        double* col = cols.data() + n * thread();
        for (int64_t r = b; r < e; ++r) {
          const int64_t i = r0 + r, len = n - i - 1;
          float* out = mat_.get() + i * np_;
          const int64_t skip = r * ld + (i - r0) + 1;  // dots of (i, j) for j > i
          sqdist_from_dots(pa + skip, ph ? ph + skip : nullptr, norms.data() + i + 1, norms[i], out + i + 1, len);
          transform_row(out + i + 1, len, p_.sim, p_.inv_dim);
          out[i] = diag;
          std::fill(out + n, out + np_, 0.f);
          sums_[i] += diag;
          sum_and_max(out + i + 1, len, &sums_[i], &row_max[i]);
          add_to(out + i + 1, len, col + i + 1);
        }
      });
    }
    for (int t = 0; t < threads_; ++t)
      for (int64_t j = 0; j < n; ++j) sums_[j] += cols[t * n + j];
    max_ = *std::max_element(row_max.begin(), row_max.end());
    mirror_upper();
  }

  // The lower triangle from the upper, tile by tile, so the matrix is exactly symmetric.
  void mirror_upper() {
    const int64_t n = p_.n;
    const int64_t tile = 64, tiles = (n + tile - 1) / tile;
    at::parallel_for(0, tiles, grain_, [&](int64_t b, int64_t e) {
      for (int64_t tj = b; tj < e; ++tj) {
        const int64_t j0 = tj * tile, j1 = std::min(n, j0 + tile);
        for (int64_t ti = 0; ti <= tj; ++ti) {  // lower tile (tj, ti) from upper tile (ti, tj)
          const int64_t i0 = ti * tile, i1 = std::min(n, i0 + tile);
          // 8×8 blocks wholly above the diagonal and inside the matrix: register transposes
          for (int64_t j = j0; j < j1; j += 8) {
            for (int64_t i = i0; i < i1; i += 8) {
              float* dst = mat_.get() + j * np_ + i;
              const float* src = mat_.get() + i * np_ + j;
              if (i + 8 <= j && j + 8 <= n) {
                transpose8(src, np_, dst, np_);
              } else {  // the diagonal and the edge, entry by entry
                for (int64_t jj = j; jj < std::min(j + 8, n); ++jj)
                  for (int64_t ii = i; ii < std::min({i + 8, jj, n}); ++ii) mat_[jj * np_ + ii] = mat_[ii * np_ + jj];
              }
            }
          }
        }
      }
    });
  }

  const ClassProblem& p_;
  int64_t np_;
  bool stored_, parallel_;
  int64_t grain_;
  int threads_;
  float max_ = 0.f;
  std::unique_ptr<float[]> mat_;
  std::vector<float> at_, ht_, norm2_;
  std::vector<double> sums_;
};

// splitmix64: a small, well-mixed generator for stochastic greedy's samples.
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t m) { return next() % m; }  // bias ≤ m / 2^64, negligible
};

// A bijective 64-bit finaliser (MurmurHash3's): neighbouring seeds, unrelated streams.
inline uint64_t mix64(uint64_t z) {
  z ^= z >> 33;
  z *= 0xFF51AFD7ED558CCDull;
  z ^= z >> 33;
  z *= 0xC4CEB9FE1A85EC53ull;
  return z ^ (z >> 33);
}

struct Candidate {
  double gain;
  int64_t row;
};
// a before b in the greedy's preference: larger gain, then lower row.
inline bool better(double ga, int64_t ra, double gb, int64_t rb) {
  return ga > gb || (ga == gb && ra < rb);
}

struct GreedyOut {
  int64_t* rows;     // k selected local rows, greedy order
  float* gains;      // k gains
  int64_t* assign;   // n positions (global output positions)
  int64_t pos0;      // output position of this class's first pick
};

// One class's greedy state: costs, levels u, gain bounds and what is chosen. The three
// optimisers are step functions over it (as apricot separates its optimisers); every gain
// goes through evaluate(), so stale bounds stay exact upper bounds for all of them.
struct GreedyState {
  GreedyState(const ClassProblem& p, int64_t max_matrix_bytes, bool parallel)
      : n(p.n),
        parallel(parallel),
        cost(p, static_cast<double>(p.n) * padded(p.n) * sizeof(float) <= static_cast<double>(max_matrix_bytes),
             parallel),
        np(cost.np()),
        words((np / kPad + 63) / 64),
        // The start level b: the class's largest cost for the distance similarities (so s ≥ 0).
        b(p.sim == kExp ? 0.f : cost.max_cost()),
        scratch(cost.stored() ? 0 : static_cast<size_t>(2 * np * cost.threads())),
        u(np, 0.f),  // padding keeps u = 0 = cost: a zero term
        ub(n),
        taken(n, 0),
        stamp(n, -1),
        alive(static_cast<size_t>(n * words), ~uint64_t(0)) {
    std::fill(u.begin(), u.begin() + n, b);
    if ((np / kPad) % 64)
      for (int64_t e = 0; e < n; ++e) alive[e * words + words - 1] = (uint64_t(1) << ((np / kPad) % 64)) - 1;
  }

  float* scratch_here() { return cost.stored() ? nullptr : scratch.data() + 2 * np * cost.thread(); }

  // Exact gains of rows which[0..count) (all rows when which is null), stamped with step t.
  void evaluate(const int64_t* which, int64_t count, int64_t t) {
    // Threads only for >= 2^21 costs of work each (see step_lazy).
    const int64_t grain_rows = std::max<int64_t>(1, (int64_t(1) << 21) / np);
    at::parallel_for(0, count, grain_rows, [&](int64_t lo, int64_t hi) {
      float* s = scratch_here();
      for (int64_t j = lo; j < hi; ++j) {
        const int64_t e = which ? which[j] : j;
        ub[e] = gain_of_alive(cost.row(e, s), u.data(), alive.data() + e * words, np);
        stamp[e] = t;
      }
    });
  }

  // Bounds before the first pick without evaluating: the first gain is Σ_i (b − K_ie) =
  // n·b − (row sum); float rounding of the terms adds at most 2^-24 relative, so 1e-5
  // relative slack keeps these true upper bounds.
  void bound_first_gains() {
    const double nb = static_cast<double>(n) * b;
    for (int64_t e = 0; e < n; ++e) {
      const double s = cost.row_sums()[e];
      ub[e] = std::max(0.0, nb - s) * (1 + 1e-5) + 1e-9 * (std::abs(nb) + std::abs(s)) + 1e-30;
    }
  }

  // Record the pick of step t and lower the levels.
  void take(const Candidate& best, int64_t t, const GreedyOut& out) {
    taken[best.row] = 1;
    out.rows[t] = best.row;
    out.gains[t] = static_cast<float>(best.gain);
    update_levels(cost.row(best.row, scratch.empty() ? nullptr : scratch.data()), u.data(), out.assign, n,
                  out.pos0 + t, t == 0);
  }

  const int64_t n;
  const bool parallel;
  CostSource cost;
  const int64_t np;
  const int64_t words;  // per row, one bit per 16-row block that may still add (gain_of_alive)
  const float b;
  std::vector<float> scratch;
  std::vector<float> u;
  std::vector<double> ub;  // an upper bound of each row's current gain
  std::vector<char> taken;
  std::vector<int64_t> stamp;  // the step at which ub[e] was last computed exactly; -1: a bound only
  std::vector<uint64_t> alive;
};

// The heap's order: a function object, so std::*_heap inline it.
struct HeapLess {
  bool operator()(const Candidate& x, const Candidate& y) const { return better(y.gain, y.row, x.gain, x.row); }
};
constexpr HeapLess heap_less{};

// Lazy greedy: a max-heap of bounds; the top is re-evaluated until it is exact.
struct LazyStep {
  explicit LazyStep(GreedyState& s)
      : big_batch(std::max<int64_t>(4 * s.cost.threads(), (int64_t(1) << 22) / s.np)) {
    heap.reserve(s.n);
    for (int64_t e = 0; e < s.n; ++e) heap.push_back({s.ub[e], e});
    std::make_heap(heap.begin(), heap.end(), heap_less);
  }

  // Lazy evaluates the stale top of the heap one row at a time: waking threads costs more
  // than a row, and on a busy machine milliseconds. Only a step that needs very many rows
  // (the second step re-evaluates nearly all) gets batches of >= 2^22 costs spread over
  // the threads, doubling while the top stays stale.
  Candidate operator()(GreedyState& s, int64_t t) {
    constexpr int64_t kSerialRounds = 256;
    int64_t size = 1, rounds = 0;
    while (s.stamp[heap.front().row] != t) {
      batch.clear();
      while (!heap.empty() && static_cast<int64_t>(batch.size()) < size && s.stamp[heap.front().row] != t) {
        std::pop_heap(heap.begin(), heap.end(), heap_less);
        batch.push_back(heap.back().row);
        heap.pop_back();
      }
      s.evaluate(batch.data(), static_cast<int64_t>(batch.size()), t);
      for (int64_t e : batch) {
        heap.push_back({s.ub[e], e});
        std::push_heap(heap.begin(), heap.end(), heap_less);
      }
      if (s.parallel && ++rounds >= kSerialRounds) size = size == 1 ? big_batch : std::min<int64_t>(2 * size, 8192);
    }
    // Exact now, and no bound above it: the argmax (ties to the lowest row).
    std::pop_heap(heap.begin(), heap.end(), heap_less);
    const Candidate best = heap.back();
    heap.pop_back();
    return best;
  }

  const int64_t big_batch;
  std::vector<Candidate> heap;
  std::vector<int64_t> batch;
};

// Naive greedy: every unchosen row, every step.
struct NaiveStep {
  Candidate operator()(GreedyState& s, int64_t t) {
    if (t > 0) {
      picks.clear();
      for (int64_t e = 0; e < s.n; ++e)
        if (!s.taken[e]) picks.push_back(e);
      s.evaluate(picks.data(), static_cast<int64_t>(picks.size()), t);
    }
    Candidate best{-1.0, -1};
    for (int64_t e = 0; e < s.n; ++e)
      if (!s.taken[e] && (best.row < 0 || better(s.ub[e], e, best.gain, best.row))) best = {s.ub[e], e};
    return best;
  }

  std::vector<int64_t> picks;
};

// Stochastic greedy: the best of a uniform sample without replacement of the unchosen rows.
struct StochasticStep {
  StochasticStep(const GreedyState& s, int64_t k, double epsilon, uint64_t seed)
      : sample(std::min<int64_t>(
            s.n, static_cast<int64_t>(std::ceil(static_cast<double>(s.n) / k * std::log(1.0 / epsilon))))),
        rng{seed},
        pool(s.n),
        where(s.n) {
    for (int64_t e = 0; e < s.n; ++e) pool[e] = where[e] = e;
  }

  Candidate operator()(GreedyState& s, int64_t t) {
    // Partial Fisher–Yates over the remaining rows: a uniform sample without replacement.
    const int64_t remaining = s.n - t, m = std::min(sample, remaining);
    for (int64_t j = 0; j < m; ++j) {
      const int64_t r = j + static_cast<int64_t>(rng.below(static_cast<uint64_t>(remaining - j)));
      std::swap(pool[j], pool[r]);
      where[pool[j]] = j;
      where[pool[r]] = r;
    }
    // Bounds prune members that cannot beat the best so far (same result as evaluating all).
    std::vector<int64_t> order(pool.begin(), pool.begin() + m);
    std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return better(s.ub[x], x, s.ub[y], y); });
    Candidate best{-1.0, -1};
    for (int64_t e : order) {
      if (best.row >= 0 && !better(s.ub[e], e, best.gain, best.row)) break;
      if (s.stamp[e] != t) s.evaluate(&e, 1, t);
      if (best.row < 0 || better(s.ub[e], e, best.gain, best.row)) best = {s.ub[e], e};
    }
    const int64_t last = remaining - 1, at_pos = where[best.row];  // drop best from the pool
    std::swap(pool[at_pos], pool[last]);
    where[pool[at_pos]] = at_pos;
    where[pool[last]] = last;
    return best;
  }

  const int64_t sample;
  SplitMix rng;
  std::vector<int64_t> pool, where;  // remaining rows and their pool positions
};

template <class Step>
void run_steps(GreedyState& s, Step& step, int64_t k, const GreedyOut& out) {
  for (int64_t t = 0; t < k; ++t) s.take(step(s, t), t, out);
}

void run_class(const ClassProblem& p, int64_t k, Optimizer optimizer, double epsilon, uint64_t seed,
               int64_t max_matrix_bytes, bool parallel, const GreedyOut& out) {
  if (k == 0) {
    std::fill(out.assign, out.assign + p.n, int64_t(-1));
    return;
  }
  GreedyState s(p, max_matrix_bytes, parallel);
  if (optimizer == kNaive) {
    s.evaluate(nullptr, s.n, 0);
    NaiveStep step;
    run_steps(s, step, k, out);
    return;
  }
  s.bound_first_gains();
  if (optimizer == kLazy) {
    LazyStep step(s);
    run_steps(s, step, k, out);
  } else {
    StochasticStep step(s, k, epsilon, seed);
    run_steps(s, step, k, out);
  }
}

// The op's arguments, checked, and the class layout the scheduling reads. These guard the
// raw torch.ops entry (select_coreset has given friendly errors already), all before any
// thread starts: throwing inside a parallel region would abort.
struct Classes {
  at::Tensor x, h;              // rows (N, da) and features (N, dh) or undefined, contiguous float32
  at::Tensor offsets, budgets;  // contiguous int64: class starts (K+1) and picks (K)
  int64_t count = 0, rows = 0;  // K classes, N rows
  std::vector<int64_t> pos0;    // output position of each class's first pick (K+1)
  Similarity similarity = kDistance;
  Optimizer optimizer = kLazy;

  const int64_t* start() const { return offsets.data_ptr<int64_t>(); }
  const int64_t* picks() const { return budgets.data_ptr<int64_t>(); }
  int64_t size(int64_t c) const { return start()[c + 1] - start()[c]; }
};

Classes check_args(const at::Tensor& x, const std::optional<at::Tensor>& features, const at::Tensor& offsets,
                   const at::Tensor& budgets, int64_t total, int64_t similarity, int64_t optimizer, double epsilon,
                   int64_t max_matrix_bytes) {
  COREAUG_CHECK_DIM(x, 2);
  COREAUG_CHECK_DIM(offsets, 1);
  COREAUG_CHECK_DIM(budgets, 1);
  COREAUG_CHECK_DTYPE(x, at::kFloat);
  COREAUG_CHECK_DTYPE(offsets, at::kLong);
  COREAUG_CHECK_DTYPE(budgets, at::kLong);
  TORCH_CHECK(similarity >= 0 && similarity < kNumSimilarities, "similarity must be a code in [0, ",
              int64_t{kNumSimilarities}, ") (its position in coreaug_fast.vocabulary.SIMILARITIES), got ", similarity);
  TORCH_CHECK(optimizer >= 0 && optimizer < kNumOptimizers, "optimizer must be a code in [0, ",
              int64_t{kNumOptimizers}, ") (its position in coreaug_fast.vocabulary.OPTIMIZERS), got ", optimizer);
  TORCH_CHECK(epsilon > 0 && epsilon < 1, "epsilon must lie in (0, 1), got ", epsilon);
  TORCH_CHECK(max_matrix_bytes >= 0, "max_matrix_bytes must be >= 0");
  Classes a;
  a.similarity = static_cast<Similarity>(similarity);
  a.optimizer = static_cast<Optimizer>(optimizer);
  a.count = budgets.size(0);
  a.rows = x.size(0);
  TORCH_CHECK(offsets.size(0) == a.count + 1, "offsets must have len(budgets) + 1 entries");
  a.x = x.contiguous();
  if (features.has_value()) {
    COREAUG_CHECK_DIM(*features, 2);
    COREAUG_CHECK_DTYPE(*features, at::kFloat);
    TORCH_CHECK(features->size(0) == a.rows, "features has ", features->size(0), " rows, x has ", a.rows);
    a.h = features->contiguous();
  }
  a.offsets = offsets.contiguous();
  a.budgets = budgets.contiguous();
  const int64_t* op = a.start();
  const int64_t* bp = a.picks();
  TORCH_CHECK(op[0] == 0, "offsets[0] must be 0, got ", op[0]);
  TORCH_CHECK(op[a.count] == a.rows, "offsets[-1] = ", op[a.count], " but x has ", a.rows, " rows");
  a.pos0.assign(a.count + 1, 0);
  for (int64_t c = 0; c < a.count; ++c) {
    const int64_t n = op[c + 1] - op[c];
    TORCH_CHECK(n >= 0, "offsets must be non-decreasing");
    TORCH_CHECK(bp[c] >= 0 && bp[c] <= n, "budgets[", c, "] = ", bp[c], " is outside [0, ", n, "]");
    a.pos0[c + 1] = a.pos0[c] + bp[c];
  }
  TORCH_CHECK(a.pos0[a.count] == total, "budgets sum to ", a.pos0[a.count], " but total is ", total);
  return a;
}

// Class c's rows as the greedy sees them.
ClassProblem problem_of(const Classes& a, int64_t c) {
  ClassProblem p;
  const int64_t da = a.x.size(1), dh = a.h.defined() ? a.h.size(1) : 0;
  p.n = a.size(c);
  p.da = da;
  p.dh = dh;
  p.a = a.x.data_ptr<float>() + a.start()[c] * da;
  p.h = dh ? a.h.data_ptr<float>() + a.start()[c] * dh : nullptr;
  p.sim = a.similarity;
  p.inv_dim = 1.f / static_cast<float>(std::max<int64_t>(1, dh ? da * dh : da));
  return p;
}

// Every class's greedy, into rows/gains (local rows, greedy order) and assign. Many
// classes: one class per thread. Few or large ones: threads inside each class.
void run_classes(const Classes& a, double epsilon, int64_t seed, int64_t max_matrix_bytes, at::Tensor& rows,
                 at::Tensor& gains, at::Tensor& assign) {
  auto run = [&](int64_t c, bool parallel) {
    GreedyOut out{rows.data_ptr<int64_t>() + a.pos0[c], gains.data_ptr<float>() + a.pos0[c],
                  assign.data_ptr<int64_t>() + a.start()[c], a.pos0[c]};
    // Class c's stream depends on seed + c only, so running classes in chunks changes nothing.
    const uint64_t class_seed = mix64(static_cast<uint64_t>(seed) + static_cast<uint64_t>(c));
    run_class(problem_of(a, c), a.picks()[c], a.optimizer, epsilon, class_seed, max_matrix_bytes, parallel, out);
  };
  int64_t largest = 0;
  for (int64_t c = 0; c < a.count; ++c) largest = std::max(largest, a.size(c));
  const int threads = at::get_num_threads();
  const bool across = threads > 1 && a.count >= 2 * threads &&
                      static_cast<double>(largest) * largest * sizeof(float) * threads <=
                          static_cast<double>(max_matrix_bytes);
  if (across) {
    at::parallel_for(0, a.count, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c) run(c, false);
    });
  } else {
    for (int64_t c = 0; c < a.count; ++c) run(c, true);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> facility_location_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& features, const at::Tensor& offsets,
    const at::Tensor& budgets, int64_t total, int64_t similarity, int64_t optimizer, double epsilon, int64_t seed,
    int64_t max_matrix_bytes) {
  const Classes a = check_args(x, features, offsets, budgets, total, similarity, optimizer, epsilon, max_matrix_bytes);
  auto rows = at::empty({total}, x.options().dtype(at::kLong));
  auto gains = at::empty({total}, x.options().dtype(at::kFloat));
  auto assign = at::empty({a.rows}, x.options().dtype(at::kLong));
  run_classes(a, epsilon, seed, max_matrix_bytes, rows, gains, assign);
  // Local rows -> rows of x.
  int64_t* rp = rows.data_ptr<int64_t>();
  for (int64_t c = 0; c < a.count; ++c)
    for (int64_t t = a.pos0[c]; t < a.pos0[c + 1]; ++t) rp[t] += a.start()[c];
  return {rows, gains, assign};
}

}  // namespace

TORCH_LIBRARY_IMPL(coreaug, CPU, m) { m.impl("facility_location", &facility_location_cpu); }

}  // namespace coreaug
