/*
 * gru.c -- one time step of the GRU on packed weights, gate order r z n:
 *
 *     r = f(x_r + R_r h)        z = f(x_z + R_z h)       (biases folded in x)
 *     linear_before_reset = 1 (PyTorch, Keras reset_after=True):
 *         n = g(x_n + r * (R_n h + b_hn))               one phase
 *     linear_before_reset = 0 (Keras reset_after=False, ONNX default):
 *         phase 0: r, z; keep z and r * h
 *         phase 1: n = g(x_n + R_n (r * h))             (b_hn folded in x_n)
 *     h' = (1 - z) * n + z * h
 *
 * The second form needs every unit's r before any n, so the driver puts a
 * barrier between its phases when units are split across threads.
 */
#include "simd.h"
#include "internal.h"

/* Rows per pass: the gate sums of RMAX rows (two sets each) stay in registers. */
#if DRNN_VW >= 16
#define RMAX 3
#else
#define RMAX 1
#endif

/* Recurrent sums of NG gates for R rows of block jb: acc[q][g].  Even k and
 * odd k go to separate sums (more FMA chains in flight) in the same order
 * whatever R is, so a row's result never depends on which rows share its
 * pass. */
DRNN_INLINE void gates_sum(const int R, const int NG, int64_t K, const float *w,
                           const float *h, int64_t ld, vf acc[RMAX][3])
{
    vf acc2[RMAX][3];
    for (int q = 0; q < R; ++q)
        for (int g = 0; g < NG; ++g) acc[q][g] = acc2[q][g] = vzero();
    int64_t k = 0;
    for (; k + 2 <= K; k += 2) {
        const float *wk = w + k * NG * VW;
        vf wv[3], wv2[3];
        for (int g = 0; g < NG; ++g) {
            wv[g] = vload(wk + g * VW);
            wv2[g] = vload(wk + (NG + g) * VW);
        }
        for (int q = 0; q < R; ++q) {
            const vf h0 = vset1(h[q * ld + k]), h1 = vset1(h[q * ld + k + 1]);
            for (int g = 0; g < NG; ++g) {
                acc[q][g] += h0 * wv[g];
                acc2[q][g] += h1 * wv2[g];
            }
        }
    }
    if (k < K) {
        const float *wk = w + k * NG * VW;
        for (int q = 0; q < R; ++q) {
            const vf h0 = vset1(h[q * ld + k]);
            for (int g = 0; g < NG; ++g) acc[q][g] += h0 * vload(wk + g * VW);
        }
    }
    for (int q = 0; q < R; ++q)
        for (int g = 0; g < NG; ++g) acc[q][g] += acc2[q][g];
}

DRNN_INLINE void gru_rows(const drnn_step_args *a, const int phase, const int R,
                          int64_t r, int64_t jb)
{
    const int64_t K = a->K, Hp = a->Hp, ld = a->ld_h, u0 = jb * VW;
    const int lbr = a->desc->linear_before_reset;
    const float clip = a->desc->clip;
    const drnn_act *fa = &a->act[0], *ga = &a->act[1];
    vf acc[RMAX][3];
    if (lbr) {
        gates_sum(R, 3, K, a->w_hh + jb * K * 3 * VW, a->h_prev + r * ld, ld, acc);
        for (int q = 0; q < R; ++q) {
            const float *x = a->x_ih[r + q] + jb * 3 * VW;
            const vf rg = vact(fa, vclip(acc[q][0] + vload(x), clip));
            const vf z = vact(fa, vclip(acc[q][1] + vload(x + VW), clip));
            const vf hn = acc[q][2] + (a->b_hn ? vload(a->b_hn + u0) : vzero());
            const vf n = vact(ga, vclip(vload(x + 2 * VW) + rg * hn, clip));
            const vf hp = vload(a->h_prev + (r + q) * ld + u0);
            vstore(a->h_next + (r + q) * Hp + u0, (1.0f - z) * n + z * hp);
        }
    } else if (phase == 0) {
        gates_sum(R, 2, K, a->w_hh + jb * K * 2 * VW, a->h_prev + r * ld, ld, acc);
        for (int q = 0; q < R; ++q) {
            const float *x = a->x_ih[r + q] + jb * 3 * VW;
            const vf rg = vact(fa, vclip(acc[q][0] + vload(x), clip));
            const vf z = vact(fa, vclip(acc[q][1] + vload(x + VW), clip));
            const vf hp = vload(a->h_prev + (r + q) * ld + u0);
            vstore(a->z + (r + q) * Hp + u0, z);
            vstore(a->rh + (r + q) * Hp + u0, rg * hp);
        }
    } else {
        gates_sum(R, 1, K, a->w_hn + jb * K * VW, a->rh + r * Hp, Hp, acc);
        for (int q = 0; q < R; ++q) {
            const float *x = a->x_ih[r + q] + jb * 3 * VW;
            const vf n = vact(ga, vclip(acc[q][0] + vload(x + 2 * VW), clip));
            const vf z = vload(a->z + (r + q) * Hp + u0);
            const vf hp = vload(a->h_prev + (r + q) * ld + u0);
            vstore(a->h_next + (r + q) * Hp + u0, (1.0f - z) * n + z * hp);
        }
    }
}

void DRNN_KERNEL(drnn_gru_step)(const drnn_step_args *a, int phase,
                                int64_t r0, int64_t r1, int64_t jb0, int64_t jb1)
{
    for (int64_t jb = jb0; jb < jb1; ++jb) {
        int64_t r = r0;
        for (; r + RMAX <= r1; r += RMAX) gru_rows(a, phase, RMAX, r, jb);
        for (; r < r1; ++r) gru_rows(a, phase, 1, r, jb);
    }
}
