/*
 * sequence.c -- the whole-sequence driver shared by the RNN, LSTM and GRU.
 *
 * For each layer and direction:
 *   1. the input projection of every step at once, one GEMM with
 *      M = batch * steps:  x_ih (B, T, G*H) = x . W_ih^T + b_ih;
 *   2. a time loop over the rows still active at that step; the cell's step
 *      function runs the recurrent product and the gate math;
 *   3. each step's hidden state is written to the layer's output, steps past
 *      a sequence's end are zeroed, and the final states are scattered out.
 *
 * Variable lengths: the batch is ordered by length, longest first (stable,
 * so equal lengths keep their order), and the state rows live in that order
 * in the workspace.  The rows active at step s are then a prefix, so the
 * recurrent product is one GEMM over a contiguous block.  Sequence b at step
 * s reads time t = s (forward) or t = length_b - 1 - s (reverse), which is
 * PyTorch's packed-sequence semantics.
 *
 * Layers ping-pong between two (B, T, D*H_out) buffers; the last layer
 * writes the caller's output directly.  All scratch comes from the caller's
 * workspace, laid out by plan_workspace() for both the size query and the run.
 */
#include <string.h>
#include "act.h"
#include "internal.h"

#define ALIGN 64

typedef struct {
    size_t order, x_rows, seq[2], x_ih, gates, h, c, tmp, total;
} ws_plan;

/* Reserve n elements of size elem at the end of the plan; 0 on overflow. */
static int reserve(size_t *cursor, size_t *slot, size_t n, size_t elem)
{
    if (n != 0 && elem > (SIZE_MAX - ALIGN) / n)
        return 0;
    size_t bytes = (n * elem + ALIGN - 1) / ALIGN * ALIGN;
    if (*cursor > SIZE_MAX - bytes)
        return 0;
    *slot = *cursor;
    *cursor += bytes;
    return 1;
}

static int mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

static int check_desc(const drnn_rnn_desc *d)
{
    if (!d) return DRNN_ERR_ARGUMENT;
    if (d->cell < DRNN_CELL_RNN || d->cell > DRNN_CELL_GRU) return DRNN_ERR_ARGUMENT;
    if (d->input_size < 1 || d->hidden_size < 1 || d->num_layers < 1) return DRNN_ERR_ARGUMENT;
    if (d->num_directions != 1 && d->num_directions != 2) return DRNN_ERR_ARGUMENT;
    if (d->proj_size < 0 || (d->proj_size > 0 && d->cell != DRNN_CELL_LSTM)) return DRNN_ERR_ARGUMENT;
    if (d->clip < 0.0f || d->clip != d->clip) return DRNN_ERR_ARGUMENT;
    for (int dir = 0; dir < d->num_directions; ++dir)
        for (int a = 0; a < 3; ++a)
            if (!drnn_act_valid(&d->act[dir][a])) return DRNN_ERR_ARGUMENT;
    return DRNN_OK;
}

static int plan_workspace(const drnn_rnn_desc *d, int64_t batch, int64_t steps, ws_plan *p)
{
    int rc = check_desc(d);
    if (rc) return rc;
    if (batch < 0 || steps < 0) return DRNN_ERR_ARGUMENT;
    const size_t B = (size_t)batch, T = (size_t)steps;
    const size_t H = (size_t)d->hidden_size;
    const size_t Hout = d->proj_size > 0 ? (size_t)d->proj_size : H;
    const size_t G = (size_t)drnn_gate_count(d->cell);
    size_t bt, seq_elems, xih_elems, gate_elems;
    if (!mul_ok(B, T, &bt) || !mul_ok(bt, (size_t)d->num_directions * Hout, &seq_elems) ||
        !mul_ok(bt, G * H, &xih_elems) || !mul_ok(B, G * H, &gate_elems))
        return DRNN_ERR_OVERFLOW;
    size_t cur = 0;
    memset(p, 0, sizeof(*p));
    int nseq = d->num_layers > 2 ? 2 : d->num_layers - 1;
    int ok = reserve(&cur, &p->order, B, sizeof(int64_t)) &&
             reserve(&cur, &p->x_rows, B, sizeof(float *)) &&
             reserve(&cur, &p->x_ih, xih_elems, sizeof(float)) &&
             reserve(&cur, &p->gates, gate_elems, sizeof(float)) &&
             reserve(&cur, &p->h, B * Hout, sizeof(float)) &&
             reserve(&cur, &p->c, B * H, sizeof(float)) &&
             reserve(&cur, &p->tmp, B * H, sizeof(float));
    for (int i = 0; ok && i < nseq; ++i)
        ok = reserve(&cur, &p->seq[i], seq_elems, sizeof(float));
    if (!ok) return DRNN_ERR_OVERFLOW;
    p->total = cur + ALIGN;   /* slack to align an unaligned workspace */
    return DRNN_OK;
}

size_t drnn_rnn_workspace_size(const drnn_rnn_desc *desc, int64_t batch, int64_t steps, int *err)
{
    ws_plan p;
    int rc = plan_workspace(desc, batch, steps, &p);
    if (err) *err = rc;
    return rc ? 0 : p.total;
}

static int check_weights(const drnn_rnn_desc *d, const drnn_cell_weights *w)
{
    int n = d->num_layers * d->num_directions;
    for (int i = 0; i < n; ++i) {
        if (!w[i].w_ih || !w[i].w_hh) return DRNN_ERR_ARGUMENT;
        if (d->proj_size > 0 && !w[i].w_hr) return DRNN_ERR_ARGUMENT;
        if (w[i].peep && d->cell != DRNN_CELL_LSTM) return DRNN_ERR_ARGUMENT;
    }
    return DRNN_OK;
}

typedef void (*step_fn)(const drnn_step_args *);

/* Stable sort of row indices by length, longest first (insertion sort on
 * the already-sorted runs PyTorch users pass; B is small). */
static void order_by_length(int64_t B, const int32_t *len, int64_t *order)
{
    for (int64_t i = 0; i < B; ++i) {
        int64_t v = i, j = i;
        while (j > 0 && len[order[j - 1]] < len[v]) {
            order[j] = order[j - 1];
            --j;
        }
        order[j] = v;
    }
}

int drnn_rnn_forward(const drnn_rnn_desc *d, const drnn_cell_weights *weights,
                     int64_t B, int64_t T,
                     const float *x, int64_t x_stride_b, int64_t x_stride_t,
                     const int32_t *lengths,
                     const float *h0, const float *c0,
                     float *y, int64_t y_stride_b, int64_t y_stride_t,
                     float *hn, float *cn,
                     void *workspace, size_t workspace_bytes)
{
    ws_plan p;
    int rc = plan_workspace(d, B, T, &p);
    if (rc) return rc;
    if (!weights || (B > 0 && T > 0 && (!x || !y))) return DRNN_ERR_ARGUMENT;
    if ((rc = check_weights(d, weights))) return rc;
    if (!workspace || workspace_bytes < p.total) return DRNN_ERR_WORKSPACE;
    if (lengths)
        for (int64_t b = 0; b < B; ++b)
            if (lengths[b] < 0 || lengths[b] > T) return DRNN_ERR_LENGTH;

    const drnn_kernel_table *k = drnn_kernels();
    const int L = d->num_layers, D = d->num_directions, is_lstm = d->cell == DRNN_CELL_LSTM;
    const int64_t H = d->hidden_size;
    const int64_t Hout = d->proj_size > 0 ? d->proj_size : H;
    const int64_t G = drnn_gate_count(d->cell) * H;
    const step_fn step = d->cell == DRNN_CELL_LSTM ? drnn_lstm_step
                       : d->cell == DRNN_CELL_GRU  ? drnn_gru_step : drnn_rnn_step;

    char *ws = (char *)workspace;
    ws += (ALIGN - (uintptr_t)ws % ALIGN) % ALIGN;
    int64_t *order = (int64_t *)(ws + p.order);
    const float **x_rows = (const float **)(ws + p.x_rows);
    float *x_ih = (float *)(ws + p.x_ih);
    float *seq[2] = {(float *)(ws + p.seq[0]), (float *)(ws + p.seq[1])};

    int64_t max_len = T;
    if (lengths) {
        order_by_length(B, lengths, order);
        max_len = B > 0 ? lengths[order[0]] : 0;
    } else {
        for (int64_t b = 0; b < B; ++b) order[b] = b;
    }

    unsigned fpmode = drnn_fpmode_enter();

    /* Current layer input: starts as the caller's x. */
    const float *in = x;
    int64_t in_sb = x_stride_b, in_st = x_stride_t, in_size = d->input_size;

    for (int l = 0; l < L; ++l) {
        float *out;
        int64_t out_sb, out_st;
        if (l == L - 1) {
            out = y; out_sb = y_stride_b; out_st = y_stride_t;
        } else {
            out = seq[l % 2]; out_st = D * Hout; out_sb = T * out_st;
        }
        for (int dir = 0; dir < D; ++dir) {
            const int idx = l * D + dir;
            const drnn_cell_weights *w = &weights[idx];
            const int reverse = D == 2 ? dir == 1 : d->reverse;

            /* 1. input projection for all steps: x_ih (B*T, G) */
            if (in_sb == T * in_st) {
                k->gemm_nt(B * T, G, in_size, in, in_st, w->w_ih, in_size, x_ih, G, w->b_ih, 0);
            } else {
                for (int64_t b = 0; b < B; ++b)
                    k->gemm_nt(T, G, in_size, in + b * in_sb, in_st, w->w_ih, in_size,
                               x_ih + b * T * G, G, w->b_ih, 0);
            }

            /* initial states, gathered into length order */
            float *h = (float *)(ws + p.h), *c = (float *)(ws + p.c);
            for (int64_t i = 0; i < B; ++i) {
                const int64_t b = order[i];
                if (h0) memcpy(h + i * Hout, h0 + (idx * B + b) * Hout, Hout * sizeof(float));
                else memset(h + i * Hout, 0, Hout * sizeof(float));
                if (is_lstm) {
                    if (c0) memcpy(c + i * H, c0 + (idx * B + b) * H, H * sizeof(float));
                    else memset(c + i * H, 0, H * sizeof(float));
                }
            }

            /* 2. the time loop */
            drnn_step_args sa = {d, w, d->act[dir], k, B, x_rows, h, is_lstm ? c : NULL,
                                 (float *)(ws + p.gates), (float *)(ws + p.tmp)};
            int64_t active = B;
            for (int64_t s = 0; s < max_len; ++s) {
                if (lengths)
                    while (active > 0 && lengths[order[active - 1]] <= s) --active;
                if (active == 0) break;
                for (int64_t i = 0; i < active; ++i) {
                    const int64_t b = order[i];
                    const int64_t t = reverse ? (lengths ? lengths[b] : T) - 1 - s : s;
                    x_rows[i] = x_ih + (b * T + t) * G;
                }
                sa.rows = active;
                step(&sa);
                for (int64_t i = 0; i < active; ++i) {
                    const int64_t b = order[i];
                    const int64_t t = reverse ? (lengths ? lengths[b] : T) - 1 - s : s;
                    memcpy(out + b * out_sb + t * out_st + dir * Hout, h + i * Hout,
                           Hout * sizeof(float));
                }
            }

            /* 3. zero the steps past each sequence's end; final states */
            for (int64_t b = 0; b < B; ++b) {
                const int64_t len = lengths ? lengths[b] : T;
                for (int64_t t = len; t < T; ++t)
                    memset(out + b * out_sb + t * out_st + dir * Hout, 0, Hout * sizeof(float));
            }
            for (int64_t i = 0; i < B; ++i) {
                const int64_t b = order[i];
                if (hn) memcpy(hn + (idx * B + b) * Hout, h + i * Hout, Hout * sizeof(float));
                if (is_lstm && cn) memcpy(cn + (idx * B + b) * H, c + i * H, H * sizeof(float));
            }
        }
        in = out; in_sb = out_sb; in_st = out_st; in_size = D * Hout;
    }

    drnn_fpmode_leave(fpmode);
    return DRNN_OK;
}
