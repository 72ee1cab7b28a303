/*
 * internal.h -- what the kernel files share and Python never sees.
 *
 * The dispatch table (drnn_kernel_table) is the one place that says which
 * instruction-set variant of a kernel runs; cpu.c fills it once.  The cell
 * files (rnn.c, lstm.c, gru.c) implement one time step each on the rows of
 * a batch that are still active; sequence.c owns the loop over layers,
 * directions and steps and the workspace, written once for all three cells.
 */
#ifndef DRNN_INTERNAL_H
#define DRNN_INTERNAL_H

#include "drnn.h"

/* C (M, N) = [C if accumulate] + A (M, K) . B (N, K)^T + bias (N, or NULL). */
typedef void (*drnn_gemm_nt_fn)(int64_t M, int64_t N, int64_t K,
                                const float *A, int64_t lda,
                                const float *B, int64_t ldb,
                                float *C, int64_t ldc,
                                const float *bias, int accumulate);

typedef struct {
    const char *isa;          /* "portable", ... */
    drnn_gemm_nt_fn gemm_nt;
} drnn_kernel_table;

/* The table chosen for this process (cpu.c). */
const drnn_kernel_table *drnn_kernels(void);

/* Flush-to-zero / denormals-are-zero for a kernel's duration. */
unsigned drnn_fpmode_enter(void);
void drnn_fpmode_leave(unsigned saved);

/* Portable kernels (gemm.c). */
void drnn_gemm_nt_portable(int64_t M, int64_t N, int64_t K,
                           const float *A, int64_t lda,
                           const float *B, int64_t ldb,
                           float *C, int64_t ldc,
                           const float *bias, int accumulate);

/* One time step of one layer in one direction, on the first `rows` rows of
 * the (length-sorted) batch.  Inputs are the precomputed input projections
 * x_ih (one pointer per row, G*H floats each, b_ih included); the step runs
 * the recurrent product and the fused gate math and updates h (and c) in
 * place. */
typedef struct {
    const drnn_rnn_desc *desc;
    const drnn_cell_weights *w;
    const drnn_act *act;           /* desc->act[direction] */
    const drnn_kernel_table *k;
    int64_t rows;
    const float *const *x_ih;      /* rows pointers to G*H floats           */
    float *h;                      /* (rows, H_out) contiguous              */
    float *c;                      /* (rows, H) contiguous, LSTM only       */
    float *gates;                  /* scratch (rows, G*H)                   */
    float *tmp;                    /* scratch (rows, H)                     */
} drnn_step_args;

void drnn_rnn_step(const drnn_step_args *s);
void drnn_lstm_step(const drnn_step_args *s);
void drnn_gru_step(const drnn_step_args *s);

/* Gates per cell family: 1, 4, 3. */
static inline int drnn_gate_count(int cell)
{
    return cell == DRNN_CELL_LSTM ? 4 : (cell == DRNN_CELL_GRU ? 3 : 1);
}

#endif /* DRNN_INTERNAL_H */
