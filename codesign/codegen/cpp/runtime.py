"""The C++ runtime prelude pasted at the top of every generated translation unit.

It holds what the kernels call but the IR does not spell out: element-type conversions
(bf16 as uint16 bits, f16 as `_Float16` where the compiler has it), vectorisable
`exp`/`tanh` (glibc's are scalar without -ffast-math, which would break -inf handling),
integer floor-division, and a packed, register-blocked GEMM (OpenMP over blocks of C;
a micro-kernel of MR x 2 vectors in GCC/Clang vector extensions, so `-march=native`
picks AVX-512, AVX2 or SSE). No BLAS: the translation unit builds with a bare C++17
compiler.
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
template <typename T> CS_INLINE T cs_sigmoid(T x) { return T(1) / (T(1) + cs_exp(-x)); }
template <typename T> CS_INLINE T cs_floordiv(T a, T b) { T q = a / b; return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q; }
template <typename T> CS_INLINE T cs_imod(T a, T b) { T r = a % b; return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
template <typename T> CS_INLINE T cs_fmod(T a, T b) { T r = std::fmod(a, b); return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r; }
template <typename T> CS_INLINE T cs_max(T a, T b) { return (a != a || a > b) ? a : b; }  // NaN-propagating
template <typename T> CS_INLINE T cs_min(T a, T b) { return (a != a || a < b) ? a : b; }
template <typename T> CS_INLINE T cs_ipow(T a, T b) { T r = 1; if (b < 0) return a == 1 ? 1 : (a == -1 ? ((b & 1) ? -1 : 1) : 0); while (b) { if (b & 1) r *= a; a *= a; b >>= 1; } return r; }

// ---- scratch memory -------------------------------------------------------------------
CS_INLINE void* cs_alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) std::abort();
  return p;
}

// ---- GEMM: C[M,N] (+)= A[M,K] B[K,N] (+ bias[N]), fp32, B(k, n) = B[k*sbk + n*sbn] ---
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

template <typename TB, typename LoadB>
static void cs_gemm(long M, long N, long K, const float* A, long lda, const TB* B, long sbk, long sbn,
                    float* C, long ldc, const float* bias, long MB, long NB, long KC, LoadB load_b) {
  if (M <= 0 || N <= 0) return;
  NB = std::max<long>(CS_NR, NB / CS_NR * CS_NR);
  MB = std::max<long>(1, MB);
  KC = std::max<long>(1, std::min(KC, K));
  const long nblocks = (N + NB - 1) / NB, mblocks = (M + MB - 1) / MB;
  if (K == 0) {
    for (long i = 0; i < M; ++i) for (long j = 0; j < N; ++j) C[i * ldc + j] = bias ? bias[j] : 0.0f;
    return;
  }
#pragma omp parallel
  {
    float* pack = (float*)cs_alloc(sizeof(float) * KC * NB);
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (long nb = 0; nb < nblocks; ++nb) {
      for (long mb = 0; mb < mblocks; ++mb) {
        const long n0 = nb * NB, nw = std::min(NB, N - n0), m0 = mb * MB, mw = std::min(MB, M - m0);
        const long panels = (nw + CS_NR - 1) / CS_NR;
        for (long k0 = 0; k0 < K; k0 += KC) {
          const long kc = std::min(KC, K - k0);
          for (long p = 0; p < panels; ++p) {  // pack B[k0:k0+kc, n0+p*NR : +NR] as [k][NR]
            float* dst = pack + p * kc * CS_NR;
            const long nr = std::min<long>(CS_NR, nw - p * CS_NR);
            for (long k = 0; k < kc; ++k) {
              const TB* src = B + (k0 + k) * sbk + (n0 + p * CS_NR) * sbn;
              long j = 0;
              for (; j < nr; ++j) dst[k * CS_NR + j] = load_b(src[j * sbn]);
              for (; j < CS_NR; ++j) dst[k * CS_NR + j] = 0.0f;
            }
          }
          for (long p = 0; p < panels; ++p) {
            const long nr = std::min<long>(CS_NR, nw - p * CS_NR);
            for (long i = 0; i < mw; i += CS_MR) {
              const int mr = (int)std::min<long>(CS_MR, mw - i);
              cs_ukernels[mr]((int)kc, A + (m0 + i) * lda + k0, lda, pack + p * kc * CS_NR,
                              C + (m0 + i) * ldc + n0 + p * CS_NR, ldc, (int)nr, k0 > 0);
            }
          }
        }
        if (bias)
          for (long i = 0; i < mw; ++i) {
            float* c = C + (m0 + i) * ldc + n0;
            CS_PRAGMA(omp simd)
            for (long j = 0; j < nw; ++j) c[j] += bias[n0 + j];
          }
      }
    }
    std::free(pack);
  }
}

template <typename TB>
static void cs_gemm_f32(long M, long N, long K, const float* A, long lda, const TB* B, long sbk, long sbn,
                        float* C, long ldc, const float* bias, long MB, long NB, long KC);
template <>
void cs_gemm_f32<float>(long M, long N, long K, const float* A, long lda, const float* B, long sbk, long sbn,
                        float* C, long ldc, const float* bias, long MB, long NB, long KC) {
  cs_gemm(M, N, K, A, lda, B, sbk, sbn, C, ldc, bias, MB, NB, KC, [](float v) { return v; });
}
template <>
void cs_gemm_f32<bf16_t>(long M, long N, long K, const float* A, long lda, const bf16_t* B, long sbk, long sbn,
                         float* C, long ldc, const float* bias, long MB, long NB, long KC) {
  cs_gemm(M, N, K, A, lda, B, sbk, sbn, C, ldc, bias, MB, NB, KC, [](bf16_t v) { return cs_bf16_to_f32(v); });
}
template <>
void cs_gemm_f32<f16_t>(long M, long N, long K, const float* A, long lda, const f16_t* B, long sbk, long sbn,
                        float* C, long ldc, const float* bias, long MB, long NB, long KC) {
  cs_gemm(M, N, K, A, lda, B, sbk, sbn, C, ldc, bias, MB, NB, KC, [](f16_t v) { return cs_f16_to_f32(v); });
}
'''
