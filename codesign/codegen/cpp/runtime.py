"""The C++ runtime prelude pasted at the top of every generated translation unit.

It holds what the kernels call but the IR does not spell out: element-type conversions
(bf16 as uint16 bits, f16 as `_Float16` where the compiler has it), vectorisable
`exp`/`tanh` (glibc's are scalar without -ffast-math, which would break -inf handling),
integer floor-division, and the GEMM of one output tile (`cs_gemm_tile`). Kernels run the
tiles in an OpenMP loop and apply their fused epilogue to each tile in cache. Built with
`-DCODESIGN_BLAS` (what `build` does when the scipy-openblas32 wheel is installed), an fp32
tile is one BLAS `sgemm` call — OpenBLAS, symbols prefixed `scipy_`, held to one thread so
that OpenMP alone owns the cores; `CODESIGN_SGEMM` / `CODESIGN_BLAS_SET_THREADS` name
another CBLAS. Otherwise, and for bf16 / f16 weights, a packed, register-blocked hand GEMM
runs (a micro-kernel of MR x 2 vectors in GCC/Clang vector extensions, so `-march=native`
picks AVX-512, AVX2 or SSE): the translation unit still builds with a bare C++17 compiler.
Where BLAS is linked, `cs_gemm_use_blas(0)` sends fp32 tiles to the hand GEMM too (CppModule
does where the BLAS's kernels are narrower than the CPU's vectors). Convolutions
(`conv.py`) add per-thread scratch that grows and is kept (`cs_scratch`: im2col blocks,
padded planes), the padding spans of a row (`cs_conv_span`) and their block sizes
(`cs_conv_blocks`).
"""

PRELUDE = r'''
#include <cstdint>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <cfloat>
#include <climits>
#include <algorithm>
#include <limits>
#include <type_traits>
#ifdef _OPENMP
#include <omp.h>
#endif

#define CS_INLINE static inline __attribute__((always_inline))
#define CS_PRAGMA(x) _Pragma(#x)

// ---- element types -------------------------------------------------------------------
typedef uint16_t bf16_t;  // bfloat16 stored as its bits; arithmetic happens in float
CS_INLINE float cs_bf16_to_f32(bf16_t h) { uint32_t u = (uint32_t)h << 16; float f; std::memcpy(&f, &u, 4); return f; }
CS_INLINE bf16_t cs_f32_to_bf16(float f) {  // round to nearest even, NaN stays NaN
  uint32_t u; std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (bf16_t)(u >> 16);
}
CS_INLINE float cs_round_bf16(float f) { return cs_bf16_to_f32(cs_f32_to_bf16(f)); }

#if defined(__FLT16_MAX__) && !defined(CS_NO_FLOAT16)
typedef _Float16 f16_t;
CS_INLINE float cs_f16_to_f32(f16_t h) { return (float)h; }
CS_INLINE f16_t cs_f32_to_f16(float f) { return (f16_t)f; }
#else
typedef uint16_t f16_t;  // IEEE half stored as bits (no _Float16 in this compiler)
CS_INLINE float cs_f16_to_f32(f16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0) {
    if (man == 0) u = sign;
    else { exp = 127 - 15 + 1; while (!(man & 0x400u)) { man <<= 1; --exp; } man &= 0x3ffu; u = sign | (exp << 23) | (man << 13); }
  } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
  else u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  float f; std::memcpy(&f, &u, 4); return f;
}
CS_INLINE f16_t cs_f32_to_f16(float f) {
  uint32_t u; std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u; int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15; uint32_t man = u & 0x7fffffu;
  if (((u >> 23) & 0xff) == 0xff) return (f16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
  if (exp >= 31) return (f16_t)(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return (f16_t)sign;
    man |= 0x800000u; uint32_t shift = (uint32_t)(14 - exp), half = 1u << (shift - 1);
    uint32_t r = man >> shift, rem = man & ((1u << shift) - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return (f16_t)(sign | r);
  }
  uint32_t r = ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) ++r;
  return (f16_t)(sign | r);
}
#endif
CS_INLINE float cs_round_f16(float f) { return cs_f16_to_f32(cs_f32_to_f16(f)); }

// ---- scalar math that vectorises (branch-free; selects instead of ifs) ---------------
CS_INLINE float cs_exp(float x) {  // Cephes expf: 2^n * P(r), about 1 ulp
  float xc = std::min(std::max(x, -87.33654f), 88.72283f);
  float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  float r2 = r * r;
  float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
              + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale; std::memcpy(&scale, &bits, 4);
  float y = p * scale;
  y = x < -87.33654f ? 0.0f : y;
  y = x > 88.72283f ? INFINITY : y;
  return x != x ? x : y;
}
CS_INLINE double cs_exp(double x) { return std::exp(x); }
CS_INLINE float cs_tanh(float x) {  // Cephes tanhf: odd polynomial near 0, exp form elsewhere
  float ax = std::fabs(x), z = x * x;
  float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                 + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  float big = 1.0f - 2.0f / (cs_exp(2.0f * std::min(ax, 20.0f)) + 1.0f);
  big = x < 0 ? -big : big;
  return ax < 0.625f ? small : big;
}
CS_INLINE double cs_tanh(double x) { return std::tanh(x); }
// erf without a libm call, so GCC vectorises it (std::erf stays scalar: an exact GELU
// epilogue cost a BERT / ViT GEMM 2.7x its time). |x| <= 1: x P(x^2); 1 < |x| < 4:
// 1 - e^(-x^2) R(1/|x|); beyond, +-1 (erfc(4) is below half an ulp of 1). P and R are
// least-squares fits of relative error made for this runtime (tests/test_codegen_cpp.py
// holds it within 3 ulp of erf on a dense grid).
CS_INLINE float cs_erf(float x) {
  float ax = std::fabs(x), z = x * x;
  float small = x * ((((((7.890644338e-05f * z + -8.020931273e-04f) * z + 5.189499352e-03f) * z
                         + -2.685439959e-02f) * z + 1.128359810e-01f) * z + -3.761262596e-01f) * z + 1.128379107e+00f);
  float a = std::min(std::max(ax, 1.0f), 4.0f), t = 1.0f / a;
  float r = ((((((((((-3.996532783e-02f * t + 2.747484148e-01f) * t + -8.361342549e-01f) * t + 1.461267591e+00f) * t
                   + -1.558718681e+00f) * t + 9.209219217e-01f) * t + -7.817476988e-02f) * t + -2.827361226e-01f) * t
               + 2.589177340e-03f) * t + 5.637614727e-01f) * t + 2.415316339e-05f);
  float big = ax >= 4.0f ? 1.0f : 1.0f - cs_exp(-a * a) * r;
  big = x < 0 ? -big : big;
  return ax <= 1.0f ? small : big;
}
CS_INLINE double cs_erf(double x) { return std::erf(x); }
template <typename T> CS_INLINE T cs_sigmoid(T x) { return T(1) / (T(1) + cs_exp(-x)); }
template <typename T> CS_INLINE T cs_floordiv(T a, T b) { T q = a / b; return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q; }
template <typename T> CS_INLINE T cs_imod(T a, T b) { T r = a % b; return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
// NaN-propagating max / min (b on a tie, as a running accumulator keeps its value). Nested
// selects, not `||`: GCC if-converts and vectorises them where they combine a fused select.
template <typename T> CS_INLINE T cs_max(T a, T b) { return (b != b) ? b : ((a != a) ? a : (a > b ? a : b)); }
template <typename T> CS_INLINE T cs_min(T a, T b) { return (b != b) ? b : ((a != a) ? a : (a < b ? a : b)); }
template <typename T> CS_INLINE T cs_ipow(T a, T b) { T r = 1; if (b < 0) return a == 1 ? 1 : (a == -1 ? ((b & 1) ? -1 : 1) : 0); while (b) { if (b & 1) r *= a; a *= a; b >>= 1; } return r; }

// ---- run-time checks (codesign.codegen.checks) ----------------------------------------
// A failing check records itself (the first one wins, from any OpenMP thread); the kernel
// returns before its loops (an index pass found a bad one) or goes on with a safe value
// (index 0, quotient 0), and run() returns the code after that kernel: 1 = an index out of
// range, 2 = integer division by zero. codesign_error() says which kernel call, which check
// site in it, and the offending value.
static int cs_err_code = 0, cs_err_site = -1, cs_err_call = -1;
static int64_t cs_err_value = 0;
__attribute__((noinline, cold)) static void cs_fail(int code, int site, int64_t value) {
  int none = 0;
  if (__atomic_compare_exchange_n(&cs_err_code, &none, code, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    cs_err_site = site;
    cs_err_value = value;
  }
}
__attribute__((noinline, cold)) static int cs_failed(int call) {
  if (cs_err_call < 0) cs_err_call = call;
  return cs_err_code;
}
// coordinate i of an extent-n dim: i itself, or 0 (recorded, `shown` is the index to name)
CS_INLINE int64_t cs_index(int64_t i, int64_t n, int site, int64_t shown) {
  if (__builtin_expect((uint64_t)i >= (uint64_t)n, 0)) { cs_fail(1, site, shown); return 0; }
  return i;
}
// integer a / b (truncated) and a % b (the dividend's sign): b == 0 is recorded and gives 0;
// b == -1 negates with wrap-around (INT_MIN / -1 == INT_MIN, INT_MIN % -1 == 0: torch on the CPU)
template <typename T> CS_INLINE T cs_idiv(T a, T b, int site) {
  if (__builtin_expect(b == 0, 0)) { cs_fail(2, site, 0); return 0; }
  if constexpr (std::is_signed<T>::value) { if (b == (T)-1) return (T)(0u - (std::make_unsigned_t<T>)a); }
  return (T)(a / b);
}
template <typename T> CS_INLINE T cs_irem(T a, T b, int site) {
  if (__builtin_expect(b == 0, 0)) { cs_fail(2, site, 0); return 0; }
  if constexpr (std::is_signed<T>::value) { if (b == (T)-1) return 0; }
  return (T)(a % b);
}

// ---- scratch memory -------------------------------------------------------------------
CS_INLINE void* cs_alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) std::abort();
  return p;
}

// Per-thread scratch that grows on demand and is kept for the thread's life (an im2col
// block, a padded input plane): reused by every call, so no page faults after the first.
struct cs_scratch_block { float* data = nullptr; size_t floats = 0; ~cs_scratch_block() { std::free(data); } };
static float* cs_scratch(size_t floats) {
  static thread_local cs_scratch_block block;
  if (block.floats < floats) {
    std::free(block.data);
    block.data = (float*)cs_alloc(sizeof(float) * floats);
    block.floats = floats;
  }
  return block.data;
}

// ---- GEMM: one output tile C[mw,nw] = A[mw,K] B[K,nw] (+ bias[nw]), B(k, n) = B[k*sbk + n*sbn] ---
// Tiles are single-threaded: the generated kernel runs them in an OpenMP loop and applies
// the group's epilogue to each tile while it is in cache. Built with -DCODESIGN_BLAS, fp32
// tiles go through BLAS sgemm (default: OpenBLAS from the scipy-openblas32 wheel, symbols
// prefixed scipy_), set to one thread so that OpenMP alone owns the cores (no
// oversubscription); without it, or for bf16 / f16 weights, the packed hand GEMM below runs.
#if defined(CODESIGN_BLAS)
#if defined(CODESIGN_BLAS_SYSTEM) && !defined(CODESIGN_SGEMM)  // a system OpenBLAS: unprefixed names
#define CODESIGN_SGEMM cblas_sgemm
#define CODESIGN_BLAS_SET_THREADS openblas_set_num_threads
#define CODESIGN_BLAS_NAME "OpenBLAS (system)"
#endif
#ifndef CODESIGN_SGEMM
#define CODESIGN_SGEMM scipy_cblas_sgemm
#define CODESIGN_BLAS_SET_THREADS scipy_openblas_set_num_threads
#endif
#ifndef CODESIGN_BLAS_NAME
#define CODESIGN_BLAS_NAME "OpenBLAS (scipy-openblas32)"
#endif
extern "C" void CODESIGN_SGEMM(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                               const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
#ifdef CODESIGN_BLAS_SET_THREADS
extern "C" void CODESIGN_BLAS_SET_THREADS(int);
#endif
// 1: fp32 tiles through BLAS; 0: through the hand GEMM (CppModule turns BLAS off where its
// kernels are narrower than the CPU's vectors: `build.blas_fits_cpu`)
static int cs_blas_on = 1;
static void cs_gemm_use_blas(int on) { cs_blas_on = on != 0; }
static const char* cs_gemm_backend() { return cs_blas_on ? CODESIGN_BLAS_NAME : "packed hand GEMM (BLAS linked, off)"; }
static void cs_gemm_init() {
#ifdef CODESIGN_BLAS_SET_THREADS
  static bool done = false;
  if (!done) { CODESIGN_BLAS_SET_THREADS(1); done = true; }  // OpenMP runs the tiles
#endif
}
#else
static const int cs_blas_on = 0;
static void cs_gemm_use_blas(int) {}
static const char* cs_gemm_backend() { return "packed hand GEMM (no BLAS)"; }
static void cs_gemm_init() {}
#endif

#if defined(__AVX512F__)
#define CS_VW 16
#define CS_MR 8
#elif defined(__AVX__)
#define CS_VW 8
#define CS_MR 6
#else
#define CS_VW 4
#define CS_MR 6
#endif
#define CS_NR (2 * CS_VW)
#define CS_KC 256
typedef float cs_vf __attribute__((vector_size(CS_VW * 4)));
typedef float cs_vfu __attribute__((vector_size(CS_VW * 4), aligned(4)));

template <int MR>
static void cs_ukernel(int kc, const float* __restrict A, long lda, const float* __restrict Bp,
                       float* __restrict C, long ldc, int nr, bool accumulate) {
  cs_vf acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) { acc0[i] = (cs_vf){}; acc1[i] = (cs_vf){}; }
  for (int k = 0; k < kc; ++k) {
    const cs_vf b0 = *(const cs_vf*)(Bp + (long)k * CS_NR);
    const cs_vf b1 = *(const cs_vf*)(Bp + (long)k * CS_NR + CS_VW);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) { const float a = A[i * lda + k]; acc0[i] += a * b0; acc1[i] += a * b1; }
  }
  if (nr == CS_NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      cs_vfu* c = (cs_vfu*)(C + i * ldc);
      cs_vfu* c1 = (cs_vfu*)(C + i * ldc + CS_VW);
      if (accumulate) { *c += acc0[i]; *c1 += acc1[i]; } else { *c = acc0[i]; *c1 = acc1[i]; }
    }
  } else {
    for (int i = 0; i < MR; ++i) {
      float tmp[CS_NR];
      std::memcpy(tmp, &acc0[i], sizeof(cs_vf)); std::memcpy(tmp + CS_VW, &acc1[i], sizeof(cs_vf));
      for (int j = 0; j < nr; ++j) C[i * ldc + j] = accumulate ? C[i * ldc + j] + tmp[j] : tmp[j];
    }
  }
}

typedef void (*cs_ukernel_fn)(int, const float*, long, const float*, float*, long, int, bool);
static const cs_ukernel_fn cs_ukernels[9] = {nullptr, cs_ukernel<1>, cs_ukernel<2>, cs_ukernel<3>,
    cs_ukernel<4>, cs_ukernel<5>, cs_ukernel<6>, cs_ukernel<7>, cs_ukernel<8>};

// How a B element becomes float: KIND 0 = f32, 1 = bf16 bits, 2 = f16 (f16_t may be uint16_t too).
template <int KIND, typename TB> CS_INLINE float cs_load_b(TB v) {
  if constexpr (KIND == 1) return cs_bf16_to_f32((bf16_t)v);
  else if constexpr (KIND == 2) return cs_f16_to_f32((f16_t)v);
  else return (float)v;
}

// The hand GEMM on one tile: B panels of NR columns packed as [k][NR], MR x NR micro-kernel.
template <typename TB, typename LoadB>
static void cs_gemm_tile_hand(long mw, long nw, long K, const float* A, long lda, const TB* B, long sbk, long sbn,
                              float* C, long ldc, float* pack, LoadB load_b) {
  if (K == 0) {
    for (long i = 0; i < mw; ++i) for (long j = 0; j < nw; ++j) C[i * ldc + j] = 0.0f;
    return;
  }
  const long panels = (nw + CS_NR - 1) / CS_NR;
  for (long k0 = 0; k0 < K; k0 += CS_KC) {
    const long kc = std::min<long>(CS_KC, K - k0);
    for (long p = 0; p < panels; ++p) {  // pack B[k0:k0+kc, p*NR : +NR] as [k][NR]
      float* dst = pack + p * kc * CS_NR;
      const long nr = std::min<long>(CS_NR, nw - p * CS_NR);
      for (long k = 0; k < kc; ++k) {
        const TB* src = B + (k0 + k) * sbk + (p * CS_NR) * sbn;
        long j = 0;
        for (; j < nr; ++j) dst[k * CS_NR + j] = load_b(src[j * sbn]);
        for (; j < CS_NR; ++j) dst[k * CS_NR + j] = 0.0f;
      }
    }
    for (long p = 0; p < panels; ++p) {
      const long nr = std::min<long>(CS_NR, nw - p * CS_NR);
      for (long i = 0; i < mw; i += CS_MR) {
        const int mr = (int)std::min<long>(CS_MR, mw - i);
        cs_ukernels[mr]((int)kc, A + i * lda + k0, lda, pack + p * kc * CS_NR, C + i * ldc + p * CS_NR, ldc,
                        (int)nr, k0 > 0);
      }
    }
  }
}

// Tile sizes for an M x N output (times `batch`): whole rows up to 512, columns split until
// every thread has a few tiles (dynamic schedule), in multiples of 64 (and of NR).
static void cs_gemm_blocks(long batch, long M, long N, long* MB, long* NB) {
#ifdef _OPENMP
  const long threads = omp_get_max_threads();
#else
  const long threads = 1;
#endif
  long mb = M <= 512 ? std::max<long>(M, 1) : 256;
  const long mtiles = batch * ((M + mb - 1) / mb);
  long nb = 512;
  while (nb > 64 && mtiles * ((N + nb - 1) / nb) < 4 * threads) nb /= 2;
  *MB = mb;
  *NB = std::max<long>(1, std::min<long>(nb, N));
}

// Scratch for one thread's tiles: the hand GEMM's packed B panels (none when BLAS runs them).
template <int KIND>
static float* cs_gemm_pack(long NB) {
#if defined(CODESIGN_BLAS)
  if (KIND == 0 && cs_blas_on) return nullptr;
#endif
  return (float*)cs_alloc(sizeof(float) * CS_KC * ((NB + CS_NR - 1) / CS_NR) * CS_NR);
}

template <int KIND, typename TB>
static void cs_gemm_tile(long mw, long nw, long K, const float* A, long lda, const TB* B, long sbk, long sbn,
                         float* C, long ldc, const float* bias, float* pack) {
  if (mw <= 0 || nw <= 0) return;
  bool done = false;
#if defined(CODESIGN_BLAS)
  if (KIND == 0 && cs_blas_on && K > 0 && lda >= K && ldc >= nw) {
    const float* Bf = (const float*)(const void*)B;
    if (sbn == 1 && sbk >= nw) {  // B row-major [K, N]
      CODESIGN_SGEMM(101, 111, 111, (int)mw, (int)nw, (int)K, 1.0f, A, (int)lda, Bf, (int)sbk, 0.0f, C, (int)ldc);
      done = true;
    } else if (sbk == 1 && sbn >= K) {  // B is a [N, K] weight (linear): transposed
      CODESIGN_SGEMM(101, 111, 112, (int)mw, (int)nw, (int)K, 1.0f, A, (int)lda, Bf, (int)sbn, 0.0f, C, (int)ldc);
      done = true;
    }
  }
#endif
  if (!done) {
    float* own = pack ? nullptr : (float*)cs_alloc(sizeof(float) * CS_KC * ((nw + CS_NR - 1) / CS_NR) * CS_NR);
    cs_gemm_tile_hand(mw, nw, K, A, lda, B, sbk, sbn, C, ldc, pack ? pack : own, [](TB v) { return cs_load_b<KIND>(v); });
    std::free(own);
  }
  if (bias)
    for (long i = 0; i < mw; ++i) {
      float* c = C + i * ldc;
      CS_PRAGMA(omp simd)
      for (long j = 0; j < nw; ++j) c[j] += bias[j];
    }
}

// ---- convolution helpers (codegen/cpp/conv.py) ---------------------------------------
// [*lo, *hi): the outputs o in [0, n) whose input coordinate o * stride + offset lies in
// [0, size) (a padded conv reads zeros outside it); an empty span has *lo == *hi.
CS_INLINE void cs_conv_span(long n, long stride, long offset, long size, long* lo, long* hi) {
  long a = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  long b = size - offset <= 0 ? 0 : (size - offset - 1) / stride + 1;
  a = std::min(a, n);
  *lo = a;
  *hi = std::min(std::max(b, a), n);
}

// Blocks of a conv as GEMM: `batch` (images x groups) products of [M, K] weights by [K, P]
// im2col columns. A K x NB column block is sized to stay in L2 (about 512 KiB) with NB a
// multiple of 16 in [64, 1024]; columns are split, then rows, until every thread has two
// blocks (static schedule: a thread's consecutive blocks share their columns).
static void cs_conv_blocks(long batch, long M, long P, long K, long* MB, long* NB) {
#ifdef _OPENMP
  const long threads = omp_get_max_threads();
#else
  const long threads = 1;
#endif
  long nb = std::min<long>(1024, std::max<long>(64, (128L * 1024) / std::max<long>(K, 1)) / 16 * 16);
  if (nb >= P) nb = std::max<long>(P, 1);
  while (nb > 64 && batch * ((P + nb - 1) / nb) < 2 * threads) nb = std::max<long>(64, (nb / 2 + 15) / 16 * 16);
  const long tasks = batch * ((P + nb - 1) / nb);
  long split = 1;
  if (tasks < 2 * threads) split = std::min<long>((2 * threads + tasks - 1) / tasks, std::max<long>(M / 32, 1));
  long mb = (M + split - 1) / split;
  if (mb < M) mb = (mb + 7) / 8 * 8;
  *MB = std::max<long>(mb, 1);
  *NB = nb;
}
'''
