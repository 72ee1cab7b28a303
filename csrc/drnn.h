/*
 * drnn.h -- the C API of drnn's kernels.
 *
 * Design
 * ------
 * The C layer computes; it never allocates and knows nothing of files,
 * frameworks or Python.  The caller (src/_core.pyx) validates shapes,
 * allocates every buffer, and passes raw pointers, sizes and strides.
 *
 * A recurrent *stack* (one cell family, num_layers layers, one or two
 * directions) is packed once and then runs a whole batch of sequences in
 * one call:
 *
 *     drnn_rnn_packed_size(desc) / drnn_rnn_pack(desc, weights, packed)
 *     drnn_rnn_workspace_size(desc, batch, steps, threads) -> scratch bytes
 *     drnn_rnn_forward(desc, packed, ..., threads, workspace, workspace_bytes)
 *
 * For each layer and direction the input projection of every time step is
 * one GEMM (M = batch * steps); then a time loop runs the recurrent product
 * (a small GEMM over the still-active rows) with the gate math fused after it.
 *
 * Weights given to drnn_rnn_pack use PyTorch's layout and gate order,
 * whatever framework produced the model (the Python loaders permute):
 *     RNN  G = 1               LSTM G = 4: i f g o      GRU G = 3: r z n
 *     w_ih (G*H, in)  w_hh (G*H, H_out)  b_ih, b_hh (G*H)  w_hr (P, H)
 *     peepholes (3*H): i, f, o
 * where H_out = proj_size if proj_size > 0 else H.  All row-major.
 *
 * Variable lengths follow PyTorch packed sequences: sequence b is active for
 * its first lengths[b] steps; the reverse direction starts at its own last
 * valid step; outputs past a sequence's end are zero; final states are each
 * sequence's state after its own last step.
 *
 * Every kernel that is chosen by instruction set lives behind the dispatch
 * table in cpu.c (drnn_kernels()); nothing else picks a kernel.
 */
#ifndef DRNN_H
#define DRNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- error codes ------------------------------------------------------ */
enum {
    DRNN_OK = 0,
    DRNN_ERR_ARGUMENT = 1,   /* a size, enum or pointer is invalid        */
    DRNN_ERR_WORKSPACE = 2,  /* workspace missing or smaller than needed  */
    DRNN_ERR_LENGTH = 3,     /* a sequence length outside [0, steps]      */
    DRNN_ERR_OVERFLOW = 4    /* a buffer size does not fit in size_t      */
};

/* A static, human-readable message for an error code. */
const char *drnn_strerror(int code);

/* ---- activations ------------------------------------------------------ */
/* The ONNX activation set; alpha/beta as the ONNX operator docs define. */
typedef enum {
    DRNN_ACT_SIGMOID = 0,      /* 1 / (1 + exp(-x))                         */
    DRNN_ACT_TANH = 1,
    DRNN_ACT_RELU = 2,         /* max(x, 0)                                 */
    DRNN_ACT_LINEAR = 3,       /* x  (Keras "linear")                       */
    DRNN_ACT_HARD_SIGMOID = 4, /* clip(alpha*x + beta, 0, 1); Keras 3 uses
                                  1/6, 0.5; tf.keras 2 and ONNX 0.2, 0.5    */
    DRNN_ACT_AFFINE = 5,       /* alpha*x + beta                            */
    DRNN_ACT_LEAKY_RELU = 6,   /* x >= 0 ? x : alpha*x                      */
    DRNN_ACT_THRESHOLDED_RELU = 7, /* x > alpha ? x : 0                     */
    DRNN_ACT_SCALED_TANH = 8,  /* alpha * tanh(beta * x)                    */
    DRNN_ACT_ELU = 9,          /* x >= 0 ? x : alpha*(exp(x) - 1)           */
    DRNN_ACT_SOFTSIGN = 10,    /* x / (1 + |x|)                             */
    DRNN_ACT_SOFTPLUS = 11,    /* log(1 + exp(x))                           */
    DRNN_ACT_COUNT_ = 12
} drnn_act_kind;

typedef struct {
    int32_t kind;   /* drnn_act_kind */
    float alpha;
    float beta;
} drnn_act;

/* ---- recurrent stacks ------------------------------------------------- */
typedef enum { DRNN_CELL_RNN = 0, DRNN_CELL_LSTM = 1, DRNN_CELL_GRU = 2 } drnn_cell_kind;

typedef struct {
    int32_t cell;            /* drnn_cell_kind                                */
    int32_t input_size;      /* features of layer 0's input                    */
    int32_t hidden_size;     /* H                                              */
    int32_t proj_size;       /* LSTM only: P > 0 projects h to P; 0 = none     */
    int32_t num_layers;      /* L >= 1                                         */
    int32_t num_directions;  /* D: 1 or 2 (2 = bidirectional, [fwd, bwd])      */
    int32_t reverse;         /* D == 1 only: run the sequence backwards        */
    int32_t linear_before_reset; /* GRU: 1 = r * (W_hn h + b_hn) (PyTorch);
                                    0 = W_hn (r * h) + b_hn (Keras
                                    reset_after=False, ONNX default)           */
    int32_t input_forget;    /* LSTM: couple the gates, f = 1 - i (ONNX)       */
    float clip;              /* > 0: clip gate pre-activations to [-clip, clip] */
    /* Activations per direction: [dir][0] = f (gates: LSTM i f o, GRU r z,
       RNN the only one), [dir][1] = g (LSTM cell candidate, GRU n),
       [dir][2] = h (LSTM output, applied to c).  Unused slots are ignored. */
    drnn_act act[2][3];
} drnn_rnn_desc;

/* Weights of one layer in one direction; an array of L*D of these is
 * indexed [layer * D + direction]. */
typedef struct {
    const float *w_ih;   /* (G*H, in_l), in_0 = input_size, in_l = D*H_out  */
    const float *w_hh;   /* (G*H, H_out)                                      */
    const float *b_ih;   /* (G*H) or NULL                                     */
    const float *b_hh;   /* (G*H) or NULL                                     */
    const float *w_hr;   /* (P, H) when proj_size > 0, else NULL              */
    const float *peep;   /* (3*H) LSTM peepholes i f o, or NULL               */
} drnn_cell_weights;

/* ---- packing: once per model, at load ---------------------------------- */
/* Bytes of the packed form of a stack's weights for the running ISA, or 0
 * with *err set if the description is invalid. */
size_t drnn_rnn_packed_size(const drnn_rnn_desc *desc, int *err);

/* Repack weights (an array of L*D entries) into `packed` (at least
 * drnn_rnn_packed_size bytes; any alignment) in the layout the running ISA's
 * kernels stream.  The packed form is valid only with the same description
 * and in the same process (it depends on the ISA chosen at import). */
int drnn_rnn_pack(const drnn_rnn_desc *desc, const drnn_cell_weights *weights,
                  void *packed, size_t packed_bytes);

/* ---- running ------------------------------------------------------------ */
/* Bytes of workspace drnn_rnn_forward needs for this batch, length and
 * thread count, or 0 with *err set (when err != NULL) if the description is
 * invalid or the size overflows. */
size_t drnn_rnn_workspace_size(const drnn_rnn_desc *desc, int64_t batch,
                               int64_t steps, int num_threads, int *err);

/*
 * Run the whole stack over a batch of sequences.
 *
 *   desc, packed       the stack and its weights as drnn_rnn_pack left them
 *   batch, steps       B >= 0 and T >= 0
 *   x                  input, element (b, t, k) at x[b*x_stride_b + t*x_stride_t + k],
 *                      k < input_size (features contiguous)
 *   lengths            (B) valid steps per sequence, each in [0, T]; NULL = all T
 *   h0                 (L*D, B, H_out) initial hidden states or NULL for zeros
 *   c0                 (L*D, B, H) LSTM initial cell states or NULL for zeros
 *   y                  output, element (b, t, j) at y[b*y_stride_b + t*y_stride_t + j],
 *                      j < D*H_out; steps past a sequence's length are zeroed
 *   hn                 (L*D, B, H_out) final hidden states, or NULL
 *   cn                 (L*D, B, H) LSTM final cell states, or NULL
 *   num_threads        at most this many threads (>= 1); fewer when the work
 *                      is too small to pay for them.  Results do not depend on it.
 *   workspace          at least drnn_rnn_workspace_size(.., num_threads, ..)
 *                      bytes, any alignment; contents on entry are irrelevant
 *
 * Flush-to-zero / denormals-are-zero are set for the duration of the call on
 * every thread it uses, and each thread's mode is restored.
 * Returns DRNN_OK or an error code.
 */
int drnn_rnn_forward(const drnn_rnn_desc *desc, const void *packed,
                     int64_t batch, int64_t steps,
                     const float *x, int64_t x_stride_b, int64_t x_stride_t,
                     const int32_t *lengths,
                     const float *h0, const float *c0,
                     float *y, int64_t y_stride_b, int64_t y_stride_t,
                     float *hn, float *cn,
                     int num_threads, void *workspace, size_t workspace_bytes);

/* ---- dense layers ----------------------------------------------------- */
/* Bytes of a packed dense weight (and bias), or 0 for invalid sizes. */
size_t drnn_dense_packed_size(int64_t in_features, int64_t out_features);
/* Pack w (out, in) row-major, as torch.nn.Linear stores it, and b (out) or NULL. */
int drnn_dense_pack(int64_t in_features, int64_t out_features, const float *w,
                    const float *b, void *packed, size_t packed_bytes);
/*
 * y (rows, out) = act(x (rows, in) . w^T + b) with w, b from drnn_dense_pack;
 * x rows at x_stride apart, y rows at y_stride apart.  softmax: 0 none,
 * DRNN_SOFTMAX or DRNN_LOG_SOFTMAX over each output row after act (use
 * DRNN_ACT_LINEAR for a plain softmax head).
 */
enum { DRNN_SOFTMAX = 1, DRNN_LOG_SOFTMAX = 2 };
int drnn_dense_forward(int64_t rows, int64_t in_features, int64_t out_features,
                       const float *x, int64_t x_stride, const void *packed,
                       drnn_act act, int softmax,
                       float *y, int64_t y_stride, int num_threads);

/* Apply an activation elementwise in place (used by tests and the API). */
int drnn_activation(drnn_act act, float *x, int64_t n);

/* ---- CPU features and dispatch ----------------------------------------- */
/* Choose the kernels: "auto" (the best this CPU supports) or an ISA name.
 * Returns DRNN_OK, or DRNN_ERR_ARGUMENT for a name this build does not know
 * or this CPU cannot run. */
int drnn_select_isa(const char *name);
/* The instruction sets this build and CPU can run, space-separated. */
const char *drnn_isa_list(void);
/* CPUs this process may run on (its affinity mask). */
int drnn_cpu_count(void);
/* Name of the instruction set the kernels use ("portable", ...). */
const char *drnn_isa_name(void);
/* Features the CPU and OS support, as a space-separated list. */
const char *drnn_cpu_features(void);

#ifdef __cplusplus
}
#endif
#endif /* DRNN_H */
