/*
 * gemm.c -- the packed-weight GEMM every projection runs on.
 *
 *     C (M, N) = [C +] A (M, K) . Bp + bias
 *
 * Bp holds the weights in panels of NB = VW columns (pack.c): G panels
 * (a block's gates) interleaved per row, so panel p's row k is NB floats at
 * (p / G) * K*G*NB + k*G*NB + (p % G)*NB.  The micro-kernel keeps an MR x
 * 2-panel tile of C in registers, broadcasting one A element per row per k
 * and streaming two panel rows; K is cut into KC-deep slices, and an MC-row
 * block of A, packed, stays in L1 while every panel pair streams past it.
 *
 * Written once against the vector type of simd.h and compiled per ISA.
 */
#include "simd.h"
#include "internal.h"

#if DRNN_VW >= 16
#define MR 12
#else
#define MR 6
#endif
/* Deep K slices over one or two row tiles: the A tile (12 x KC, 48 KiB)
 * stays in L1 while the panels stream from L2, whose bandwidth the 12x2
 * tile needs little of (128 bytes per 24 FMAs).  Measured on Zen 4 for an
 * LSTM 512 projection (M 6400, K 1024, N 2048, one thread): KC 128 / MC 96
 * ran at 74% of the core's peak, KC 1024 / MC 12 at 96%. */
#define KC 1024
#define MC 12

/* Load / store the first n (<= VW) lanes. */
DRNN_INLINE vf load_cols(const float *p, int64_t n)
{
    if (n >= VW) return vload(p);
    float t[VW] = {0};
    memcpy(t, p, (size_t)n * sizeof(float));
    return vload(t);
}

DRNN_INLINE void store_cols(float *p, vf v, int64_t n)
{
    if (n >= VW) { vstore(p, v); return; }
    float t[VW];
    vstore(t, v);
    memcpy(p, t, (size_t)n * sizeof(float));
}

/* rows x (np panels) tile over one K slice.  init: 0 = load C, 1 = start
 * from bias (or zero), 2 = start from C + bias. */
/* A element (r, k) at A[r * ars + k * aks]: packed tiles (ars 1, aks MR)
 * or plain rows (ars lda, aks 1). */
DRNN_INLINE void micro(const int rows, const int np, int64_t kc,
                       const float *A, int64_t ars, int64_t aks, const float *B0,
                       const float *B1, int64_t ldb, float *C, int64_t ldc, int init,
                       const float *bias, int64_t ncols)
{
    vf acc[MR][2];
    const int64_t n0 = ncols, n1 = ncols - VW;
#pragma GCC unroll 12
    for (int r = 0; r < rows; ++r) {
        if (init == 1) {
            acc[r][0] = bias ? vload(bias) : vzero();
            if (np > 1) acc[r][1] = bias ? vload(bias + VW) : vzero();
        } else {
            acc[r][0] = load_cols(C + r * ldc, n0);
            if (np > 1) acc[r][1] = load_cols(C + r * ldc + VW, n1);
            if (init == 2 && bias) {
                acc[r][0] += vload(bias);
                if (np > 1) acc[r][1] += vload(bias + VW);
            }
        }
    }
    for (int64_t k = 0; k < kc; ++k) {
        const vf b0 = vload(B0 + k * ldb);
        const vf b1 = np > 1 ? vload(B1 + k * ldb) : vzero();
#pragma GCC unroll 12
        for (int r = 0; r < rows; ++r) {
            const vf a = vset1(A[r * ars + k * aks]);
            acc[r][0] += a * b0;
            if (np > 1) acc[r][1] += a * b1;
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < rows; ++r) {
        store_cols(C + r * ldc, acc[r][0], n0);
        if (np > 1) store_cols(C + r * ldc + VW, acc[r][1], n1);
    }
}

/* One row (a GEMV) against NPR panels at once: NPR independent chains keep
 * the FMA pipes busy where a 1 x 2 tile would wait on latency.  Same
 * summation order as micro(). */
#define NPR 8
DRNN_INLINE void micro_row(const int np, int64_t kc, const float *A, const float *const *B,
                           int64_t ldb, float *C, int init, const float *bias, int64_t ncols)
{
    vf acc[NPR];
    for (int j = 0; j < np; ++j) {
        if (init == 1) acc[j] = bias ? vload(bias + j * VW) : vzero();
        else {
            acc[j] = load_cols(C + j * VW, ncols - j * VW);
            if (init == 2 && bias) acc[j] += vload(bias + j * VW);
        }
    }
    for (int64_t k = 0; k < kc; ++k) {
        const vf a = vset1(A[k]);
        for (int j = 0; j < np; ++j) acc[j] += a * vload(B[j] + k * ldb);
    }
    for (int j = 0; j < np; ++j) store_cols(C + j * VW, acc[j], ncols - j * VW);
}

/* Row k0 of panel p. */
DRNN_INLINE const float *panel_at(const float *Bp, int G, int64_t K, int64_t p, int64_t k0)
{
    return Bp + (p / G) * K * G * VW + k0 * G * VW + (p % G) * VW;
}

void DRNN_KERNEL(drnn_gemm)(int64_t M, int64_t N, int64_t K,
                            const float *A, int64_t lda, const float *Bp, int G,
                            const float *bias, float *C, int64_t ldc, int accumulate)
{
    const int64_t ldb = (int64_t)G * VW;
    float apack[MC * KC];   /* on the stack: 48 KiB */
    const int64_t panels = (N + VW - 1) / VW;
    if (K == 0) {
        /* No inputs: the product is empty, C = [C +] bias. */
        for (int64_t i = 0; i < M; ++i)
            for (int64_t p = 0; p < panels; ++p) {
                const int64_t nc = N - p * VW;
                vf v = bias ? vload(bias + p * VW) : vzero();
                if (accumulate) v += load_cols(C + i * ldc + p * VW, nc);
                store_cols(C + i * ldc + p * VW, v, nc);
            }
        return;
    }
    if (M < MR) {
        /* Too few rows for a tile: rows one at a time, NPR panels a pass. */
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            const int64_t kc = K - k0 < KC ? K - k0 : KC;
            const int init = k0 > 0 ? 0 : (accumulate ? 2 : 1);
            for (int64_t i = 0; i < M; ++i)
                for (int64_t p = 0; p < panels;) {
                    /* Whole blocks of G panels (8 for G 4 or 1, 6 for G 3:
                     * each pass reads whole rows of its blocks), then 4, 2
                     * or 1: constants, so the sums stay in registers. */
                    const int64_t left = panels - p;
                    const int wide = G == 3 ? 6 : 8;
                    const int np = left >= wide ? wide : left >= 4 ? 4 : left >= 2 ? 2 : 1;
                    const float *B[NPR];
                    for (int j = 0; j < np; ++j) B[j] = panel_at(Bp, G, K, p + j, k0);
                    const float *bp = bias ? bias + p * VW : NULL;
                    const float *Ai = A + i * lda + k0;
                    float *Ci = C + i * ldc + p * VW;
                    const int64_t nc = N - p * VW;
                    switch (np) {
                    case 8: micro_row(8, kc, Ai, B, ldb, Ci, init, bp, nc); break;
                    case 6: micro_row(6, kc, Ai, B, ldb, Ci, init, bp, nc); break;
                    case 4: micro_row(4, kc, Ai, B, ldb, Ci, init, bp, nc); break;
                    case 2: micro_row(2, kc, Ai, B, ldb, Ci, init, bp, nc); break;
                    default: micro_row(1, kc, Ai, B, ldb, Ci, init, bp, nc); break;
                    }
                    p += np;
                }
        }
        return;
    }
    /* Row blocks outermost: an MC-row block of C stays in L2 while the K
     * slices accumulate into it (K slices outermost swept all of C from
     * memory once per slice: a 52 MB projection read and written 8 times). */
    for (int64_t i0 = 0; i0 < M; i0 += MC) {
        const int64_t mc = M - i0 < MC ? M - i0 : MC;
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            const int64_t kc = K - k0 < KC ? K - k0 : KC;
            const int init = k0 > 0 ? 0 : (accumulate ? 2 : 1);
            /* Whole MR-row tiles of this A block, k-major: the broadcasts of
             * one k are then adjacent floats. */
            for (int64_t t = 0; t + MR <= mc; t += MR)
                for (int64_t k = 0; k < kc; ++k)
                    for (int r = 0; r < MR; ++r)
                        apack[t * kc + k * MR + r] = A[(i0 + t + r) * lda + k0 + k];
            for (int64_t p = 0; p < panels; p += 2) {
                const int np = panels - p >= 2 ? 2 : 1;
                const float *B0 = panel_at(Bp, G, K, p, k0);
                const float *B1 = np > 1 ? panel_at(Bp, G, K, p + 1, k0) : B0;
                const float *bp = bias ? bias + p * VW : NULL;
                const int64_t ncols = N - p * VW;
                int64_t i = i0;
                for (; i + MR <= i0 + mc; i += MR) {
                    const float *Ap = apack + (i - i0) * kc;
                    float *Ci = C + i * ldc + p * VW;
                    if (np == 2)
                        micro(MR, 2, kc, Ap, 1, MR, B0, B1, ldb, Ci, ldc, init, bp, ncols);
                    else
                        micro(MR, 1, kc, Ap, 1, MR, B0, B1, ldb, Ci, ldc, init, bp, ncols);
                }
                for (; i < i0 + mc; ++i) {
                    const float *Ai = A + i * lda + k0;
                    float *Ci = C + i * ldc + p * VW;
                    if (np == 2)
                        micro(1, 2, kc, Ai, lda, 1, B0, B1, ldb, Ci, ldc, init, bp, ncols);
                    else
                        micro(1, 1, kc, Ai, lda, 1, B0, B1, ldb, Ci, ldc, init, bp, ncols);
                }
            }
        }
    }
}
