/*
 * rnn.c -- one time step of the Elman RNN on packed weights:
 *
 *     h' = f(x + R h)        x = W_ih x_t + b_ih + b_hh, precomputed
 *
 * f is tanh or relu in PyTorch, any drnn activation for ONNX and Keras.
 */
#include "simd.h"
#include "internal.h"

#define RMAX 4

DRNN_INLINE void rnn_rows(const drnn_step_args *a, const int R, int64_t r, int64_t jb)
{
    const int64_t K = a->K, ld = a->ld_h, u0 = jb * VW;
    const float *w = a->w_hh + jb * K * VW;
    const float *h = a->h_prev + r * ld;
    /* Four interleaved sums per row (k mod 4) hide the FMA latency; the same
     * order whatever R is, so rows never depend on their pass-mates. */
    vf acc[RMAX][4];
    for (int q = 0; q < R; ++q)
        for (int j = 0; j < 4; ++j) acc[q][j] = vzero();
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
        const vf w0 = vload(w + k * VW), w1 = vload(w + (k + 1) * VW);
        const vf w2 = vload(w + (k + 2) * VW), w3 = vload(w + (k + 3) * VW);
        for (int q = 0; q < R; ++q) {
            const float *hq = h + q * ld + k;
            acc[q][0] += vset1(hq[0]) * w0; acc[q][1] += vset1(hq[1]) * w1;
            acc[q][2] += vset1(hq[2]) * w2; acc[q][3] += vset1(hq[3]) * w3;
        }
    }
    for (; k < K; ++k) {
        const vf wk = vload(w + k * VW);
        for (int q = 0; q < R; ++q) acc[q][0] += vset1(h[q * ld + k]) * wk;
    }
    for (int q = 0; q < R; ++q) acc[q][0] = (acc[q][0] + acc[q][1]) + (acc[q][2] + acc[q][3]);
    for (int q = 0; q < R; ++q) {
        const vf x = vload(a->x_ih[r + q] + jb * VW);
        vstore(a->h_next + (r + q) * a->Hp + u0, vact(&a->act[0], vclip(acc[q][0] + x, a->desc->clip)));
    }
}

void DRNN_KERNEL(drnn_rnn_step)(const drnn_step_args *a, int phase,
                                int64_t r0, int64_t r1, int64_t jb0, int64_t jb1)
{
    (void)phase;
    for (int64_t jb = jb0; jb < jb1; ++jb) {
        int64_t r = r0;
        for (; r + RMAX <= r1; r += RMAX) rnn_rows(a, RMAX, r, jb);
        for (; r < r1; ++r) rnn_rows(a, 1, r, jb);
    }
}
