/*
 * simd.h -- one vector type and the vector math every kernel is written in.
 *
 * The kernel sources (gemm.c, rnn.c, lstm.c, gru.c, act.c) are written once
 * against `vf`, a GCC/Clang vector of DRNN_VW floats, and compiled once per
 * instruction set by setup.py with that ISA's flags:
 *
 *     portable  DRNN_VW 4   baseline x86-64 (SSE2) or any other CPU
 *     avx2      DRNN_VW 8   -mavx2 -mfma
 *     avx512    DRNN_VW 16  -mavx512f -mavx512vl -mavx512dq -mavx512bw -mfma
 *
 * Each compilation gets its own DRNN_KERNEL_SUFFIX, so the three sets of
 * symbols live side by side and cpu.c's dispatch table picks one at run time.
 *
 * exp reduces by ln 2 and evaluates a degree-5 polynomial (~2 ulp, see
 * vexp); sigmoid and tanh are built on it and stay within a few 1e-7
 * absolute of the exact functions.  NaN propagates.
 */
#ifndef DRNN_SIMD_H
#define DRNN_SIMD_H

#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include "act.h"
#include "drnn.h"

#ifndef DRNN_VW
#define DRNN_VW 4
#endif
#ifndef DRNN_KERNEL_SUFFIX
#define DRNN_KERNEL_SUFFIX portable
#endif
#define DRNN_CAT_(a, b) a##_##b
#define DRNN_CAT(a, b) DRNN_CAT_(a, b)
/* DRNN_KERNEL(drnn_gemm) -> drnn_gemm_avx512 in the avx512 compilation. */
#define DRNN_KERNEL(name) DRNN_CAT(name, DRNN_KERNEL_SUFFIX)

#define VW DRNN_VW
typedef float vf __attribute__((vector_size(DRNN_VW * 4)));
typedef int32_t vi __attribute__((vector_size(DRNN_VW * 4)));
typedef uint32_t vu __attribute__((vector_size(DRNN_VW * 4)));

#define DRNN_INLINE static inline __attribute__((always_inline))

DRNN_INLINE vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
DRNN_INLINE void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* Lane 0 shuffled everywhere: one broadcast instruction (x + (vf){0}
 * would cost an add too, since -0.0 + 0.0 is not -0.0). */
DRNN_INLINE vf vset1(float x)
{
    const vf v = {x};
    return __builtin_shuffle(v, (vi){0});
}
DRNN_INLINE vf vzero(void) { return (vf){0}; }

/* Lane-wise select: m ? a : b, m a comparison result (all ones / zero). */
DRNN_INLINE vf vsel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
/* max/min that keep NaN in x.  x86's max/min return their second operand
 * when either is NaN, so one instruction does it; elsewhere a select
 * (comparisons with NaN are false). */
#if defined(__AVX512F__) && DRNN_VW == 16
DRNN_INLINE vf vmaxk(vf x, vf lo) { return (vf)_mm512_max_ps((__m512)lo, (__m512)x); }
DRNN_INLINE vf vmink(vf x, vf hi) { return (vf)_mm512_min_ps((__m512)hi, (__m512)x); }
#elif defined(__AVX__) && DRNN_VW == 8
DRNN_INLINE vf vmaxk(vf x, vf lo) { return (vf)_mm256_max_ps((__m256)lo, (__m256)x); }
DRNN_INLINE vf vmink(vf x, vf hi) { return (vf)_mm256_min_ps((__m256)hi, (__m256)x); }
#elif defined(__SSE2__) && DRNN_VW == 4
DRNN_INLINE vf vmaxk(vf x, vf lo) { return (vf)_mm_max_ps((__m128)lo, (__m128)x); }
DRNN_INLINE vf vmink(vf x, vf hi) { return (vf)_mm_min_ps((__m128)hi, (__m128)x); }
#else
DRNN_INLINE vf vmaxk(vf x, vf lo) { return vsel(x < lo, lo, x); }
DRNN_INLINE vf vmink(vf x, vf hi) { return vsel(x > hi, hi, x); }
#endif
DRNN_INLINE vf vclamp(vf x, float lo, float hi) { return vmink(vmaxk(x, vset1(lo)), vset1(hi)); }
DRNN_INLINE vf vabs(vf x) { return (vf)((vi)x & 0x7fffffff); }

/* 1 / d for d >= 1 (the sigmoid and tanh denominators).  AVX-512's 14-bit
 * reciprocal estimate plus one Newton step (error ~2^-28, below float
 * rounding) is shorter than a division on the step's critical path;
 * d = +inf gives 0 through the estimate, NaN stays NaN. */
DRNN_INLINE vf vrecip_ge1(vf d)
{
#if defined(__AVX512F__) && DRNN_VW == 16
    const vf r = (vf)_mm512_rcp14_ps((__m512)d);
    return r * (2.0f - d * r);
#else
    return 1.0f / d;
#endif
}

/* e^x: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite, two constants), then
 * e^r = 1 + r + r^2 q(r) with q a cubic fitted for relative error on that
 * interval (max 1.2e-7, ~2 ulp: well inside drnn's 1e-5; Cephes' degree-7
 * form costs two more FMAs on every gate for digits float cannot keep).
 * AVX-512 rounds with vrndscaleps and scales by 2^n with vscalefps; other
 * ISAs round by adding 1.5 * 2^23, whose low mantissa bits then hold n, and
 * shift those bits into the exponent.  The clamp keeps n in [-126, 127]
 * (and infinities out of the reduction); NaN propagates. */
DRNN_INLINE vf vexp(vf x)
{
    x = vclamp(x, -87.33654f, 88.37626f);
#if defined(__AVX512F__) && DRNN_VW == 16
    const vf n = (vf)_mm512_roundscale_ps((__m512)(x * 1.44269504088896341f),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    const float magic = 12582912.0f;                    /* 1.5 * 2^23 */
    const vf t = x * 1.44269504088896341f + magic;
    const vf n = t - magic;
#endif
    const vf r = x - n * 0.693359375f - n * -2.12194440e-4f;
    vf q = 8.333842270076275e-3f * r + 4.189859703183174e-2f;
    q = q * r + 1.666688621044159e-1f;
    q = q * r + 4.999914169311523e-1f;
    const vf y = q * (r * r) + r + 1.0f;
#if defined(__AVX512F__) && DRNN_VW == 16
    return (vf)_mm512_scalef_ps((__m512)y, (__m512)n);
#else
    const vu e = ((vu)t + 127u) << 23;                  /* 2^n: the magic's own bits shift out */
    return y * (vf)e;
#endif
}

DRNN_INLINE vf vsigmoid(vf x) { return vrecip_ge1(1.0f + vexp(-x)); }

DRNN_INLINE vf vtanh(vf x)
{
    /* 1 - 2 / (e^2x + 1): exact limits at +-inf, absolute error ~2e-7. */
    return 1.0f - 2.0f * vrecip_ge1(vexp(x + x) + 1.0f);
}

/* One activation on one vector.  The switch sits outside any element loop;
 * the rarely used functions without a vector form go lane by lane. */
DRNN_INLINE vf vact(const drnn_act *a, vf x)
{
    const float alpha = a->alpha, beta = a->beta;
    switch (a->kind) {
    case DRNN_ACT_SIGMOID: return vsigmoid(x);
    case DRNN_ACT_TANH: return vtanh(x);
    case DRNN_ACT_RELU: return vmaxk(x, vzero());
    case DRNN_ACT_LINEAR: return x;
    case DRNN_ACT_HARD_SIGMOID: return vclamp(alpha * x + beta, 0.0f, 1.0f);
    case DRNN_ACT_AFFINE: return alpha * x + beta;
    case DRNN_ACT_LEAKY_RELU: return vsel(x < 0.0f, alpha * x, x);
    case DRNN_ACT_SCALED_TANH: return alpha * vtanh(beta * x);
    case DRNN_ACT_SOFTSIGN: return x / (1.0f + vabs(x));
    case DRNN_ACT_ELU: return vsel(x < 0.0f, alpha * (vexp(x) - 1.0f), x);
    default: {
        float t[DRNN_VW];
        vstore(t, x);
        drnn_act_segment(a, t, t, DRNN_VW);
        return vload(t);
    }
    }
}

/* Clip to [-bound, bound] when bound > 0 (ONNX cell clip). */
DRNN_INLINE vf vclip(vf x, float bound)
{
    return bound > 0.0f ? vclamp(x, -bound, bound) : x;
}

/* A cell's gate activation.  `kind` is a compile-time constant: lstm.c
 * and gru.c compile their common forms (PyTorch's activations, no clip)
 * with it set, which drops the per-gate switch and clip test -- 12-20% of
 * a batch-1 LSTM step, ~6% of a GRU 64 one -- and DRNN_ACT_ANY for
 * everything else (same arithmetic). */
#define DRNN_ACT_ANY (-1)
DRNN_INLINE vf vgate(const int kind, const drnn_act *a, vf x, float clip)
{
    switch (kind) {
    case DRNN_ACT_SIGMOID: return vsigmoid(x);
    case DRNN_ACT_TANH: return vtanh(x);
    default: return vact(a, vclip(x, clip));
    }
}

#endif /* DRNN_SIMD_H */
