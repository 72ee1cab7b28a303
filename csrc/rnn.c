/*
 * rnn.c -- one time step of the vanilla (Elman) RNN:
 *
 *     h' = f(x_ih + W_hh h + b_hh)        x_ih = W_ih x + b_ih, precomputed
 *
 * f is tanh or relu in PyTorch, any drnn activation for ONNX and Keras.
 */
#include "act.h"
#include "internal.h"

void drnn_rnn_step(const drnn_step_args *s)
{
    const int64_t H = s->desc->hidden_size;
    /* gates (rows, H) = h . W_hh^T + b_hh */
    s->k->gemm_nt(s->rows, H, H, s->h, H, s->w->w_hh, H, s->gates, H, s->w->b_hh, 0);
    for (int64_t r = 0; r < s->rows; ++r) {
        float *g = s->gates + r * H;
        const float *xi = s->x_ih[r];
        for (int64_t j = 0; j < H; ++j) g[j] += xi[j];
        drnn_clip_segment(g, H, s->desc->clip);
        drnn_act_segment(&s->act[0], g, s->h + r * H, H);
    }
}
