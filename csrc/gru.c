/*
 * gru.c -- one time step of the GRU on packed weights, gate order r z n:
 *
 *     r = f(x_r + R_r h)        z = f(x_z + R_z h)       (biases folded in x)
 *     linear_before_reset = 1 (PyTorch, Keras reset_after=True):
 *         n = g(x_n + r * (R_n h + b_hn))               one phase
 *     linear_before_reset = 0 (Keras reset_after=False, ONNX default):
 *         phase 0: r, z; keep z and r * h
 *         phase 1: n = g(x_n + R_n (r * h))             (b_hn folded in x_n)
 *     h' = (1 - z) * n + z * h
 *
 * The second form needs every unit's r before any n, so the driver puts a
 * barrier between its phases when units are split across threads.
 */
#include "cell.h"

#if DRNN_VW >= 16
#define RMAX 6          /* 6 rows x 3 gates = 18 chains */
#else
#define RMAX 2
#endif
/* One row: blocks per group.  Measured on Zen 4 (batch-1 step alone):
 * linear_before_reset 2 blocks x 3 gates beat 3 x 3 (GRU 64 384 vs 394-500
 * ns, GRU 32 97 vs 130); the reset-before-product phases, 2 gates and 1,
 * want 4 blocks (GRU 64 730 -> 530 ns, GRU 256 9.4 -> 8.0 us against 3). */
#define BLK1 2
#define BLK1_RESET 4

/* linear_before_reset: s = sums of r, z, n.  std: sigmoid and tanh, no
 * clip (gru_standard), with the activations known at compile time. */
DRNN_INLINE void gru_finish_lbr_k(const drnn_step_args *a, int64_t row, int64_t jb, const vf *s,
                                  const int std)
{
    const int F = std ? DRNN_ACT_SIGMOID : DRNN_ACT_ANY, G = std ? DRNN_ACT_TANH : DRNN_ACT_ANY;
    const int64_t u0 = jb * VW;
    const float clip = a->desc->clip;
    const drnn_act *fa = &a->act[0], *ga = &a->act[1];
    const float *x = a->x_ih[row] + jb * 3 * VW;
    const vf hp = vload(a->h_prev + row * a->ld_h + u0);
    const vf r = vgate(F, fa, s[0] + vload(x), clip);
    const vf z = vgate(F, fa, s[1] + vload(x + VW), clip);
    const vf hn = s[2] + (a->b_hn ? vload(a->b_hn + u0) : vzero());
    const vf n = vgate(G, ga, vload(x + 2 * VW) + r * hn, clip);
    vstore(a->h_next + row * a->Hp + u0, (1.0f - z) * n + z * hp);
}

/* Reset before the product, phase 0: s = sums of r, z; keep z and r * h.
 * Phase 1: s = the sum of R_n (r * h).  std as above. */
DRNN_INLINE void gru_finish_rz_k(const drnn_step_args *a, int64_t row, int64_t jb, const vf *s,
                                 const int std)
{
    const int F = std ? DRNN_ACT_SIGMOID : DRNN_ACT_ANY;
    const int64_t Hp = a->Hp, u0 = jb * VW;
    const float clip = a->desc->clip;
    const drnn_act *fa = &a->act[0];
    const float *x = a->x_ih[row] + jb * 3 * VW;
    const vf hp = vload(a->h_prev + row * a->ld_h + u0);
    const vf r = vgate(F, fa, s[0] + vload(x), clip);
    vstore(a->z + row * Hp + u0, vgate(F, fa, s[1] + vload(x + VW), clip));
    vstore(a->rh + row * Hp + u0, r * hp);
}

DRNN_INLINE void gru_finish_n_k(const drnn_step_args *a, int64_t row, int64_t jb, const vf *s,
                                const int std)
{
    const int G = std ? DRNN_ACT_TANH : DRNN_ACT_ANY;
    const int64_t Hp = a->Hp, u0 = jb * VW;
    const float *x = a->x_ih[row] + jb * 3 * VW;
    const vf hp = vload(a->h_prev + row * a->ld_h + u0);
    const vf n = vgate(G, &a->act[1], s[0] + vload(x + 2 * VW), a->desc->clip);
    const vf z = vload(a->z + row * Hp + u0);
    vstore(a->h_next + row * Hp + u0, (1.0f - z) * n + z * hp);
}

CELL_FINISH(gru_finish_lbr_std, gru_finish_lbr_k, 1)
CELL_FINISH(gru_finish_lbr, gru_finish_lbr_k, 0)
CELL_FINISH(gru_finish_rz_std, gru_finish_rz_k, 1)
CELL_FINISH(gru_finish_rz, gru_finish_rz_k, 0)
CELL_FINISH(gru_finish_n_std, gru_finish_n_k, 1)
CELL_FINISH(gru_finish_n, gru_finish_n_k, 0)

static int gru_standard(const drnn_step_args *a)
{
    return a->act[0].kind == DRNN_ACT_SIGMOID && a->act[1].kind == DRNN_ACT_TANH &&
           !(a->desc->clip > 0.0f);
}

void DRNN_KERNEL(drnn_gru_step)(const drnn_step_args *a, int phase,
                                int64_t r0, int64_t r1, int64_t jb0, int64_t jb1)
{
    if (a->desc->linear_before_reset && gru_standard(a))
        cell_sums(a, 0, 3, RMAX, BLK1, a->w_hh, a->h_prev, a->ld_h, a->K, r0, r1, jb0, jb1,
                  gru_finish_lbr_std);
    else if (a->desc->linear_before_reset)
        cell_sums(a, 0, 3, RMAX, BLK1, a->w_hh, a->h_prev, a->ld_h, a->K, r0, r1, jb0, jb1,
                  gru_finish_lbr);
    else if (phase == 0 && gru_standard(a))
        cell_sums(a, 0, 2, RMAX, BLK1_RESET, a->w_hh, a->h_prev, a->ld_h, a->K, r0, r1, jb0,
                  jb1, gru_finish_rz_std);
    else if (phase == 0)
        cell_sums(a, 0, 2, RMAX, BLK1_RESET, a->w_hh, a->h_prev, a->ld_h, a->K, r0, r1, jb0,
                  jb1, gru_finish_rz);
    else if (gru_standard(a))
        cell_sums(a, 1, 1, RMAX, BLK1_RESET, a->w_hn, a->rh, a->Hp, a->H, r0, r1, jb0,
                  jb1, gru_finish_n_std);
    else
        cell_sums(a, 1, 1, RMAX, BLK1_RESET, a->w_hn, a->rh, a->Hp, a->H, r0, r1, jb0,
                  jb1, gru_finish_n);
}
