/*
 * rnn.c -- one time step of the Elman RNN on packed weights:
 *
 *     h' = f(x + R h)        x = W_ih x_t + b_ih + b_hh, precomputed
 *
 * f is tanh or relu in PyTorch, any drnn activation for ONNX and Keras.
 */
#include "simd.h"
#include "internal.h"

#define RMAX 8

DRNN_INLINE void rnn_rows(const drnn_step_args *a, const int R, int64_t r, int64_t jb)
{
    const int64_t K = a->K, ld = a->ld_h, u0 = jb * VW;
    const float *w = a->w_hh + jb * K * VW;
    const float *h = a->h_prev + r * ld;
    vf acc[RMAX], acc2[4];
    for (int q = 0; q < R; ++q) acc[q] = vzero();
    for (int j = 0; j < 4; ++j) acc2[j] = vzero();
    int64_t k = 0;
    if (R == 1) {
        /* One row: four interleaved sums hide the FMA latency. */
        for (; k + 4 <= K; k += 4)
            for (int j = 0; j < 4; ++j) acc2[j] += vset1(h[k + j]) * vload(w + (k + j) * VW);
        acc[0] = (acc2[0] + acc2[1]) + (acc2[2] + acc2[3]);
    }
    for (; k < K; ++k) {
        const vf wk = vload(w + k * VW);
        for (int q = 0; q < R; ++q) acc[q] += vset1(h[q * ld + k]) * wk;
    }
    for (int q = 0; q < R; ++q) {
        const vf x = vload(a->x_ih[r + q] + jb * VW);
        vstore(a->h_next + (r + q) * a->Hp + u0, vact(&a->act[0], vclip(acc[q] + x, a->desc->clip)));
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
