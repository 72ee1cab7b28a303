/*
 * lstm.c -- one time step of the LSTM, PyTorch gate order i f g o:
 *
 *     i = f(x_i + R_i h + b_i [+ p_i * c])    g = g(x_g + R_g h + b_g)
 *     f = f(x_f + R_f h + b_f [+ p_f * c])    (f = 1 - i with input_forget)
 *     c' = f * c + i * g
 *     o = f(x_o + R_o h + b_o [+ p_o * c'])
 *     h' = o * h(c')                [h' = W_hr (o * h(c')) with proj_size]
 *
 * f, g, h are the three activations (sigmoid, tanh, tanh by default); p are
 * ONNX peepholes; clip bounds every gate pre-activation (the inputs of f and
 * g), as ONNX Runtime does.
 */
#include "act.h"
#include "internal.h"

void drnn_lstm_step(const drnn_step_args *s)
{
    const drnn_rnn_desc *d = s->desc;
    const int64_t H = d->hidden_size;
    const int64_t P = d->proj_size > 0 ? d->proj_size : H;   /* H_out */
    const int64_t G = 4 * H;
    const float *peep = s->w->peep;
    const drnn_act *f = &s->act[0], *g = &s->act[1], *hact = &s->act[2];

    s->k->gemm_nt(s->rows, G, P, s->h, P, s->w->w_hh, P, s->gates, G, s->w->b_hh, 0);

    for (int64_t r = 0; r < s->rows; ++r) {
        float *gi = s->gates + r * G, *gf = gi + H, *gg = gi + 2 * H, *go = gi + 3 * H;
        float *c = s->c + r * H;
        float *out = s->tmp + r * H;   /* o * h(c') before any projection */
        const float *xi = s->x_ih[r];
        for (int64_t j = 0; j < G; ++j) gi[j] += xi[j];
        if (peep) {
            for (int64_t j = 0; j < H; ++j) {
                gi[j] += peep[j] * c[j];
                gf[j] += peep[H + j] * c[j];
            }
        }
        drnn_clip_segment(gi, 3 * H, d->clip);        /* i f g; o after c' */
        drnn_act_segment(f, gi, gi, H);
        if (d->input_forget) {
            for (int64_t j = 0; j < H; ++j) gf[j] = 1.0f - gi[j];
        } else {
            drnn_act_segment(f, gf, gf, H);
        }
        drnn_act_segment(g, gg, gg, H);
        for (int64_t j = 0; j < H; ++j) c[j] = gf[j] * c[j] + gi[j] * gg[j];
        if (peep) {
            for (int64_t j = 0; j < H; ++j) go[j] += peep[2 * H + j] * c[j];
        }
        drnn_clip_segment(go, H, d->clip);
        drnn_act_segment(f, go, go, H);
        drnn_act_segment(hact, c, out, H);
        for (int64_t j = 0; j < H; ++j) out[j] *= go[j];
    }
    if (d->proj_size > 0) {
        /* h (rows, P) = out (rows, H) . W_hr^T */
        s->k->gemm_nt(s->rows, P, H, s->tmp, H, s->w->w_hr, H, s->h, P, NULL, 0);
    } else {
        for (int64_t i = 0; i < s->rows * H; ++i) s->h[i] = s->tmp[i];
    }
}
