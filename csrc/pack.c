/*
 * pack.c -- repack framework-layout weights once, at load, into the layout
 * the kernels stream (see internal.h for the layout).
 *
 * A packed stack is one caller-allocated buffer: a header (magic, vector
 * width, a copy of the description) followed by one entry of offsets per
 * layer and direction, then the float data, every array 64-byte aligned.
 * drnn_rnn_forward checks the header against its description and the
 * running ISA's vector width before trusting any offset.
 */
#include <string.h>
#include "internal.h"

typedef struct {
    int64_t w_ih, bias, b_hn, w_hh, w_hn, w_hr, peep;   /* float offsets; -1 = absent */
    int64_t k_in;
} pack_entry;

typedef struct {
    uint64_t magic;
    int32_t vw, n_entries;
    drnn_rnn_desc desc;
    int64_t total_floats;
} pack_header;

#define FALIGN 16   /* floats: 64 bytes */

static int64_t header_floats(int n_entries)
{
    size_t bytes = sizeof(pack_header) + (size_t)n_entries * sizeof(pack_entry);
    return drnn_round_up((int64_t)((bytes + sizeof(float) - 1) / sizeof(float)), FALIGN);
}

/* Lay out (and, when base != NULL, fill the offsets of) a packed stack;
 * returns its size in floats, or -1 if the description is invalid. */
static int64_t plan(const drnn_rnn_desc *d, int vw, pack_header *hdr, pack_entry *ent)
{
    const int n = d->num_layers * d->num_directions;
    const int64_t H = d->hidden_size, Hp = drnn_round_up(H, vw);
    const int64_t G = drnn_gate_count(d->cell), Np = G * Hp;
    const int64_t Hout = d->proj_size > 0 ? d->proj_size : H;
    int64_t cur = header_floats(n);
#define TAKE(field, count) do { e.field = cur; cur += drnn_round_up((count), FALIGN); } while (0)
    for (int i = 0; i < n; ++i) {
        pack_entry e = {-1, -1, -1, -1, -1, -1, -1, 0};
        e.k_in = i < d->num_directions ? d->input_size : d->num_directions * Hout;
        TAKE(w_ih, Np * e.k_in);
        TAKE(bias, Np);
        if (d->cell == DRNN_CELL_GRU && d->linear_before_reset) TAKE(b_hn, Hp);
        if (d->cell == DRNN_CELL_GRU && !d->linear_before_reset) {
            TAKE(w_hh, 2 * Hp * Hout);
            TAKE(w_hn, Hp * H);
        } else {
            TAKE(w_hh, Np * Hout);
        }
        if (d->proj_size > 0) TAKE(w_hr, drnn_round_up(d->proj_size, vw) * H);
        if (d->cell == DRNN_CELL_LSTM) TAKE(peep, 3 * Hp);
        if (ent) ent[i] = e;
    }
#undef TAKE
    if (hdr) {
        memset(hdr, 0, sizeof *hdr);
        hdr->magic = DRNN_PACK_MAGIC;
        hdr->vw = vw;
        hdr->n_entries = n;
        hdr->desc = *d;
        hdr->total_floats = cur;
    }
    return cur;
}

size_t drnn_rnn_packed_size(const drnn_rnn_desc *desc, int *err)
{
    int rc = drnn_check_desc(desc);
    if (err) *err = rc;
    if (rc) return 0;
    int64_t floats = plan(desc, drnn_kernels()->vw, NULL, NULL);
    return (size_t)floats * sizeof(float) + 64;   /* + slack to align the buffer */
}

/* The packed column of gate g, unit j: jb*G*NB + g*NB + u. */
static int64_t gate_col(int64_t g, int64_t j, int64_t G, int vw)
{
    return (j / vw) * G * vw + g * vw + j % vw;
}

/* Pack a (G*H, K) row-major matrix (G gates of H rows) into blocks of NB
 * units with the gates interleaved per k: element (g*H + j, k) goes to
 * block j / NB, row k, lane (g, j % NB) -- [jb][k][g][u].  A block's G
 * panels are then one stream with a constant offset between gates; with
 * G = 1 it is plain panels of NB columns (dense layers, projections). */
static void pack_panels(float *dst, const float *src, int64_t G, int64_t H, int64_t K,
                        int vw, int64_t n_packed)
{
    memset(dst, 0, (size_t)(n_packed * K) * sizeof(float));
    for (int64_t g = 0; g < G; ++g)
        for (int64_t j = 0; j < H; ++j) {
            const float *row = src + (g * H + j) * K;
            float *out = dst + (j / vw) * K * G * vw + g * vw + j % vw;
            for (int64_t k = 0; k < K; ++k) out[k * G * vw] = row[k];
        }
}

int drnn_rnn_pack(const drnn_rnn_desc *d, const drnn_cell_weights *weights,
                  void *packed, size_t packed_bytes)
{
    int rc = drnn_check_desc(d);
    if (rc) return rc;
    if (!weights || !packed) return DRNN_ERR_ARGUMENT;
    const int vw = drnn_kernels()->vw;
    const int n = d->num_layers * d->num_directions;
    for (int i = 0; i < n; ++i) {
        if (!weights[i].w_ih || !weights[i].w_hh) return DRNN_ERR_ARGUMENT;
        if (d->proj_size > 0 && !weights[i].w_hr) return DRNN_ERR_ARGUMENT;
        if (weights[i].peep && d->cell != DRNN_CELL_LSTM) return DRNN_ERR_ARGUMENT;
    }
    float *base = drnn_align_floats(packed);
    int64_t floats = plan(d, vw, NULL, NULL);
    if (packed_bytes < (size_t)floats * sizeof(float) + 64) return DRNN_ERR_WORKSPACE;

    pack_header *hdr = (pack_header *)base;
    pack_entry *ent = (pack_entry *)(hdr + 1);
    plan(d, vw, hdr, ent);
    /* Peepholes keep their space but are marked absent when not given: the
     * kernels then run PyTorch's cell, without adding 0 * c to the gates. */
    for (int i = 0; i < n; ++i)
        if (!weights[i].peep) ent[i].peep = -1;
    memset(base + header_floats(n), 0, (size_t)(floats - header_floats(n)) * sizeof(float));

    const int64_t H = d->hidden_size, Hp = drnn_round_up(H, vw);
    const int64_t G = drnn_gate_count(d->cell), Np = G * Hp;
    const int64_t Hout = d->proj_size > 0 ? d->proj_size : H;
    const int gru_lbr = d->cell == DRNN_CELL_GRU && d->linear_before_reset;

    for (int i = 0; i < n; ++i) {
        const drnn_cell_weights *w = &weights[i];
        const pack_entry *e = &ent[i];
        pack_panels(base + e->w_ih, w->w_ih, G, H, e->k_in, vw, Np);
        float *bias = base + e->bias;
        for (int64_t r = 0; r < G * H; ++r) {
            const int is_hn = gru_lbr && r >= 2 * H;   /* b_hn stays apart */
            float b = w->b_ih ? w->b_ih[r] : 0.0f;
            if (w->b_hh && !is_hn) b += w->b_hh[r];
            bias[gate_col(r / H, r % H, G, vw)] = b;
        }
        if (gru_lbr && w->b_hh)
            for (int64_t j = 0; j < H; ++j) base[e->b_hn + j] = w->b_hh[2 * H + j];
        if (d->cell == DRNN_CELL_GRU && !d->linear_before_reset) {
            pack_panels(base + e->w_hh, w->w_hh, 2, H, Hout, vw, 2 * Hp);
            pack_panels(base + e->w_hn, w->w_hh + 2 * H * Hout, 1, H, H, vw, Hp);
        } else {
            pack_panels(base + e->w_hh, w->w_hh, G, H, Hout, vw, Np);
        }
        if (d->proj_size > 0)
            pack_panels(base + e->w_hr, w->w_hr, 1, d->proj_size, H, vw,
                        drnn_round_up(d->proj_size, vw));
        if (d->cell == DRNN_CELL_LSTM && w->peep)
            for (int g = 0; g < 3; ++g)
                for (int64_t j = 0; j < H; ++j) base[e->peep + g * Hp + j] = w->peep[g * H + j];
    }
    return DRNN_OK;
}

int drnn_packed_view(const drnn_rnn_desc *d, const void *packed, drnn_packed_layer *out)
{
    const float *base = drnn_align_floats_const(packed);
    const pack_header *hdr = (const pack_header *)base;
    if (!packed || hdr->magic != DRNN_PACK_MAGIC || hdr->vw != drnn_kernels()->vw ||
        memcmp(&hdr->desc, d, sizeof *d) != 0)
        return DRNN_ERR_ARGUMENT;
    const pack_entry *ent = (const pack_entry *)(hdr + 1);
    for (int i = 0; i < hdr->n_entries; ++i) {
        const pack_entry *e = &ent[i];
        drnn_packed_layer *p = &out[i];
        p->w_ih = base + e->w_ih;
        p->bias = base + e->bias;
        p->b_hn = e->b_hn >= 0 ? base + e->b_hn : NULL;
        p->w_hh = base + e->w_hh;
        p->w_hn = e->w_hn >= 0 ? base + e->w_hn : NULL;
        p->w_hr = e->w_hr >= 0 ? base + e->w_hr : NULL;
        p->peep = e->peep >= 0 ? base + e->peep : NULL;
        p->k_in = e->k_in;
    }
    return DRNN_OK;
}

/* Dense: panels of the (out, in) weight and the bias padded to whole panels. */
size_t drnn_dense_packed_size(int64_t in_features, int64_t out_features)
{
    const int vw = drnn_kernels()->vw;
    if (in_features < 0 || out_features < 1) return 0;
    const int64_t np = drnn_round_up(out_features, vw);
    return (size_t)(16 + np * in_features + np) * sizeof(float) + 64;
}

int drnn_dense_pack(int64_t in_features, int64_t out_features, const float *w, const float *b,
                    void *packed, size_t packed_bytes)
{
    const int vw = drnn_kernels()->vw;
    if (!w || !packed || in_features < 0 || out_features < 1) return DRNN_ERR_ARGUMENT;
    if (packed_bytes < drnn_dense_packed_size(in_features, out_features)) return DRNN_ERR_WORKSPACE;
    float *base = drnn_align_floats(packed);
    const int64_t np = drnn_round_up(out_features, vw);
    int32_t *meta = (int32_t *)base;
    meta[0] = vw;
    meta[1] = (int32_t)(b != NULL);
    pack_panels(base + 16, w, 1, out_features, in_features, vw, np);
    float *bias = base + 16 + np * in_features;
    memset(bias, 0, (size_t)np * sizeof(float));
    if (b) memcpy(bias, b, (size_t)out_features * sizeof(float));
    return DRNN_OK;
}
