/*
 * dense.c -- fully connected layers and standalone activations.
 *
 *     y (rows, out) = act(x (rows, in) . W^T + b), optionally [log-]softmax per row
 *
 * W arrives as (out, in) like torch.nn.Linear and is packed once
 * (drnn_dense_pack) into the GEMM's panels.  Rows are split across threads
 * for large inputs.  The softmax subtracts the row maximum first, so large
 * logits neither overflow nor lose precision.
 */
#include <math.h>
#include "act.h"
#include "internal.h"

int drnn_activation(drnn_act act, float *x, int64_t n)
{
    if (!drnn_act_valid(&act) || n < 0 || (n > 0 && !x))
        return DRNN_ERR_ARGUMENT;
    unsigned fpmode = drnn_fpmode_enter();
    drnn_kernels()->act(&act, x, n);
    drnn_fpmode_leave(fpmode);
    return DRNN_OK;
}

/* Softmax, or with log_out its logarithm: y - max - log(sum exp(y - max)). */
static void softmax_row(float *y, int64_t n, int log_out)
{
    float m = -INFINITY;
    int has_nan = 0;
    for (int64_t j = 0; j < n; ++j) {
        if (y[j] != y[j]) has_nan = 1;
        else if (y[j] > m) m = y[j];
    }
    if (has_nan) {               /* NaN in, NaN out: no silent repair */
        for (int64_t j = 0; j < n; ++j) y[j] = NAN;
        return;
    }
    float sum = 0.0f;
    if (log_out) {
        for (int64_t j = 0; j < n; ++j) sum += expf(y[j] - m);
        const float shift = m + logf(sum);
        for (int64_t j = 0; j < n; ++j) y[j] -= shift;
        return;
    }
    for (int64_t j = 0; j < n; ++j) {
        y[j] = expf(y[j] - m);
        sum += y[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; ++j) y[j] *= inv;
}

typedef struct {
    int64_t rows, in, out, x_stride, y_stride;
    const float *x, *w, *b;
    drnn_act act;
    int softmax;
    float *y;
} dense_ctx;

static void dense_task(void *arg, int tid, int n)
{
    const dense_ctx *c = (const dense_ctx *)arg;
    const drnn_kernel_table *k = drnn_kernels();
    int64_t r0, r1;
    drnn_split(c->rows, n, tid, &r0, &r1);
    if (r1 <= r0) return;
    unsigned fpmode = drnn_fpmode_enter();
    k->gemm(r1 - r0, c->out, c->in, c->x + r0 * c->x_stride, c->x_stride, c->w, 1, c->b,
            c->y + r0 * c->y_stride, c->y_stride, 0);
    for (int64_t r = r0; r < r1; ++r) {
        float *yr = c->y + r * c->y_stride;
        if (c->act.kind != DRNN_ACT_LINEAR) k->act(&c->act, yr, c->out);
        if (c->softmax) softmax_row(yr, c->out, c->softmax == DRNN_LOG_SOFTMAX);
    }
    drnn_fpmode_leave(fpmode);
}

int drnn_dense_forward(int64_t rows, int64_t in_features, int64_t out_features,
                       const float *x, int64_t x_stride, const void *packed,
                       drnn_act act, int softmax, float *y, int64_t y_stride, int num_threads)
{
    if (rows < 0 || in_features < 0 || out_features < 1 || !drnn_act_valid(&act) ||
        softmax < 0 || softmax > DRNN_LOG_SOFTMAX)
        return DRNN_ERR_ARGUMENT;
    if (rows == 0)
        return DRNN_OK;
    if (!x || !packed || !y || x_stride < in_features || y_stride < out_features)
        return DRNN_ERR_ARGUMENT;
    const float *base = drnn_align_floats_const(packed);
    const int32_t *meta = (const int32_t *)base;
    if (meta[0] != drnn_kernels()->vw) return DRNN_ERR_ARGUMENT;
    const int64_t np = drnn_round_up(out_features, meta[0]);
    dense_ctx c = {rows, in_features, out_features, x_stride, y_stride, x, base + 16,
                   meta[1] ? base + 16 + np * in_features : NULL, act, softmax, y};
    const double flops = 2.0 * (double)rows * (double)in_features * (double)out_features;
    drnn_parallel(flops >= 4.0e6 ? num_threads : 1, dense_task, NULL, &c);
    return DRNN_OK;
}
