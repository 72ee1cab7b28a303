/*
 * lstm.c -- one time step of the LSTM on packed weights, gate order i f g o:
 *
 *     i = f(x_i + R_i h [+ p_i * c])      g = g(x_g + R_g h)
 *     f = f(x_f + R_f h [+ p_f * c])      (f = 1 - i with input_forget)
 *     c' = f * c + i * g
 *     o = f(x_o + R_o h [+ p_o * c'])     out = o * h(c')
 *
 * x_* are the precomputed input projections with both biases folded in; f,
 * g, h the activations (sigmoid, tanh, tanh by default); p the ONNX
 * peepholes; clip bounds every gate pre-activation.  With proj_size the
 * driver projects `out` afterwards (h' = W_hr out); without, out is h'.
 *
 * For a block of NB hidden units and R batch rows the four gate sums live in
 * registers through the whole recurrent product, and the gate math runs on
 * them before anything is stored: one pass over the block's weights.
 */
#include "simd.h"
#include "internal.h"

/* Rows per pass: the gate sums of RMAX rows (two sets each) stay in registers. */
#if DRNN_VW >= 16
#define RMAX 2
#else
#define RMAX 1
#endif

DRNN_INLINE void lstm_rows(const drnn_step_args *a, const int R, int64_t r, int64_t jb)
{
    const int64_t K = a->K, Hp = a->Hp, ld = a->ld_h;
    const float *w = a->w_hh + jb * K * 4 * VW;
    const float *h = a->h_prev + r * ld;
    /* Even k into acc, odd k into acc2: twice the FMA chains in flight, and
     * the same order of additions whatever R is, so a row's result never
     * depends on which rows share its pass (batch size, thread count). */
    vf acc[RMAX][4], acc2[RMAX][4];
    for (int q = 0; q < R; ++q)
        for (int g = 0; g < 4; ++g) acc[q][g] = acc2[q][g] = vzero();
    int64_t k = 0;
    for (; k + 2 <= K; k += 2) {
        const float *wk = w + k * 4 * VW;
        const vf w0 = vload(wk), w1 = vload(wk + VW), w2 = vload(wk + 2 * VW), w3 = vload(wk + 3 * VW);
        const vf v0 = vload(wk + 4 * VW), v1 = vload(wk + 5 * VW), v2 = vload(wk + 6 * VW), v3 = vload(wk + 7 * VW);
        for (int q = 0; q < R; ++q) {
            const vf h0 = vset1(h[q * ld + k]), h1 = vset1(h[q * ld + k + 1]);
            acc[q][0] += h0 * w0; acc[q][1] += h0 * w1; acc[q][2] += h0 * w2; acc[q][3] += h0 * w3;
            acc2[q][0] += h1 * v0; acc2[q][1] += h1 * v1; acc2[q][2] += h1 * v2; acc2[q][3] += h1 * v3;
        }
    }
    if (k < K) {
        const float *wk = w + k * 4 * VW;
        for (int q = 0; q < R; ++q) {
            const vf h0 = vset1(h[q * ld + k]);
            for (int g = 0; g < 4; ++g) acc[q][g] += h0 * vload(wk + g * VW);
        }
    }
    const drnn_act *fa = &a->act[0], *ga = &a->act[1], *ha = &a->act[2];
    const float clip = a->desc->clip;
    const int64_t u0 = jb * VW;
    for (int q = 0; q < R; ++q) {
        const float *x = a->x_ih[r + q] + jb * 4 * VW;
        float *cp = a->c + (r + q) * Hp + u0;
        vf gi = (acc[q][0] + acc2[q][0]) + vload(x), gf = (acc[q][1] + acc2[q][1]) + vload(x + VW);
        vf gg = (acc[q][2] + acc2[q][2]) + vload(x + 2 * VW), go = (acc[q][3] + acc2[q][3]) + vload(x + 3 * VW);
        const vf c = vload(cp);
        if (a->peep) {
            gi += vload(a->peep + u0) * c;
            gf += vload(a->peep + Hp + u0) * c;
        }
        const vf i = vact(fa, vclip(gi, clip));
        const vf f = a->desc->input_forget ? 1.0f - i : vact(fa, vclip(gf, clip));
        const vf cn = f * c + i * vact(ga, vclip(gg, clip));
        vstore(cp, cn);
        if (a->peep) go += vload(a->peep + 2 * Hp + u0) * cn;
        const vf o = vact(fa, vclip(go, clip));
        vstore(a->h_next + (r + q) * Hp + u0, o * vact(ha, cn));
    }
}

void DRNN_KERNEL(drnn_lstm_step)(const drnn_step_args *a, int phase,
                                 int64_t r0, int64_t r1, int64_t jb0, int64_t jb1)
{
    (void)phase;
    for (int64_t jb = jb0; jb < jb1; ++jb) {
        int64_t r = r0;
        for (; r + RMAX <= r1; r += RMAX) lstm_rows(a, RMAX, r, jb);
        for (; r < r1; ++r) lstm_rows(a, 1, r, jb);
    }
}
