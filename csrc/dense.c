/*
 * dense.c -- fully connected layers and standalone activations.
 *
 *     y (rows, out) = act(x (rows, in) . W^T + b), optionally softmax per row
 *
 * W is (out, in) as torch.nn.Linear stores it.  The softmax subtracts the
 * row maximum first, so large logits neither overflow nor lose precision.
 */
#include <math.h>
#include "act.h"
#include "internal.h"

int drnn_activation(drnn_act act, float *x, int64_t n)
{
    if (!drnn_act_valid(&act) || n < 0 || (n > 0 && !x))
        return DRNN_ERR_ARGUMENT;
    drnn_act_segment(&act, x, x, n);
    return DRNN_OK;
}

static void softmax_row(float *y, int64_t n)
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
    for (int64_t j = 0; j < n; ++j) {
        y[j] = expf(y[j] - m);
        sum += y[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; ++j) y[j] *= inv;
}

int drnn_dense_forward(int64_t rows, int64_t in_features, int64_t out_features,
                       const float *x, int64_t x_stride,
                       const float *w, const float *b,
                       drnn_act act, int softmax,
                       float *y, int64_t y_stride)
{
    if (rows < 0 || in_features < 0 || out_features < 1 || !drnn_act_valid(&act))
        return DRNN_ERR_ARGUMENT;
    if (rows == 0)
        return DRNN_OK;
    if (!x || !w || !y || x_stride < in_features || y_stride < out_features)
        return DRNN_ERR_ARGUMENT;
    unsigned fpmode = drnn_fpmode_enter();
    drnn_kernels()->gemm_nt(rows, out_features, in_features, x, x_stride, w, in_features,
                            y, y_stride, b, 0);
    for (int64_t r = 0; r < rows; ++r) {
        float *yr = y + r * y_stride;
        drnn_act_segment(&act, yr, yr, out_features);
        if (softmax) softmax_row(yr, out_features);
    }
    drnn_fpmode_leave(fpmode);
    return DRNN_OK;
}
