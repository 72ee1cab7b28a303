/*
 * sequence.c -- the whole-sequence driver shared by the RNN, LSTM and GRU.
 *
 * For each layer:
 *   1. the input projection of every step of every direction, one GEMM per
 *      direction with M = batch * steps (rows split across the threads):
 *      x_ih (B*T, G*Hp) = x . W_ih^T + b_ih + b_hh;
 *   2. the time loop of each direction: per step the cell kernel runs the
 *      recurrent product over the rows still active with the gate math fused
 *      after it;
 *   3. each step's hidden state goes to the layer's output, steps past a
 *      sequence's end are zeroed, the final states are scattered out.
 *
 * Variable lengths: the batch is ordered by length, longest first (stable),
 * and state rows live in that order, so the rows active at step s are a
 * prefix.  Sequence b at step s reads time t = s (forward) or t = len_b-1-s
 * (reverse): PyTorch's packed-sequence semantics.  States are double
 * buffered (a step reads one buffer and writes the other), so a row that
 * stops at its length leaves its final state in buffer len_b % 2.  (A units
 * split hands states over through a ring of three buffers instead; below.)
 *
 * Threads (pool.c).  When one thread must run a layer's time loop alone
 * (one direction, too few rows, small weights), the other threads project
 * the inputs ahead of it chunk by chunk instead of all before it (the time
 * loop projects a chunk itself when no helper has claimed it yet).  The
 * directions of a bidirectional layer run on two
 * teams of threads at once.  Within a team a direction is split by batch
 * rows (no synchronisation inside the time loop) when there are enough
 * rows, or by blocks of hidden units, handing each step's state over, when
 * the recurrent weights are too large for one core's L1; otherwise one
 * thread runs it.  Results are identical for every thread count: the split never
 * changes what any sum adds, or in what order.
 *
 * All scratch comes from the caller's workspace, laid out by plan_workspace()
 * for both the size query and the run.
 */
#include <sched.h>
#include <string.h>
#include "act.h"
#include "internal.h"

#define ALIGN 64
/* Split one direction's units across threads once its recurrent weights
 * reach this (bytes): each thread then streams its share of them from its
 * own L1/L2, and steps are handed over without a barrier (below).  Batch-1
 * LSTM, 4800 steps, ns per step (one thread + pipelined projection -> split;
 * measured when the split came in): H 64 (64 KiB) 765 -> 775, H 80 1222 ->
 * 1228, H 96 (144 KiB) 1795 -> 1597, H 128 3030 -> 2450.  With the later
 * kernels H 64 is still no faster split (533 vs 600-700, RESULTS.md).
 *
 * A stream's single step (T = 1) splits from the same size.  It used to
 * split from 32 KiB, where it gains a little when both cores run at once
 * (2-layer GRU 64, 48 KiB: 2.37 -> 2.30 us a step; LSTM 64: none).  But
 * this VM's two cores spend long stretches (tens of ms to minutes) not
 * running together, and every split step then waits ~2.2 us more for the
 * other thread (GRU 64: 4.5 us; GRU 128, 192 KiB: 5.3 against 4.2 alone,
 * 2.85 split in good times).  Below 128 KiB the gain is too small to risk
 * that; LSTM 128 (256 KiB) still gains 5.3 -> 3.6 us. */
#ifndef UNIT_SPLIT_BYTES
#define UNIT_SPLIT_BYTES (128 * 1024)
#endif
/* A thread in row-split mode wants at least this many rows. */
#define MIN_ROWS_PER_THREAD 2
/* From this many active rows a step's recurrent sums run as one GEMM. */
#define GEMM_MIN_ROWS 12
/* Steps per chunk when the input projection is pipelined with the time
 * loop (one thread runs the recurrence while the others project ahead). */
#define PIPE_CHUNK 64
/* State buffers per direction: two alternate (a step reads one, writes the
 * other), or all three rotate when a units split hands states over. */
#define HANDOFF_SLOTS 3
/* Projections smaller than this (flops) are not worth waking a thread. */
#define MIN_PARALLEL_FLOPS 2.0e6
/* Each thread's row pointers start on their own cache line: a thread
 * rewrites them every step and its kernels read them, so sharing a line
 * with another thread's would bounce it between the cores at every step
 * (a units split at batch 1: ~100 ns a step). */
#define ROW_PTRS_PER_LINE (ALIGN / sizeof(float *))

/* ---- description and workspace ------------------------------------------ */

int drnn_check_desc(const drnn_rnn_desc *d)
{
    if (!d) return DRNN_ERR_ARGUMENT;
    if (d->cell < DRNN_CELL_RNN || d->cell > DRNN_CELL_GRU) return DRNN_ERR_ARGUMENT;
    if (d->input_size < 1 || d->hidden_size < 1 || d->num_layers < 1) return DRNN_ERR_ARGUMENT;
    if (d->num_directions != 1 && d->num_directions != 2) return DRNN_ERR_ARGUMENT;
    if (d->proj_size < 0 || (d->proj_size > 0 && d->cell != DRNN_CELL_LSTM)) return DRNN_ERR_ARGUMENT;
    if (d->clip < 0.0f || d->clip != d->clip) return DRNN_ERR_ARGUMENT;
    /* Sizes whose packed products would overflow int64 float counts. */
    if (d->hidden_size > (1 << 20) || d->input_size > (1 << 24) || d->proj_size > (1 << 20) ||
        d->num_layers > 4096)
        return DRNN_ERR_OVERFLOW;
    for (int dir = 0; dir < d->num_directions; ++dir)
        for (int a = 0; a < 3; ++a)
            if (!drnn_act_valid(&d->act[dir][a])) return DRNN_ERR_ARGUMENT;
    return DRNN_OK;
}

typedef struct {
    size_t views, order, x_rows, x_ih[2], seq[2], h[2][HANDOFF_SLOTS], c[2], out[2], z[2], rh[2],
        sums[2], chunks, total, rows_stride;
    int64_t ld_h;
} ws_plan;

/* Reserve n elements of size elem; 0 on overflow. */
static int reserve(size_t *cursor, size_t *slot, size_t n, size_t elem)
{
    if (n != 0 && elem > (SIZE_MAX / 2) / n) return 0;
    size_t bytes = (n * elem + ALIGN - 1) / ALIGN * ALIGN;
    if (*cursor > SIZE_MAX / 2 - bytes) return 0;
    *slot = *cursor;
    *cursor += bytes;
    return 1;
}

static int mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static int plan_workspace(const drnn_rnn_desc *d, int64_t batch, int64_t steps, int nthreads,
                          ws_plan *p)
{
    int rc = drnn_check_desc(d);
    if (rc) return rc;
    if (batch < 0 || steps < 0 || nthreads < 1) return DRNN_ERR_ARGUMENT;
    const int vw = drnn_kernels()->vw;
    const size_t B = (size_t)batch, T = (size_t)steps, D = (size_t)d->num_directions;
    const size_t Hp = (size_t)drnn_round_up(d->hidden_size, vw);
    const size_t Hout = d->proj_size > 0 ? (size_t)d->proj_size : (size_t)d->hidden_size;
    const size_t Np = (size_t)drnn_gate_count(d->cell) * Hp;
    const size_t ld_h = d->proj_size > 0 ? Hout : Hp;
    size_t bt, seq_elems, xih_elems, rows_ptrs;
    const size_t rows_stride = (B + ROW_PTRS_PER_LINE - 1) / ROW_PTRS_PER_LINE * ROW_PTRS_PER_LINE;
    if (!mul_ok(B, T, &bt) || !mul_ok(bt, D * Hout, &seq_elems) || !mul_ok(bt, Np, &xih_elems) ||
        !mul_ok(rows_stride, (size_t)nthreads, &rows_ptrs))
        return DRNN_ERR_OVERFLOW;
    memset(p, 0, sizeof *p);
    p->ld_h = (int64_t)ld_h;
    p->rows_stride = rows_stride;
    size_t cur = 0;
    /* Two flags per chunk: claimed, projected (see obtain_chunk). */
    const size_t nchunks = (T + PIPE_CHUNK - 1) / PIPE_CHUNK;
    int ok = reserve(&cur, &p->chunks, 2 * nchunks, sizeof(atomic_int)) &&
             reserve(&cur, &p->views, (size_t)d->num_layers * D, sizeof(drnn_packed_layer)) &&
             reserve(&cur, &p->order, B, sizeof(int64_t)) &&
             reserve(&cur, &p->x_rows, rows_ptrs, sizeof(float *));
    for (size_t dir = 0; ok && dir < D; ++dir) {
        ok = reserve(&cur, &p->x_ih[dir], xih_elems, sizeof(float));
        for (int slot = 0; ok && slot < HANDOFF_SLOTS; ++slot)
            ok = reserve(&cur, &p->h[dir][slot], B * ld_h, sizeof(float));
        if (ok && B >= GEMM_MIN_ROWS) ok = reserve(&cur, &p->sums[dir], B * Np, sizeof(float));
        if (ok && d->cell == DRNN_CELL_LSTM) ok = reserve(&cur, &p->c[dir], B * Hp, sizeof(float));
        if (ok && d->proj_size > 0) ok = reserve(&cur, &p->out[dir], B * Hp, sizeof(float));
        if (ok && d->cell == DRNN_CELL_GRU && !d->linear_before_reset)
            ok = reserve(&cur, &p->z[dir], B * Hp, sizeof(float)) &&
                 reserve(&cur, &p->rh[dir], B * Hp, sizeof(float));
    }
    int nseq = d->num_layers > 2 ? 2 : d->num_layers - 1;
    for (int i = 0; ok && i < nseq; ++i) ok = reserve(&cur, &p->seq[i], seq_elems, sizeof(float));
    if (!ok) return DRNN_ERR_OVERFLOW;
    p->total = cur + ALIGN;   /* slack to align an unaligned workspace */
    return DRNN_OK;
}

size_t drnn_rnn_workspace_size(const drnn_rnn_desc *desc, int64_t batch, int64_t steps,
                               int num_threads, int *err)
{
    ws_plan p;
    int rc = plan_workspace(desc, batch, steps, num_threads < 1 ? 1 : num_threads, &p);
    if (err) *err = rc;
    return rc ? 0 : p.total;
}

/* ---- the run -------------------------------------------------------------- */

typedef struct {
    const drnn_rnn_desc *d;
    const drnn_kernel_table *k;
    const drnn_packed_layer *pl;
    drnn_step_fn step;
    int64_t B, T, H, Hp, Hout, Np, ld_h, max_len;
    int D, L, G, nphases;
    const float *x;
    int64_t x_sb, x_st;
    const int32_t *lengths;
    const int64_t *order;
    const float *h0, *c0;
    float *y;
    int64_t y_sb, y_st;
    float *hn, *cn;
    char *ws;
    const ws_plan *p;
    atomic_int *chunk_claim;   /* per chunk of steps: last layer claimed + 1 */
    atomic_int *chunk_done;    /* per chunk of steps: last layer projected + 1 */
    int nthreads;
    drnn_barrier all, team[2];
} run_ctx;

static inline int64_t row_length(const run_ctx *r, int64_t b)
{
    return r->lengths ? r->lengths[b] : r->T;
}

/* Rows of [r0, r1) (length order) still active at step s: a prefix. */
static inline int64_t active_end(const run_ctx *r, int64_t r0, int64_t r1, int64_t s)
{
    if (!r->lengths) return s < r->T ? r1 : r0;
    while (r1 > r0 && r->lengths[r->order[r1 - 1]] <= s) --r1;
    return r1;
}

/* Layer input / output (pointer, batch stride, time stride, width). */
typedef struct { float *ptr; const float *cptr; int64_t sb, st, width; } seq_view;

static seq_view layer_input(const run_ctx *r, int l)
{
    seq_view v = {0};
    if (l == 0) {
        v.cptr = r->x; v.sb = r->x_sb; v.st = r->x_st; v.width = r->d->input_size;
    } else {
        v.cptr = (const float *)(r->ws + r->p->seq[(l - 1) % 2]);
        v.st = r->D * r->Hout; v.sb = r->T * v.st; v.width = v.st;
    }
    return v;
}

static seq_view layer_output(const run_ctx *r, int l)
{
    seq_view v = {0};
    if (l == r->L - 1) {
        v.ptr = r->y; v.sb = r->y_sb; v.st = r->y_st;
    } else {
        v.ptr = (float *)(r->ws + r->p->seq[l % 2]);
        v.st = r->D * r->Hout; v.sb = r->T * v.st;
    }
    v.width = r->D * r->Hout;
    return v;
}

/* 1. Input projections of layer l, rows of B*T split over all threads.
 * With lengths, only each sequence's valid steps are projected (padding is
 * never read), one GEMM per sequence, sequences split over the threads by
 * their total length. */
static void project_inputs(run_ctx *r, int l, int tid, int n)
{
    const seq_view in = layer_input(r, l);
    const int64_t M = r->B * r->T;
    for (int dir = 0; dir < r->D; ++dir) {
        const drnn_packed_layer *w = &r->pl[l * r->D + dir];
        float *x_ih = (float *)(r->ws + r->p->x_ih[dir]);
        if (!r->lengths && in.sb == r->T * in.st) {
            int64_t lo, hi;
            drnn_split(M, n, tid, &lo, &hi);
            if (hi > lo)
                r->k->gemm(hi - lo, r->Np, in.width, in.cptr + lo * in.st, in.st, w->w_ih,
                           r->G, w->bias, x_ih + lo * r->Np, r->Np, 0);
            continue;
        }
        /* Thread tid takes the sequences whose running step count falls in
         * its share of all valid steps. */
        int64_t total = 0, lo, hi, seen = 0;
        for (int64_t b = 0; b < r->B; ++b) total += row_length(r, b);
        drnn_split(total, n, tid, &lo, &hi);
        for (int64_t b = 0; b < r->B; ++b) {
            const int64_t len = row_length(r, b), mid = seen + len / 2;
            seen += len;
            if (len == 0 || mid < lo || mid >= hi) continue;
            r->k->gemm(len, r->Np, in.width, in.cptr + b * in.sb, in.st, w->w_ih, r->G,
                       w->bias, x_ih + b * r->T * r->Np, r->Np, 0);
        }
    }
}

/* Unit split, one direction, no lengths: thread tid projects the columns of
 * its own blocks of hidden units -- the only ones its cell kernels read --
 * so no barrier separates the projection from its time loop. */
static void project_own_units(run_ctx *r, int l, int tid, int n)
{
    const seq_view in = layer_input(r, l);
    const drnn_packed_layer *w = &r->pl[l];
    float *x_ih = (float *)(r->ws + r->p->x_ih[0]);
    const int vw = r->k->vw;
    int64_t jb0, jb1;
    drnn_split(r->Hp / vw, n, tid, &jb0, &jb1);
    if (jb1 <= jb0) return;
    const int64_t c0 = jb0 * r->G * vw, M = r->B * r->T;
    r->k->gemm(M, (jb1 - jb0) * r->G * vw, in.width, in.cptr, in.st,
               w->w_ih + c0 * in.width, r->G, w->bias ? w->bias + c0 : NULL, x_ih + c0, r->Np, 0);
}

/* Per-direction state and the arguments the cell kernels see. */
typedef struct {
    int l, dir, reverse;
    const drnn_packed_layer *w;
    float *x_ih, *h[HANDOFF_SLOTS], *c, *out, *z, *rh, *sums;
    int nslots;               /* state buffers in rotation: 2, or 3 with handoff */
    int direct;               /* states live in the output rows (out_row) */
    const float **x_rows;     /* this thread's row pointers */
    seq_view y;
} dir_state;

static void dir_init(const run_ctx *r, dir_state *s, int l, int dir, int tid)
{
    const ws_plan *p = r->p;
    s->l = l; s->dir = dir;
    s->reverse = r->D == 2 ? dir == 1 : r->d->reverse;
    s->w = &r->pl[l * r->D + dir];
    s->x_ih = (float *)(r->ws + p->x_ih[dir]);
    for (int slot = 0; slot < HANDOFF_SLOTS; ++slot)
        s->h[slot] = (float *)(r->ws + p->h[dir][slot]);
    s->nslots = 2;
    s->direct = 0;
    s->c = r->d->cell == DRNN_CELL_LSTM ? (float *)(r->ws + p->c[dir]) : NULL;
    s->out = r->d->proj_size > 0 ? (float *)(r->ws + p->out[dir]) : NULL;
    s->z = p->z[dir] || p->rh[dir] ? (float *)(r->ws + p->z[dir]) : NULL;
    s->rh = p->rh[dir] ? (float *)(r->ws + p->rh[dir]) : NULL;
    s->sums = p->sums[dir] ? (float *)(r->ws + p->sums[dir]) : NULL;
    s->x_rows = (const float **)(r->ws + p->x_rows) + (size_t)tid * p->rows_stride;
    s->y = layer_output(r, l);
}

/* Batch 1, one thread, no padding (Hp == Hout) and no projection: step
 * st writes its state straight into its output row, and step st + 1 reads
 * it there -- no state buffer to cycle through L1, no copy to the output
 * (batch-1 LSTM 64: ~15 ns of a 550 ns step). */
static int direct_ok(const run_ctx *r, const dir_state *s)
{
    return r->B == 1 && r->Hp == r->Hout && !s->out;
}

/* The time step row b reads at step `step` of its direction. */
static inline int64_t time_of(const run_ctx *r, const dir_state *s, int64_t b, int64_t step)
{
    return s->reverse ? row_length(r, b) - 1 - step : step;
}

static float *out_row(const run_ctx *r, const dir_state *s, int64_t st)
{
    return s->y.ptr + time_of(r, s, 0, st) * s->y.st + s->dir * r->Hout;
}

/* The state step st reads (st = 0: the initial state) and the one it writes. */
static const float *state_in(const run_ctx *r, const dir_state *s, int64_t st)
{
    return s->direct && st > 0 ? out_row(r, s, st - 1) : s->h[st % s->nslots];
}

static float *state_out(const run_ctx *r, const dir_state *s, int64_t st)
{
    return s->direct ? out_row(r, s, st) : s->h[(st + 1) % s->nslots];
}

/* Gather initial states of rows [r0, r1) into length order; zero the padding. */
static void load_states(const run_ctx *r, const dir_state *s, int64_t r0, int64_t r1)
{
    const int idx = s->l * r->D + s->dir;
    for (int64_t i = r0; i < r1; ++i) {
        const int64_t b = r->order[i];
        float *h = s->h[0] + i * r->ld_h;
        memset(h, 0, (size_t)r->ld_h * sizeof(float));
        if (r->h0) memcpy(h, r->h0 + (idx * r->B + b) * r->Hout, (size_t)r->Hout * sizeof(float));
        if (s->c) {
            float *c = s->c + i * r->Hp;
            memset(c, 0, (size_t)r->Hp * sizeof(float));
            if (r->c0) memcpy(c, r->c0 + (idx * r->B + b) * r->H, (size_t)r->H * sizeof(float));
        }
    }
}

/* Handoff mode: every thread writes all of slot 0 itself (the same bytes),
 * and the cell state only of its own units [u0, u1) -- the only ones its
 * kernels touch -- so no barrier has to follow. */
static void load_states_all(const run_ctx *r, const dir_state *s, int64_t u0, int64_t u1)
{
    const int idx = s->l * r->D + s->dir;
    if (u1 > r->Hp) u1 = r->Hp;
    for (int64_t i = 0; i < r->B; ++i) {
        float *h = s->h[0] + i * r->ld_h;
        if (r->h0) memcpy(h, r->h0 + (idx * r->B + i) * r->Hout, (size_t)r->Hout * sizeof(float));
        else memset(h, 0, (size_t)r->Hout * sizeof(float));
        if (s->c && u1 > u0) {
            float *c = s->c + i * r->Hp;
            const int64_t real = u1 < r->H ? u1 : r->H;
            memset(c + u0, 0, (size_t)(u1 - u0) * sizeof(float));
            if (r->c0 && real > u0)
                memcpy(c + u0, r->c0 + (idx * r->B + i) * r->H + u0,
                       (size_t)(real - u0) * sizeof(float));
        }
    }
}

/* Handoff mode: final states of every row, this thread's columns [c0, c1)
 * of h and units [c0, c1) of c (no lengths, so rows are in batch order). */
static void store_own_states(const run_ctx *r, const dir_state *s, int64_t c0, int64_t c1)
{
    const int idx = s->l * r->D + s->dir;
    const float *hf = state_in(r, s, r->T);
    for (int64_t i = 0; i < r->B; ++i) {
        if (r->hn && c1 > c0)
            memcpy(r->hn + (idx * r->B + i) * r->Hout + c0, hf + i * r->ld_h + c0,
                   (size_t)(c1 - c0) * sizeof(float));
        const int64_t e = c1 < r->H ? c1 : r->H;
        if (s->c && r->cn && e > c0)
            memcpy(r->cn + (idx * r->B + i) * r->H + c0, s->c + i * r->Hp + c0,
                   (size_t)(e - c0) * sizeof(float));
    }
}

/* Final states of rows [r0, r1) out; padded steps of their outputs zeroed. */
static void store_states(const run_ctx *r, const dir_state *s, int64_t r0, int64_t r1)
{
    const int idx = s->l * r->D + s->dir;
    for (int64_t i = r0; i < r1; ++i) {
        const int64_t b = r->order[i], len = row_length(r, b);
        const float *h = state_in(r, s, len) + i * r->ld_h;
        if (r->hn) memcpy(r->hn + (idx * r->B + b) * r->Hout, h, (size_t)r->Hout * sizeof(float));
        if (s->c && r->cn)
            memcpy(r->cn + (idx * r->B + b) * r->H, s->c + i * r->Hp, (size_t)r->H * sizeof(float));
        for (int64_t t = len; t < r->T; ++t)
            memset(s->y.ptr + b * s->y.sb + t * s->y.st + s->dir * r->Hout, 0,
                   (size_t)r->Hout * sizeof(float));
    }
}

/* Step `st` for rows [r0, r1) and unit blocks [jb0, jb1): point the rows at
 * their projections and run the cell's phases (with `bar` between them
 * when units are split). */
static void run_step(const run_ctx *r, dir_state *s, drnn_step_args *a, int64_t st,
                     int64_t r0, int64_t r1, int64_t jb0, int64_t jb1,
                     int64_t p0, int64_t p1, drnn_barrier *bar)
{
    for (int64_t i = r0; i < r1; ++i) {
        const int64_t b = r->order[i];
        s->x_rows[i] = s->x_ih + (b * r->T + time_of(r, s, b, st)) * r->Np;
    }
    a->x_ih = s->x_rows;
    a->reverse_blocks = (int)(st & 1);
    a->h_prev = state_in(r, s, st);
    float *h_next = state_out(r, s, st);
    a->h_next = s->out ? s->out : h_next;
    const int vw = r->k->vw;
    /* Many rows: the recurrent sums of this thread's blocks as one GEMM
     * (same summation order as the fused kernels), then the gate math. */
    const int use_gemm = s->sums && r1 - r0 >= GEMM_MIN_ROWS;
    const int G0 = r->nphases > 1 ? 2 : r->G;   /* gates in phase 0 */
    a->sums = use_gemm ? s->sums : NULL;
    a->ld_sums = r->Np;
    if (use_gemm)
        r->k->gemm(r1 - r0, (jb1 - jb0) * G0 * vw, r->Hout, a->h_prev + r0 * r->ld_h, r->ld_h,
                   s->w->w_hh + jb0 * G0 * r->Hout * vw, G0, NULL,
                   s->sums + r0 * r->Np + jb0 * G0 * vw, r->Np, 0);
    r->step(a, 0, r0, r1, jb0, jb1);
    if (r->nphases > 1) {
        if (bar) drnn_barrier_wait(bar);
        if (use_gemm)
            r->k->gemm(r1 - r0, (jb1 - jb0) * vw, r->H, s->rh + r0 * r->Hp, r->Hp,
                       s->w->w_hn + jb0 * r->H * vw, 1, NULL, s->sums + r0 * r->Np + jb0 * vw,
                       r->Np, 0);
        r->step(a, 1, r0, r1, jb0, jb1);
    }
    if (s->out) {
        /* LSTM projection: h' (rows, P) = out (rows, H) . W_hr^T, over the
         * output panels [p0, p1) this thread owns. */
        if (bar) drnn_barrier_wait(bar);
        const int64_t c0 = p0 * vw, c1 = p1 * vw < r->Hout ? p1 * vw : r->Hout;
        if (c1 > c0)
            r->k->gemm(r1 - r0, c1 - c0, r->H, s->out + r0 * r->Hp, r->Hp,
                       s->w->w_hr + p0 * r->H * vw, 1, NULL, h_next + r0 * r->ld_h + c0,
                       r->ld_h, 0);
    }
}

/* Copy columns [c0, c1) of the new state of rows [r0, r1) to the output. */
static void emit(const run_ctx *r, const dir_state *s, int64_t st, int64_t r0, int64_t r1,
                 int64_t c0, int64_t c1)
{
    if (s->direct || c1 <= c0) return;
    const float *h = s->h[(st + 1) % s->nslots];
    for (int64_t i = r0; i < r1; ++i) {
        const int64_t b = r->order[i];
        memcpy(s->y.ptr + b * s->y.sb + time_of(r, s, b, st) * s->y.st + s->dir * r->Hout + c0,
               h + i * r->ld_h + c0, (size_t)(c1 - c0) * sizeof(float));
    }
}

/* ---- handing states over between the threads of a units split ------------
 *
 * With the hidden units split across threads, step t+1 needs every
 * thread's part of step t's state.  A barrier per step costs two trips
 * between cores (the barrier's line, then the state's lines); instead the
 * state's own lines carry the signal.  The state buffers rotate through
 * three slots; a thread fills its part of a slot with a signalling-NaN
 * sentinel before a later step writes it there, and starts step t once no
 * other thread's part of slot t % 3 still holds the sentinel.  No
 * arithmetic result is a signalling NaN, so a written state never looks
 * unwritten.  (The initial state, slot 0, comes from the user and is never
 * waited on: every thread copies all of it itself.)
 *
 * Why three slots are enough: at step t a thread has seen the others'
 * step t-1 output, so they have finished step t-1 and its reads of slot
 * (t-1) % 3.  It refills its own part of that slot -- slot (t+2) % 3 --
 * with the sentinel, then writes its step t output to slot (t+1) % 3.
 * Another thread sees that output before it looks at slot (t+2) % 3, and
 * one thread's stores become visible in order, so there it finds either
 * the sentinel or step t+1's state, never step t-2's.
 */
#define HANDOFF_SENTINEL 0x7fbadd1eu   /* a signalling NaN */

/* Columns [c0, c1) of rows [0, rows) of h: not written yet. */
static void handoff_poison(const run_ctx *r, float *h, int64_t rows, int64_t c0, int64_t c1)
{
    const uint32_t v = HANDOFF_SENTINEL;
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t c = c0; c < c1; ++c) memcpy(h + i * r->ld_h + c, &v, sizeof v);
    atomic_thread_fence(memory_order_release);
}

static inline void handoff_spin(const volatile uint32_t *p)
{
    for (unsigned spins = 0; *p == HANDOFF_SENTINEL;)
        if (++spins > 2048) sched_yield(); else drnn_cpu_relax();
}

/* Wait until every column of rows [0, rows) of h outside this thread's own
 * [c0, c1) has been written by step st - 1.  Spinning on the lines another
 * thread is still writing would pull them away from it at every store, so
 * first wait on one word per other thread: the last one its step writes
 * (last row, last block visited -- the kernels alternate the block order
 * with the step's parity); its earlier stores are visible by then. */
static void handoff_wait(const run_ctx *r, const float *h, int64_t st, int64_t rows, int tt,
                         int tn, int64_t c0, int64_t c1)
{
    const int vw = r->k->vw;
    const int reversed = (int)((st - 1) & 1);
    for (int t = 0; t < tn; ++t) {
        if (t == tt) continue;
        int64_t jb0, jb1;
        drnn_split(r->Hp / vw, tn, t, &jb0, &jb1);
        if (jb1 <= jb0) continue;
        const int64_t jb = reversed ? jb0 : jb1 - 1;
        int64_t col = (jb + 1) * vw - 1;
        if (col >= r->Hout) col = r->Hout - 1;
        handoff_spin((const volatile uint32_t *)(h + (rows - 1) * r->ld_h + col));
    }
    for (int64_t i = 0; i < rows; ++i) {
        const volatile uint32_t *row = (const volatile uint32_t *)(h + i * r->ld_h);
        for (int64_t c = 0; c < r->Hout; ++c) {
            if (c < c0 || c >= c1) handoff_spin(row + c);
        }
    }
    atomic_thread_fence(memory_order_acquire);
}

enum { MODE_SINGLE, MODE_ROWS, MODE_UNITS };

/* How a team of tn threads splits one direction's time loop. */
static int split_mode(const run_ctx *r, int tn)
{
    const int64_t nb = r->Hp / r->k->vw;
    const int64_t whh_bytes = r->Np * r->Hout * (int64_t)sizeof(float);
    if (tn > 1 && r->B >= (int64_t)tn * MIN_ROWS_PER_THREAD) return MODE_ROWS;
    if (tn > 1 && whh_bytes >= UNIT_SPLIT_BYTES && nb >= tn) return MODE_UNITS;
    return MODE_SINGLE;
}

/* Steps [s0, s1) of chunk c, and the time range they read. */
static void chunk_span(const run_ctx *r, int reverse, int64_t c, int64_t *t0, int64_t *t1)
{
    const int64_t s0 = c * PIPE_CHUNK, s1 = s0 + PIPE_CHUNK < r->T ? s0 + PIPE_CHUNK : r->T;
    *t0 = reverse ? r->T - s1 : s0;
    *t1 = reverse ? r->T - s0 : s1;
}

/* Pipelined projection.  Chunk c of layer l is projected by whichever
 * thread claims it first: the helpers claim chunks in order, ahead of the
 * time loop; the thread running the time loop claims the chunk it needs
 * itself when no helper has got to it (a helper still waking up at the
 * start of a call, or descheduled by a busy machine), so it never waits on
 * a thread that is not running.  Whoever projects it, a chunk's bits are
 * the same: one GEMM call with the same arguments. */
static int claim_chunk(const run_ctx *r, int l, int64_t c)
{
    int expected = l;
    return atomic_load_explicit(&r->chunk_claim[c], memory_order_relaxed) == l &&
           atomic_compare_exchange_strong_explicit(&r->chunk_claim[c], &expected, l + 1,
                                                   memory_order_acq_rel, memory_order_relaxed);
}

static void project_chunk(const run_ctx *r, int l, int64_t c)
{
    const seq_view in = layer_input(r, l);
    const drnn_packed_layer *w = &r->pl[l];
    float *x_ih = (float *)(r->ws + r->p->x_ih[0]);
    int64_t t0, t1;
    chunk_span(r, r->d->reverse, c, &t0, &t1);
    for (int64_t b = 0; b < r->B; ++b)
        r->k->gemm(t1 - t0, r->Np, in.width, in.cptr + b * in.sb + t0 * in.st, in.st, w->w_ih,
                   r->G, w->bias, x_ih + (b * r->T + t0) * r->Np, r->Np, 0);
    atomic_store_explicit(&r->chunk_done[c], l + 1, memory_order_release);
}

/* A helper thread: project every chunk of layer l not claimed yet. */
static void project_chunks(run_ctx *r, int l)
{
    const int64_t nchunks = (r->T + PIPE_CHUNK - 1) / PIPE_CHUNK;
    for (int64_t c = 0; c < nchunks; ++c)
        if (claim_chunk(r, l, c)) project_chunk(r, l, c);
}

/* The time loop's thread: chunk c of layer l, projected by now. */
static void obtain_chunk(const run_ctx *r, int l, int64_t c)
{
    if (claim_chunk(r, l, c)) {
        project_chunk(r, l, c);
        return;
    }
    for (unsigned spins = 0; atomic_load_explicit(&r->chunk_done[c], memory_order_acquire) < l + 1;)
        if (++spins > 2048) sched_yield(); else drnn_cpu_relax();
}

/* 2.+3. One direction of layer l on a team of tn threads (this is tt);
 * `pipelined`: one thread runs it while others project chunks ahead. */
static void run_direction(run_ctx *r, int l, int dir, int tid, int tt, int tn, drnn_barrier *bar,
                          int pipelined)
{
    dir_state s;
    dir_init(r, &s, l, dir, tid);
    const drnn_act *act = r->d->act[dir];
    drnn_step_args a = {r->d, act, r->H, r->Hp, r->Hout, s.w->w_hh, s.w->w_hn, s.w->b_hn,
                        s.w->peep, NULL, NULL, 0, NULL, r->ld_h, NULL, s.c, s.z, s.rh};
    const int vw = r->k->vw;
    const int64_t nb = r->Hp / vw;
    const int mode = split_mode(r, tn);
    const int mode_rows = mode == MODE_ROWS, mode_units = mode == MODE_UNITS;
    s.direct = !mode_units && direct_ok(r, &s);

    if (mode_rows || (!mode_units && tn > 1)) {
        /* Rows: each thread runs its own rows through every step, no sync;
         * with too little work for a split, team thread 0 runs it all. */
        int64_t r0 = 0, r1 = r->B;
        if (mode_rows) drnn_split(r->B, tn, tt, &r0, &r1);
        else if (tt != 0) r1 = 0;
        load_states(r, &s, r0, r1);
        for (int64_t st = 0; st < r->max_len; ++st) {
            const int64_t ra = active_end(r, r0, r1, st);
            if (ra == r0) break;
            run_step(r, &s, &a, st, r0, ra, 0, nb, 0, (r->Hout + vw - 1) / vw, NULL);
            emit(r, &s, st, r0, ra, 0, r->Hout);
        }
        store_states(r, &s, r0, r1);
        return;
    }
    if (!mode_units) {          /* tn == 1 */
        load_states(r, &s, 0, r->B);
        for (int64_t st = 0; st < r->max_len; ++st) {
            const int64_t ra = active_end(r, 0, r->B, st);
            if (ra == 0) break;
            if (pipelined && st % PIPE_CHUNK == 0) obtain_chunk(r, l, st / PIPE_CHUNK);
            run_step(r, &s, &a, st, 0, ra, 0, nb, 0, (r->Hout + vw - 1) / vw, NULL);
            emit(r, &s, st, 0, ra, 0, r->Hout);
        }
        store_states(r, &s, 0, r->B);
        return;
    }
    /* Units: every thread runs every row on its slice of hidden units (its
     * slice of the recurrent weights stays in its own cache).  Steps are
     * separated by the state handoff above, or by a barrier when a step has
     * several phases (GRU with linear_before_reset=0, LSTM with projection)
     * or rows stop at different lengths. */
    int64_t jb0, jb1, p0, p1, q0, q1;
    drnn_split(nb, tn, tt, &jb0, &jb1);
    drnn_split((r->Hout + vw - 1) / vw, tn, tt, &p0, &p1);
    drnn_split(r->B, tn, tt, &q0, &q1);
    const int64_t c0 = (s.out ? p0 : jb0) * vw;
    int64_t c1 = (s.out ? p1 : jb1) * vw;
    if (c1 > r->Hout) c1 = r->Hout;
    const int handoff = r->nphases == 1 && !s.out && !r->lengths;
    if (handoff) {
        /* Every thread fills all of slot 0, so only a later step's read of
         * another thread's part needs the barrier: it orders this call's
         * sentinels before any reads (stale values from an earlier call
         * would otherwise pass for written ones).  A single step skips it. */
        s.nslots = HANDOFF_SLOTS;
        load_states_all(r, &s, jb0 * vw, jb1 * vw);
        if (r->T > 1) {
            for (int slot = 1; slot < HANDOFF_SLOTS; ++slot)
                handoff_poison(r, s.h[slot], r->B, c0, c1);
            drnn_barrier_wait(bar);
        }
    } else {
        load_states(r, &s, q0, q1);
        drnn_barrier_wait(bar);
    }
    for (int64_t st = 0; st < r->max_len; ++st) {
        const int64_t ra = active_end(r, 0, r->B, st);
        if (ra == 0) break;
        if (handoff) {
            if (st > 0) handoff_wait(r, s.h[st % HANDOFF_SLOTS], st, ra, tt, tn, c0, c1);
            if (st + 1 < r->max_len) handoff_poison(r, s.h[(st + 2) % HANDOFF_SLOTS], ra, c0, c1);
            run_step(r, &s, &a, st, 0, ra, jb0, jb1, p0, p1, NULL);
            emit(r, &s, st, 0, ra, c0, c1);
            continue;
        }
        run_step(r, &s, &a, st, 0, ra, jb0, jb1, p0, p1, bar);
        emit(r, &s, st, 0, ra, c0, c1);
        drnn_barrier_wait(bar);
    }
    if (handoff) store_own_states(r, &s, c0, c1);
    else store_states(r, &s, q0, q1);
}

static void run_task(void *arg, int tid, int n)
{
    run_ctx *r = (run_ctx *)arg;
    unsigned fpmode = drnn_fpmode_enter();
    /* A barrier ends each layer but the last: drnn_parallel returns only
     * once every thread is done. */
    for (int l = 0; l < r->L; ++l) {
        const int pipelined = r->D == 1 && n >= 2 && !r->lengths && r->T >= 2 * PIPE_CHUNK &&
                              split_mode(r, n) == MODE_SINGLE;
        if (pipelined) {
            if (tid == 0) run_direction(r, l, 0, 0, 0, 1, &r->all, 1);
            else project_chunks(r, l);
            if (l + 1 < r->L) drnn_barrier_wait(&r->all);
            continue;
        }
        const seq_view in = layer_input(r, l);
        if (r->D == 1 && !r->lengths && split_mode(r, n) == MODE_UNITS &&
            in.sb == r->T * in.st) {
            project_own_units(r, l, tid, n);
            run_direction(r, l, 0, tid, tid, n, &r->all, 0);
            if (l + 1 < r->L) drnn_barrier_wait(&r->all);
            continue;
        }
        project_inputs(r, l, tid, n);
        drnn_barrier_wait(&r->all);
        if (r->D == 2 && n >= 2) {
            /* The two directions at once, on teams of alternate threads. */
            const int dir = tid % 2, tn = (n - dir + 1) / 2;
            run_direction(r, l, dir, tid, tid / 2, tn, &r->team[dir], 0);
        } else {
            for (int dir = 0; dir < r->D; ++dir) {
                run_direction(r, l, dir, tid, tid, n, &r->all, 0);
                if (dir + 1 < r->D) drnn_barrier_wait(&r->all);
            }
        }
        if (l + 1 < r->L) drnn_barrier_wait(&r->all);
    }
    drnn_fpmode_leave(fpmode);
}

/* Barriers for the thread count the pool actually grants. */
static void size_barriers(void *arg, int n)
{
    run_ctx *r = (run_ctx *)arg;
    r->nthreads = n;
    drnn_barrier_init(&r->all, n);
    drnn_barrier_init(&r->team[0], (n + 1) / 2);
    drnn_barrier_init(&r->team[1], n / 2);
}

/* Stable sort of row indices by length, longest first. */
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

/* How many threads this run can use well (1 when the work is too small). */
static int useful_threads(const drnn_rnn_desc *d, int64_t B, int64_t T, int64_t Np,
                          int64_t Hout, int requested)
{
    if (requested <= 1 || B == 0 || T == 0) return 1;
    const double proj_flops = 2.0 * (double)B * (double)T * (double)Np * (double)d->input_size;
    const int64_t whh_bytes = Np * Hout * (int64_t)sizeof(float);
    const int rec = d->num_directions == 2 || B >= 2 * MIN_ROWS_PER_THREAD ||
                    whh_bytes >= UNIT_SPLIT_BYTES;
    const int proj = proj_flops >= MIN_PARALLEL_FLOPS;
    if (!rec && !proj) return 1;
    return requested;
}

int drnn_rnn_forward(const drnn_rnn_desc *d, const void *packed,
                     int64_t B, int64_t T,
                     const float *x, int64_t x_stride_b, int64_t x_stride_t,
                     const int32_t *lengths,
                     const float *h0, const float *c0,
                     float *y, int64_t y_stride_b, int64_t y_stride_t,
                     float *hn, float *cn,
                     int num_threads, void *workspace, size_t workspace_bytes)
{
    ws_plan p;
    if (num_threads < 1) num_threads = 1;
    int rc = plan_workspace(d, B, T, num_threads, &p);
    if (rc) return rc;
    if (!packed || (B > 0 && T > 0 && (!x || !y))) return DRNN_ERR_ARGUMENT;
    if (!workspace || workspace_bytes < p.total) return DRNN_ERR_WORKSPACE;
    if (lengths)
        for (int64_t b = 0; b < B; ++b)
            if (lengths[b] < 0 || lengths[b] > T) return DRNN_ERR_LENGTH;

    char *ws = (char *)workspace;
    ws += (ALIGN - (uintptr_t)ws % ALIGN) % ALIGN;
    drnn_packed_layer *views = (drnn_packed_layer *)(ws + p.views);
    if ((rc = drnn_packed_view(d, packed, views))) return rc;

    run_ctx r;
    memset(&r, 0, sizeof r);
    r.d = d;
    r.k = drnn_kernels();
    r.pl = views;
    r.step = d->cell == DRNN_CELL_LSTM ? r.k->lstm_step
           : d->cell == DRNN_CELL_GRU  ? r.k->gru_step : r.k->rnn_step;
    r.B = B; r.T = T;
    r.H = d->hidden_size;
    r.Hp = drnn_round_up(r.H, r.k->vw);
    r.Hout = d->proj_size > 0 ? d->proj_size : r.H;
    r.G = drnn_gate_count(d->cell);
    r.Np = r.G * r.Hp;
    r.ld_h = p.ld_h;
    r.D = d->num_directions; r.L = d->num_layers;
    r.nphases = d->cell == DRNN_CELL_GRU && !d->linear_before_reset ? 2 : 1;
    r.x = x; r.x_sb = x_stride_b; r.x_st = x_stride_t;
    r.lengths = lengths;
    r.h0 = h0; r.c0 = c0;
    r.y = y; r.y_sb = y_stride_b; r.y_st = y_stride_t;
    r.hn = hn; r.cn = cn;
    r.ws = ws; r.p = &p;
    const int64_t nchunks = (T + PIPE_CHUNK - 1) / PIPE_CHUNK;
    r.chunk_claim = (atomic_int *)(ws + p.chunks);
    r.chunk_done = r.chunk_claim + nchunks;
    for (int64_t c = 0; c < nchunks; ++c) {
        atomic_init(&r.chunk_claim[c], 0);
        atomic_init(&r.chunk_done[c], 0);
    }

    int64_t *order = (int64_t *)(ws + p.order);
    r.max_len = T;
    if (lengths) {
        order_by_length(B, lengths, order);
        r.max_len = B > 0 ? lengths[order[0]] : 0;
    } else {
        for (int64_t b = 0; b < B; ++b) order[b] = b;
    }
    r.order = order;

    drnn_parallel(useful_threads(d, B, T, r.Np, r.Hout, num_threads), run_task, size_barriers, &r);
    return DRNN_OK;
}
