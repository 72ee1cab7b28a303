/*
 * internal.h -- what the kernel files share and Python never sees.
 *
 * Packed weights.  At load, every layer's weights are repacked (pack.c) for
 * the vector width NB of the chosen instruction set, hidden units padded to
 * Hp = a multiple of NB, in blocks of NB units with the gates interleaved:
 *
 *   packed column (jb, g, u) = jb*G*NB + g*NB + u      hidden unit jb*NB + u
 *
 *   w_ih  block jb holds K_in rows of its G gates' NB columns side by side:
 *         [jb][k][g][u], so a block is one stream (GEMM panel p = jb*G + g
 *         is lane group g of block jb, rows G*NB floats apart)
 *   bias  (G*Hp) b_ih + b_hh folded, packed order (GRU with linear before
 *         reset keeps b_hn apart, in b_hn (Hp))
 *   w_hh  the same layout for the recurrent weights (K_rec rows), read by
 *         the step kernels and the GEMM alike.  GRU without
 *         linear-before-reset splits it into w_hh (gates r, z; G = 2) and
 *         w_hn (gate n, fed r*h; G = 1).
 *
 * Summation order.  Every recurrent sum is one chain over k = 0 .. K-1,
 * started from zero, in the step kernels and in the GEMM alike; the input
 * projection is added after.  So a row's result is bit-for-bit the same
 * whatever rows share its pass, whichever path (fused step or GEMM) and
 * however many threads run it.
 *   w_hr  LSTM projection, G = 1 (P outputs, H inputs)
 *   peep  three Hp vectors i, f, o
 *
 * The dispatch table (drnn_kernel_table) is the one place that says which
 * instruction-set variant of a kernel runs; cpu.c fills it once.
 */
#ifndef DRNN_INTERNAL_H
#define DRNN_INTERNAL_H

#include <stdatomic.h>
#include "drnn.h"

#define DRNN_PACK_MAGIC 0x314b4341504e5244ULL   /* "DRNPACK1" */

/* C (M, N) = [C +] A (M, K) . Bp + bias; Bp packed with G gates per block
 * (see above; panel p = NB columns starting at column p*NB), bias NULL or
 * ceil(N/NB)*NB floats; stores columns < N only.  Bp may start mid-matrix
 * at a block boundary. */
typedef void (*drnn_gemm_fn)(int64_t M, int64_t N, int64_t K,
                             const float *A, int64_t lda, const float *Bp, int G,
                             const float *bias, float *C, int64_t ldc, int accumulate);

/* Arguments of one time step of one layer in one direction. */
typedef struct {
    const drnn_rnn_desc *desc;
    const drnn_act *act;         /* the direction's three activations        */
    int64_t H, Hp, K;            /* hidden, padded hidden, recurrent inputs  */
    const float *w_hh, *w_hn, *b_hn, *peep;
    const float *const *x_ih;    /* per row: its G*Hp input projection       */
    const float *sums;           /* NULL, or (rows, ld_sums) recurrent sums a
                                    GEMM already made (large batches)        */
    int64_t ld_sums;
    const float *h_prev;         /* (rows, ld_h): this step's input state    */
    int64_t ld_h;
    float *h_next;               /* (rows, Hp): the cell's output            */
    float *c;                    /* (rows, Hp) LSTM cell state, in place     */
    float *z, *rh;               /* (rows, Hp) GRU two-phase scratch         */
    int reverse_blocks;          /* visit the weight blocks last-first       */
} drnn_step_args;

/* Run `phase` of a step for rows [r0, r1) and unit blocks [jb0, jb1). */
typedef void (*drnn_step_fn)(const drnn_step_args *a, int phase,
                             int64_t r0, int64_t r1, int64_t jb0, int64_t jb1);

/* x[i] = act(x[i]) for i < n. */
typedef void (*drnn_act_fn)(const drnn_act *act, float *x, int64_t n);

typedef struct {
    const char *isa;             /* "portable", "avx2", "avx512"  */
    int vw;                      /* NB: floats per vector          */
    drnn_gemm_fn gemm;
    drnn_step_fn rnn_step, lstm_step, gru_step;
    drnn_act_fn act;
} drnn_kernel_table;

#define DRNN_DECLARE_KERNELS(sfx)                                                        \
    void drnn_gemm_##sfx(int64_t, int64_t, int64_t, const float *, int64_t,              \
                         const float *, int, const float *, float *, int64_t, int);      \
    void drnn_rnn_step_##sfx(const drnn_step_args *, int, int64_t, int64_t, int64_t, int64_t); \
    void drnn_lstm_step_##sfx(const drnn_step_args *, int, int64_t, int64_t, int64_t, int64_t); \
    void drnn_gru_step_##sfx(const drnn_step_args *, int, int64_t, int64_t, int64_t, int64_t); \
    void drnn_act_##sfx(const drnn_act *, float *, int64_t);
DRNN_DECLARE_KERNELS(portable)
#ifdef DRNN_HAVE_X86_VARIANTS
DRNN_DECLARE_KERNELS(avx2)
DRNN_DECLARE_KERNELS(avx512)
#endif

/* Pointers into a packed stack for one layer and direction (pack.c). */
typedef struct {
    const float *w_ih, *bias, *b_hn, *w_hh, *w_hn, *w_hr, *peep;
    int64_t k_in;
} drnn_packed_layer;

/* Validate a packed buffer against desc and fill L*D views; DRNN_OK or error. */
int drnn_packed_view(const drnn_rnn_desc *d, const void *packed, drnn_packed_layer *out);
/* DRNN_OK if the description is complete and consistent (sequence.c). */
int drnn_check_desc(const drnn_rnn_desc *d);

/* First 64-byte aligned float in a caller's buffer (buffers carry 64 bytes of slack). */
static inline float *drnn_align_floats(void *p)
{
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}
static inline const float *drnn_align_floats_const(const void *p)
{
    return (const float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

/* The table chosen for this process (cpu.c). */
const drnn_kernel_table *drnn_kernels(void);

/* Flush-to-zero / denormals-are-zero for a kernel's duration. */
unsigned drnn_fpmode_enter(void);
void drnn_fpmode_leave(unsigned saved);

/* ---- threads (pool.c) --------------------------------------------------- */
typedef void (*drnn_task_fn)(void *ctx, int tid, int nthreads);
typedef void (*drnn_prepare_fn)(void *ctx, int nthreads);
/* Run fn(ctx, tid, n) for tid < n, the caller being tid 0, after
 * prepare(ctx, n) (may be NULL).  n <= nthreads: fewer (down to 1) when the
 * pool is busy with another caller's job, so size barriers in prepare. */
void drnn_parallel(int nthreads, drnn_task_fn fn, drnn_prepare_fn prepare, void *ctx);

typedef struct {
    atomic_uint waiting;
    atomic_uint phase;
    int count;
} drnn_barrier;
void drnn_barrier_init(drnn_barrier *b, int count);
/* A pause for spin-wait loops. */
void drnn_cpu_relax(void);
void drnn_barrier_wait(drnn_barrier *b);

/* Split [0, n) into `parts` near-equal ranges; range i is [*lo, *hi). */
static inline void drnn_split(int64_t n, int parts, int i, int64_t *lo, int64_t *hi)
{
    *lo = n * i / parts;
    *hi = n * (i + 1) / parts;
}

static inline int drnn_gate_count(int cell)
{
    return cell == DRNN_CELL_LSTM ? 4 : (cell == DRNN_CELL_GRU ? 3 : 1);
}

static inline int64_t drnn_round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

#endif /* DRNN_INTERNAL_H */
