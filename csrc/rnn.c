/*
 * rnn.c -- one time step of the Elman RNN on packed weights:
 *
 *     h' = f(x + R h)        x = W_ih x_t + b_ih + b_hh, precomputed
 *
 * f is tanh or relu in PyTorch, any drnn activation for ONNX and Keras.
 */
#include "cell.h"

#define RMAX 8          /* 8 rows, one gate: 8 chains */
#define BLK1 8          /* one row: 8 blocks */

DRNN_INLINE void rnn_finish(const drnn_step_args *a, int phase, int64_t row, int64_t jb,
                            const vf *s)
{
    (void)phase;
    const vf x = vload(a->x_ih[row] + jb * VW);
    vstore(a->h_next + row * a->Hp + jb * VW, vact(&a->act[0], vclip(s[0] + x, a->desc->clip)));
}

void DRNN_KERNEL(drnn_rnn_step)(const drnn_step_args *a, int phase,
                                int64_t r0, int64_t r1, int64_t jb0, int64_t jb1)
{
    cell_sums(a, phase, 1, RMAX, BLK1, a->w_hh, a->h_prev, a->ld_h, a->K, r0, r1, jb0, jb1,
              rnn_finish);
}
