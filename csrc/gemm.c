/*
 * gemm.c -- the products every cell and dense layer is built on.
 *
 *     C (M, N) = [C +] A (M, K) . B (N, K)^T + bias
 *
 * B is a weight matrix in the framework's own row-major (out, in) layout, so
 * each output element is a dot product of two contiguous rows.  The loop
 * computes a 2 x 4 tile of outputs at a time with DRNN_LANES independent
 * partial sums per output, a shape the compiler vectorises for whatever
 * instruction set this file is compiled for: later ISA variants compile this
 * same source with other flags and another DRNN_KERNEL_SUFFIX.
 */
#include "internal.h"

#ifndef DRNN_LANES
#define DRNN_LANES 8
#endif
#ifndef DRNN_KERNEL_SUFFIX
#define DRNN_KERNEL_SUFFIX portable
#endif
#define DRNN_CAT_(a, b) a##_##b
#define DRNN_CAT(a, b) DRNN_CAT_(a, b)
#define DRNN_KERNEL(name) DRNN_CAT(name, DRNN_KERNEL_SUFFIX)

/* Sum of the lanes, pairwise so the order does not depend on K. */
static inline float lanes_sum(const float *v)
{
    float t[DRNN_LANES];
    for (int l = 0; l < DRNN_LANES; ++l) t[l] = v[l];
    for (int w = DRNN_LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; ++l) t[l] += t[l + w];
    return t[0];
}

/* Dot products of MR rows of A with NR rows of B, MR <= 2, NR <= 4. */
static inline void tile_dot(int MR, int NR, int64_t K,
                            const float *A, int64_t lda,
                            const float *B, int64_t ldb,
                            float out[2][4])
{
    float acc[2][4][DRNN_LANES];
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < DRNN_LANES; ++l) acc[r][c][l] = 0.0f;

    const float *a0 = A, *a1 = A + (MR > 1 ? lda : 0);
    const float *b0 = B, *b1 = B + (NR > 1 ? ldb : 0);
    const float *b2 = B + (NR > 2 ? 2 * ldb : 0), *b3 = B + (NR > 3 ? 3 * ldb : 0);
    int64_t k = 0;
    for (; k + DRNN_LANES <= K; k += DRNN_LANES) {
        for (int l = 0; l < DRNN_LANES; ++l) {
            float x0 = a0[k + l], x1 = a1[k + l];
            float w0 = b0[k + l], w1 = b1[k + l], w2 = b2[k + l], w3 = b3[k + l];
            acc[0][0][l] += x0 * w0; acc[0][1][l] += x0 * w1;
            acc[0][2][l] += x0 * w2; acc[0][3][l] += x0 * w3;
            acc[1][0][l] += x1 * w0; acc[1][1][l] += x1 * w1;
            acc[1][2][l] += x1 * w2; acc[1][3][l] += x1 * w3;
        }
    }
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 4; ++c) {
            const float *a = r ? a1 : a0;
            const float *b = c == 0 ? b0 : c == 1 ? b1 : c == 2 ? b2 : b3;
            float s = lanes_sum(acc[r][c]);
            for (int64_t kk = k; kk < K; ++kk) s += a[kk] * b[kk];
            out[r][c] = s;
        }
}

void DRNN_KERNEL(drnn_gemm_nt)(int64_t M, int64_t N, int64_t K,
                               const float *A, int64_t lda,
                               const float *B, int64_t ldb,
                               float *C, int64_t ldc,
                               const float *bias, int accumulate)
{
    float out[2][4];
    for (int64_t i = 0; i < M; i += 2) {
        int MR = M - i >= 2 ? 2 : 1;
        for (int64_t j = 0; j < N; j += 4) {
            int NR = N - j >= 4 ? 4 : (int)(N - j);
            tile_dot(MR, NR, K, A + i * lda, lda, B + j * ldb, ldb, out);
            for (int r = 0; r < MR; ++r) {
                float *c = C + (i + r) * ldc + j;
                for (int cc = 0; cc < NR; ++cc) {
                    float v = out[r][cc] + (bias ? bias[j + cc] : 0.0f);
                    c[cc] = accumulate ? c[cc] + v : v;
                }
            }
        }
    }
}
