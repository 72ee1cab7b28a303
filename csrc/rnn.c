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

DRNN_INLINE void rnn_finish(const drnn_step_args *a, int64_t row, int64_t jb, const vf *s,
                            const int kind)
{
    const vf x = vload(a->x_ih[row] + jb * VW);
    vstore(a->h_next + row * a->Hp + jb * VW, vgate(kind, &a->act[0], s[0] + x, a->desc->clip));
}

/* PyTorch's two nonlinearities without clip get their own compiled forms. */
#define RNN_FINISH_FORM(name, kind)                                                      \
    DRNN_INLINE void name(const drnn_step_args *a, int phase, int64_t row, int64_t jb, \
                          const vf *s)                                               \
    {                                                                                \
        (void)phase;                                                                 \
        rnn_finish(a, row, jb, s, kind);                                             \
    }
RNN_FINISH_FORM(rnn_finish_tanh, DRNN_ACT_TANH)
RNN_FINISH_FORM(rnn_finish_relu, DRNN_ACT_RELU)
RNN_FINISH_FORM(rnn_finish_any, DRNN_ACT_ANY)

void DRNN_KERNEL(drnn_rnn_step)(const drnn_step_args *a, int phase,
                                int64_t r0, int64_t r1, int64_t jb0, int64_t jb1)
{
    const int kind = a->desc->clip > 0.0f ? DRNN_ACT_ANY : a->act[0].kind;
    if (kind == DRNN_ACT_TANH)
        cell_sums(a, phase, 1, RMAX, BLK1, a->w_hh, a->h_prev, a->ld_h, a->K, r0, r1, jb0, jb1,
                  rnn_finish_tanh);
    else if (kind == DRNN_ACT_RELU)
        cell_sums(a, phase, 1, RMAX, BLK1, a->w_hh, a->h_prev, a->ld_h, a->K, r0, r1, jb0, jb1,
                  rnn_finish_relu);
    else
        cell_sums(a, phase, 1, RMAX, BLK1, a->w_hh, a->h_prev, a->ld_h, a->K, r0, r1, jb0, jb1,
                  rnn_finish_any);
}
