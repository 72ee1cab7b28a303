/*
 * act.c -- activations over whole arrays (dense heads, drnn._core.activation).
 * Vector body, scalar tail through the same vector code on a padded copy.
 */
#include "simd.h"
#include "internal.h"

void DRNN_KERNEL(drnn_act)(const drnn_act *a, float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + VW <= n; i += VW) vstore(x + i, vact(a, vload(x + i)));
    if (i < n) {
        float t[VW] = {0};
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        vstore(t, vact(a, vload(t)));
        memcpy(x + i, t, (size_t)(n - i) * sizeof(float));
    }
}
