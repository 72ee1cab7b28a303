/*
 * act.h -- activation functions, applied to whole contiguous segments.
 *
 * The cells apply an activation to a gate segment (H floats) at a time, so
 * the switch on the activation kind sits outside the element loop and the
 * loop body is a plain map the compiler can vectorise.  These are exact
 * (libm) versions; the per-ISA approximations of a later stage must stay
 * within drnn's 1e-5 bound.
 */
#ifndef DRNN_ACT_H
#define DRNN_ACT_H

#include <math.h>
#include <stdint.h>
#include "drnn.h"

static inline float drnn_sigmoidf(float x)
{
    /* Split on the sign so exp never overflows to inf/inf. */
    if (x >= 0.0f) {
        return 1.0f / (1.0f + expf(-x));
    }
    float e = expf(x);
    return e / (1.0f + e);
}

static inline float drnn_clampf(float x, float lo, float hi)
{
    /* NaN falls through both tests and stays NaN. */
    return x < lo ? lo : (x > hi ? hi : x);
}

/* Clip every element to [-bound, bound]; bound <= 0 means no clip. */
static inline void drnn_clip_segment(float *x, int64_t n, float bound)
{
    if (!(bound > 0.0f))
        return;
    for (int64_t i = 0; i < n; ++i)
        x[i] = drnn_clampf(x[i], -bound, bound);
}

static inline int drnn_act_valid(const drnn_act *a)
{
    return a->kind >= 0 && a->kind < DRNN_ACT_COUNT_;
}

/* out[i] = act(in[i]) for i < n; out may alias in. */
static inline void drnn_act_segment(const drnn_act *a, const float *in, float *out, int64_t n)
{
    const float alpha = a->alpha, beta = a->beta;
    int64_t i;
    switch (a->kind) {
    case DRNN_ACT_SIGMOID:
        for (i = 0; i < n; ++i) out[i] = drnn_sigmoidf(in[i]);
        break;
    case DRNN_ACT_TANH:
        for (i = 0; i < n; ++i) out[i] = tanhf(in[i]);
        break;
    case DRNN_ACT_RELU:
        /* x > 0 ? x : 0 would turn NaN into 0; keep NaN. */
        for (i = 0; i < n; ++i) out[i] = in[i] < 0.0f ? 0.0f : in[i];
        break;
    case DRNN_ACT_LINEAR:
        if (out != in)
            for (i = 0; i < n; ++i) out[i] = in[i];
        break;
    case DRNN_ACT_HARD_SIGMOID:
        for (i = 0; i < n; ++i) out[i] = drnn_clampf(alpha * in[i] + beta, 0.0f, 1.0f);
        break;
    case DRNN_ACT_AFFINE:
        for (i = 0; i < n; ++i) out[i] = alpha * in[i] + beta;
        break;
    case DRNN_ACT_LEAKY_RELU:
        for (i = 0; i < n; ++i) out[i] = in[i] < 0.0f ? alpha * in[i] : in[i];
        break;
    case DRNN_ACT_THRESHOLDED_RELU:
        for (i = 0; i < n; ++i) out[i] = in[i] > alpha ? in[i] : (in[i] != in[i] ? in[i] : 0.0f);
        break;
    case DRNN_ACT_SCALED_TANH:
        for (i = 0; i < n; ++i) out[i] = alpha * tanhf(beta * in[i]);
        break;
    case DRNN_ACT_ELU:
        for (i = 0; i < n; ++i) out[i] = in[i] < 0.0f ? alpha * expm1f(in[i]) : in[i];
        break;
    case DRNN_ACT_SOFTSIGN:
        for (i = 0; i < n; ++i) out[i] = in[i] / (1.0f + fabsf(in[i]));
        break;
    case DRNN_ACT_SOFTPLUS:
        /* log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|). */
        for (i = 0; i < n; ++i) {
            float x = in[i];
            out[i] = (x > 0.0f ? x : 0.0f) + log1pf(expf(-fabsf(x)));
        }
        break;
    default:
        /* Unreachable: descriptions are validated before any math runs. */
        break;
    }
}

#endif /* DRNN_ACT_H */
