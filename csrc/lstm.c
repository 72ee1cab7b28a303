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
 * The gate math runs on a block's sums while they are still in registers.
 */
#include "cell.h"

#if DRNN_VW >= 16
#define RMAX 4          /* 4 rows x 4 gates = 16 chains */
#else
#define RMAX 2
#endif
#define BLK1 2          /* one row: 2 blocks x 4 gates = 8 chains */

/* std: sigmoid, tanh, tanh, no clip, peepholes or coupled gates (checked
 * by lstm_standard), with the activations known at compile time. */
DRNN_INLINE void lstm_finish_k(const drnn_step_args *a, int64_t row, int64_t jb, const vf *s,
                               const int std)
{
    const int F = std ? DRNN_ACT_SIGMOID : DRNN_ACT_ANY, T = std ? DRNN_ACT_TANH : DRNN_ACT_ANY;
    const int64_t Hp = a->Hp, u0 = jb * VW;
    const drnn_act *fa = &a->act[0], *ga = &a->act[1], *ha = &a->act[2];
    const float clip = a->desc->clip;
    const float *peep = std ? NULL : a->peep;
    const float *x = a->x_ih[row] + jb * 4 * VW;
    float *cp = a->c + row * Hp + u0;
    vf gi = s[0] + vload(x), gf = s[1] + vload(x + VW);
    vf gg = s[2] + vload(x + 2 * VW), go = s[3] + vload(x + 3 * VW);
    const vf c = vload(cp);
    if (peep) {
        gi += vload(peep + u0) * c;
        gf += vload(peep + Hp + u0) * c;
    }
    const vf i = vgate(F, fa, gi, clip);
    const vf f = !std && a->desc->input_forget ? 1.0f - i : vgate(F, fa, gf, clip);
    const vf cn = f * c + i * vgate(T, ga, gg, clip);
    vstore(cp, cn);
    if (peep) go += vload(peep + 2 * Hp + u0) * cn;
    const vf o = vgate(F, fa, go, clip);
    vstore(a->h_next + row * Hp + u0, o * vgate(T, ha, cn, 0.0f));
}

CELL_FINISH(lstm_finish_std, lstm_finish_k, 1)
CELL_FINISH(lstm_finish_any, lstm_finish_k, 0)

static int lstm_standard(const drnn_step_args *a)
{
    return a->act[0].kind == DRNN_ACT_SIGMOID && a->act[1].kind == DRNN_ACT_TANH &&
           a->act[2].kind == DRNN_ACT_TANH && !(a->desc->clip > 0.0f) && !a->peep &&
           !a->desc->input_forget;
}

void DRNN_KERNEL(drnn_lstm_step)(const drnn_step_args *a, int phase,
                                 int64_t r0, int64_t r1, int64_t jb0, int64_t jb1)
{
    if (lstm_standard(a))
        cell_sums(a, phase, 4, RMAX, BLK1, a->w_hh, a->h_prev, a->ld_h, a->K, r0, r1, jb0, jb1,
                  lstm_finish_std);
    else
        cell_sums(a, phase, 4, RMAX, BLK1, a->w_hh, a->h_prev, a->ld_h, a->K, r0, r1, jb0, jb1,
                  lstm_finish_any);
}
