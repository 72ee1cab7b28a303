/*
 * cell.h -- the recurrent sums the cell kernels (rnn.c, lstm.c, gru.c) share.
 *
 * A block of NB = VW hidden units owns one weight stream: K rows of its G
 * gates' NB floats side by side.  panel_sums() computes, for R batch rows
 * and one or more consecutive blocks, acc = sum_k h[q][k] * w[k]: one chain
 * per output, k ascending from zero -- exactly the order the GEMM uses, so
 * the fused step and the GEMM path give the same bits.  Latency is hidden
 * by independent chains: several rows, or for one row several blocks.
 *
 * cell_sums() runs a kernel's finish() over rows [r0, r1) and blocks
 * [jb0, jb1) either from sums a GEMM already computed (a->sums) or with
 * panel_sums: groups of RMAX rows take one block at a time (its weights
 * reused across the group), the rows left over one panel or one row at a
 * time, a single row BLK1 blocks at a time (one, when the stream outgrows
 * L1) and its last blocks in smaller groups.  Which grouping runs never
 * changes a sum, only how many chains hide the FMA latency.
 */
#ifndef DRNN_CELL_H
#define DRNN_CELL_H

#include "simd.h"
#include "internal.h"

#define MAX_PANELS 12
/* A step's weight stream larger than this does not stay in a 32 KiB L1. */
#ifndef L1_STREAM_BYTES
#define L1_STREAM_BYTES (40 * 1024)
#endif
#define MAX_ACC 24

/* acc[q][b*NG + g] = sum_k h[q][k] * w_{block b, gate g}[k] for R rows and
 * nblk consecutive blocks from w (each K rows of NG*VW floats). */
DRNN_INLINE void panel_sums(const int R, const int nblk, const int NG, const float *w,
                            int64_t K, const float *h, int64_t ld, vf acc[MAX_ACC])
{
    const int NP = nblk * NG;
    const int64_t bstride = K * NG * VW;
    for (int i = 0; i < R * NP; ++i) acc[i] = vzero();
    for (int64_t k = 0; k < K; ++k) {
        vf wv[MAX_PANELS];
        for (int b = 0; b < nblk; ++b)
            for (int g = 0; g < NG; ++g) wv[b * NG + g] = vload(w + b * bstride + k * NG * VW + g * VW);
        for (int q = 0; q < R; ++q) {
            const vf hk = vset1(h[q * ld + k]);
            for (int p = 0; p < NP; ++p) acc[q * NP + p] += hk * wv[p];
        }
    }
}

/* finish(a, phase, row, jb, s) gets the NG sums of one row and one block. */
typedef void (*cell_finish_fn)(const drnn_step_args *a, int phase, int64_t row, int64_t jb,
                               const vf *s);

/* A cell_finish_fn `name` running `form(a, row, jb, s, std)`: a kernel's
 * finish written once, compiled with its activations known (std = 1, the
 * common form) or read at run time (std = 0). */
#define CELL_FINISH(name, form, std)                                                             \
    DRNN_INLINE void name(const drnn_step_args *a, int phase, int64_t row, int64_t jb,           \
                          const vf *s)                                                           \
    {                                                                                            \
        (void)phase;                                                                             \
        form(a, row, jb, s, std);                                                                \
    }

/* One row, blocks [jb0 + done, ...) in groups of nblk while whole groups
 * remain (each group's blocks in reverse order on odd steps, see below);
 * returns how many blocks are done. */
DRNN_INLINE int64_t row_groups(const drnn_step_args *a, const int phase, const int NG,
                               const int nblk, const float *w, const float *hr, int64_t ld,
                               int64_t K, int64_t r0, int64_t jb0, int64_t jb1, int64_t done,
                               cell_finish_fn finish)
{
    vf acc[MAX_ACC];
    for (; done + nblk <= jb1 - jb0; done += nblk) {
        const int64_t jb = a->reverse_blocks ? jb1 - done - nblk : jb0 + done;
        panel_sums(1, nblk, NG, w + jb * NG * K * VW, K, hr, ld, acc);
        for (int b = 0; b < nblk; ++b) finish(a, phase, r0, jb + b, acc + b * NG);
    }
    return done;
}

/* R rows (R < RMAX) of one block. */
DRNN_INLINE void rows_block(const drnn_step_args *a, const int phase, const int NG, const int RMAX,
                            const int R, const float *wb, const float *h, int64_t ld, int64_t K,
                            int64_t r, int64_t jb, cell_finish_fn finish)
{
    /* The caller's switch instantiates every R; these never run. */
    if (R >= RMAX || R * NG > MAX_ACC) return;
    vf acc[MAX_ACC];
    panel_sums(R, 1, NG, wb, K, h + r * ld, ld, acc);
    for (int q = 0; q < R; ++q) finish(a, phase, r + q, jb, acc + q * NG);
}

/* One row, the blocks from `done` on, fewer than a BLK1 group: in groups
 * of 4 and 2 before single blocks -- a lone GRU or RNN block is too few
 * FMA chains to hide their latency (batch-1 RNN 64, four blocks: 350 ->
 * 235 ns a step; GRU 32, two blocks: 197 -> 181). */
DRNN_INLINE void row_tail(const drnn_step_args *a, const int phase, const int NG, const int BLK1,
                          const float *w, const float *hr, int64_t ld, int64_t K, int64_t r0,
                          int64_t jb0, int64_t jb1, int64_t done, cell_finish_fn finish)
{
    if (BLK1 > 4 && 4 * NG <= MAX_PANELS)
        done = row_groups(a, phase, NG, 4, w, hr, ld, K, r0, jb0, jb1, done, finish);
    if (BLK1 > 2 && 2 * NG <= MAX_PANELS)
        done = row_groups(a, phase, NG, 2, w, hr, ld, K, r0, jb0, jb1, done, finish);
    row_groups(a, phase, NG, 1, w, hr, ld, K, r0, jb0, jb1, done, finish);
}

/* The sums of `phase` for rows [r0, r1), blocks [jb0, jb1), then finish.
 * NG gates per block in this phase; w the phase's panels (NG per block),
 * h / ld / K its input. */
DRNN_INLINE void cell_sums(const drnn_step_args *a, const int phase, const int NG,
                           const int RMAX, const int BLK1, const float *w, const float *h,
                           int64_t ld, int64_t K, int64_t r0, int64_t r1, int64_t jb0,
                           int64_t jb1, cell_finish_fn finish)
{
    vf acc[MAX_ACC];
    if (a->sums) {
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t jb = jb0; jb < jb1; ++jb) {
                const float *s = a->sums + r * a->ld_sums + jb * NG * VW;
                for (int g = 0; g < NG; ++g) acc[g] = vload(s + g * VW);
                finish(a, phase, r, jb, acc);
            }
        return;
    }
    /* Groups of blocks run in either order (each output's sum is the same):
     * alternate steps reverse it so that a step starts on the weights the
     * last one touched, still in L1 when the whole stream does not fit.
     * Then one block at a time keeps more of them: a group's blocks age
     * together, and the older one is evicted as it is needed (batch-1 LSTM
     * 64, 64 KiB: 591 -> 541 ns a step; for streams that fit, groups hide
     * latency better: LSTM 32, 16 KiB: 142 vs 197 ns).  Only with four or
     * more gates: a lone GRU or RNN block has too few chains to keep the
     * FMA unit busy (2-layer GRU 256: 2.3 ms in groups, 2.5 alone). */
    const int64_t stream_bytes = (jb1 - jb0) * NG * K * VW * (int64_t)sizeof(float);
    const int group = NG >= 4 && stream_bytes > L1_STREAM_BYTES ? 1 : BLK1;
    if (r1 - r0 == 1) {
        /* One row (the batch-1 step): these plain loops compile tighter
         * than the general one below -- finish keeps its constants in
         * registers across blocks (LSTM 64: 570 -> 515 ns a step). */
        const float *hr = h + r0 * ld;
        const int64_t done = group == 1
            ? row_groups(a, phase, NG, 1, w, hr, ld, K, r0, jb0, jb1, 0, finish)
            : row_groups(a, phase, NG, BLK1, w, hr, ld, K, r0, jb0, jb1, 0, finish);
        row_tail(a, phase, NG, BLK1, w, hr, ld, K, r0, jb0, jb1, done, finish);
        return;
    }
    /* Several rows: each group of blocks is visited once, its weights
     * shared by groups of RMAX rows while they are in L1; the rows left
     * over go as one panel, or one at a time. */
    const int64_t nb = jb1 - jb0;
    int64_t done = 0;
    for (; done + group <= nb; done += group) {
        const int64_t jb = a->reverse_blocks ? jb1 - done - group : jb0 + done;
        const float *wb = w + jb * NG * K * VW;
        int64_t r = r0;
        for (; r + RMAX <= r1; r += RMAX)
            for (int b = 0; b < group; ++b) {
                panel_sums(RMAX, 1, NG, wb + b * NG * K * VW, K, h + r * ld, ld, acc);
                for (int q = 0; q < RMAX; ++q) finish(a, phase, r + q, jb + b, acc + q * NG);
            }
        /* A few rows left: one panel of them when that makes more chains
         * than a single row's group (each weight load then serves them all). */
        const int left = (int)(r1 - r);
        if (left >= 2 && (group == 1 || left >= BLK1)) {
            for (int b = 0; b < group; ++b) {
                const float *wbb = wb + b * NG * K * VW;
                switch (left) {
                case 2: rows_block(a, phase, NG, RMAX, 2, wbb, h, ld, K, r, jb + b, finish); break;
                case 3: rows_block(a, phase, NG, RMAX, 3, wbb, h, ld, K, r, jb + b, finish); break;
                case 4: rows_block(a, phase, NG, RMAX, 4, wbb, h, ld, K, r, jb + b, finish); break;
                case 5: rows_block(a, phase, NG, RMAX, 5, wbb, h, ld, K, r, jb + b, finish); break;
                default:
                    for (int q = 0; q < left; ++q)
                        rows_block(a, phase, NG, RMAX, 1, wbb, h, ld, K, r + q, jb + b, finish);
                }
            }
            r = r1;
        }
        for (; r < r1; ++r) {
            if (group == BLK1) {
                panel_sums(1, BLK1, NG, wb, K, h + r * ld, ld, acc);
                for (int b = 0; b < BLK1; ++b) finish(a, phase, r, jb + b, acc + b * NG);
            } else {
                panel_sums(1, 1, NG, wb, K, h + r * ld, ld, acc);
                finish(a, phase, r, jb, acc);
            }
        }
    }
    if (done == nb) return;
    /* Fewer blocks left than a group: row groups take them one by one,
     * single rows in smaller groups. */
    int64_t r = r0;
    for (; r + RMAX <= r1; r += RMAX)
        for (int64_t i = done; i < nb; ++i) {
            const int64_t jb = a->reverse_blocks ? jb1 - 1 - i : jb0 + i;
            panel_sums(RMAX, 1, NG, w + jb * NG * K * VW, K, h + r * ld, ld, acc);
            for (int q = 0; q < RMAX; ++q) finish(a, phase, r + q, jb, acc + q * NG);
        }
    for (; r < r1; ++r)
        row_tail(a, phase, NG, BLK1, w, h + r * ld, ld, K, r, jb0, jb1, done, finish);
}

#endif /* DRNN_CELL_H */
