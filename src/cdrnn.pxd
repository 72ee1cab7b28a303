# cdrnn.pxd -- csrc/drnn.h for Cython, declaration for declaration.
# Every kernel is noexcept nogil: the C layer never touches Python.
from libc.stdint cimport int32_t, int64_t

cdef extern from "drnn.h" nogil:
    enum:
        DRNN_OK
        DRNN_ERR_ARGUMENT
        DRNN_ERR_WORKSPACE
        DRNN_ERR_LENGTH
        DRNN_ERR_OVERFLOW

    const char *drnn_strerror(int code) noexcept

    ctypedef enum drnn_act_kind:
        DRNN_ACT_SIGMOID
        DRNN_ACT_TANH
        DRNN_ACT_RELU
        DRNN_ACT_LINEAR
        DRNN_ACT_HARD_SIGMOID
        DRNN_ACT_AFFINE
        DRNN_ACT_LEAKY_RELU
        DRNN_ACT_THRESHOLDED_RELU
        DRNN_ACT_SCALED_TANH
        DRNN_ACT_ELU
        DRNN_ACT_SOFTSIGN
        DRNN_ACT_SOFTPLUS
        DRNN_ACT_COUNT_

    ctypedef struct drnn_act:
        int32_t kind
        float alpha
        float beta

    ctypedef enum drnn_cell_kind:
        DRNN_CELL_RNN
        DRNN_CELL_LSTM
        DRNN_CELL_GRU

    ctypedef struct drnn_rnn_desc:
        int32_t cell
        int32_t input_size
        int32_t hidden_size
        int32_t proj_size
        int32_t num_layers
        int32_t num_directions
        int32_t reverse
        int32_t linear_before_reset
        int32_t input_forget
        float clip
        drnn_act act[2][3]

    ctypedef struct drnn_cell_weights:
        const float *w_ih
        const float *w_hh
        const float *b_ih
        const float *b_hh
        const float *w_hr
        const float *peep

    size_t drnn_rnn_packed_size(const drnn_rnn_desc *desc, int *err) noexcept
    int drnn_rnn_pack(const drnn_rnn_desc *desc, const drnn_cell_weights *weights,
                      void *packed, size_t packed_bytes) noexcept

    size_t drnn_rnn_workspace_size(const drnn_rnn_desc *desc, int64_t batch,
                                   int64_t steps, int num_threads, int *err) noexcept

    int drnn_rnn_forward(const drnn_rnn_desc *desc, const void *packed,
                         int64_t batch, int64_t steps,
                         const float *x, int64_t x_stride_b, int64_t x_stride_t,
                         const int32_t *lengths,
                         const float *h0, const float *c0,
                         float *y, int64_t y_stride_b, int64_t y_stride_t,
                         float *hn, float *cn,
                         int num_threads, void *workspace, size_t workspace_bytes) noexcept

    size_t drnn_dense_packed_size(int64_t in_features, int64_t out_features) noexcept
    int drnn_dense_pack(int64_t in_features, int64_t out_features, const float *w,
                        const float *b, void *packed, size_t packed_bytes) noexcept
    int drnn_dense_forward(int64_t rows, int64_t in_features, int64_t out_features,
                           const float *x, int64_t x_stride, const void *packed,
                           drnn_act act, int softmax,
                           float *y, int64_t y_stride, int num_threads) noexcept

    int drnn_activation(drnn_act act, float *x, int64_t n) noexcept

    int drnn_select_isa(const char *name) noexcept
    const char *drnn_isa_list() noexcept
    int drnn_cpu_count() noexcept
    const char *drnn_isa_name() noexcept
    const char *drnn_cpu_features() noexcept
