/*
 * gru.c -- one time step of the GRU, PyTorch gate order r z n:
 *
 *     r = f(x_r + R_r h + b_hr)       z = f(x_z + R_z h + b_hz)
 *     linear_before_reset = 1 (PyTorch, Keras reset_after=True):
 *         n = g(x_n + r * (R_n h + b_hn))
 *     linear_before_reset = 0 (Keras reset_after=False, ONNX default):
 *         n = g(x_n + R_n (r * h) + b_hn)
 *     h' = (1 - z) * n + z * h
 *
 * The second form needs r before the last product, so it runs two products:
 * the r and z rows of R first, then R_n on r * h.
 */
#include "act.h"
#include "internal.h"

void drnn_gru_step(const drnn_step_args *s)
{
    const drnn_rnn_desc *d = s->desc;
    const int64_t H = d->hidden_size;
    const int64_t G = 3 * H;
    const float *R = s->w->w_hh, *b_hh = s->w->b_hh;
    const drnn_act *f = &s->act[0], *g = &s->act[1];
    const int lbr = d->linear_before_reset;

    /* r and z rows (and n rows when linear before reset) of h . R^T + b_hh */
    s->k->gemm_nt(s->rows, lbr ? G : 2 * H, H, s->h, H, R, H, s->gates, G, b_hh, 0);

    for (int64_t r = 0; r < s->rows; ++r) {
        float *gr = s->gates + r * G;
        const float *xi = s->x_ih[r];
        for (int64_t j = 0; j < 2 * H; ++j) gr[j] += xi[j];
        drnn_clip_segment(gr, 2 * H, d->clip);
        drnn_act_segment(f, gr, gr, 2 * H);
        if (!lbr) {
            const float *h = s->h + r * H;
            float *rh = s->tmp + r * H;
            for (int64_t j = 0; j < H; ++j) rh[j] = gr[j] * h[j];
        }
    }
    if (!lbr) {
        /* n rows: (r * h) . R_n^T + b_hn */
        s->k->gemm_nt(s->rows, H, H, s->tmp, H, R + 2 * H * H, H, s->gates + 2 * H, G,
                      b_hh ? b_hh + 2 * H : NULL, 0);
    }
    for (int64_t r = 0; r < s->rows; ++r) {
        float *gr = s->gates + r * G, *gz = gr + H, *gn = gr + 2 * H;
        float *h = s->h + r * H;
        const float *xn = s->x_ih[r] + 2 * H;
        if (lbr) {
            for (int64_t j = 0; j < H; ++j) gn[j] = xn[j] + gr[j] * gn[j];
        } else {
            for (int64_t j = 0; j < H; ++j) gn[j] += xn[j];
        }
        drnn_clip_segment(gn, H, d->clip);
        drnn_act_segment(g, gn, gn, H);
        for (int64_t j = 0; j < H; ++j) h[j] = (1.0f - gz[j]) * gn[j] + gz[j] * h[j];
    }
}
