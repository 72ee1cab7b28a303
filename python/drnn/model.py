"""drnn.DRNN: a stack of layers and its predict().

predict() turns every accepted input form into one padded, batch-first
float32 (or int64 token id) array plus per-sequence lengths, runs the layers
in order, and turns the result back into the caller's form:

    3-D (batch, time, features)        -> (batch, time, out)
    2-D (time, features)               -> (time, out)   one sequence
    list of (time_i, features)         -> list of (time_i, out)
    token ids (batch, time) / (time,) / list of 1-D when layer 0 is an Embedding

Recurrent state follows PyTorch's layout: per recurrent layer, h_n of shape
(layers*directions, batch, H_out) and for an LSTM also c_n (layers*directions,
batch, hidden); for an unbatched input the batch axis is absent.  A model
with one recurrent layer takes and returns that entry itself (h_n, or the
tuple (h_n, c_n)); a model with several takes and returns a list of them.
"""
import numpy as np

from . import _core
from .errors import DtypeError, ShapeError, UnsupportedError
from .layers import Dense, Embedding, Layer, Recurrent

__all__ = ["DRNN"]


class DRNN:
    """A deep recurrent network: Embedding?, recurrent layers, Dense layers, chained in order.

    Models are immutable after construction and safe to share across threads.
    """

    def __init__(self, layers):
        layers = list(layers)
        if not layers:
            raise ShapeError("DRNN: expected at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise UnsupportedError(f"DRNN: layer {i} is a {type(layer).__name__}, "
                                       "expected a drnn layer (Embedding, RNN, LSTM, GRU, Dense)")
            if isinstance(layer, Embedding) and i != 0:
                raise UnsupportedError(f"DRNN: an Embedding must be the first layer, found at {i}")
        sequence = True     # does the running value still have a time axis?
        for i in range(1, len(layers)):
            prev, layer = layers[i - 1], layers[i]
            if layer.input_size != prev.output_size:
                raise ShapeError(f"DRNN: layer {i} ({layer.kind}) expects {layer.input_size} "
                                 f"features but layer {i - 1} ({prev.kind}) gives {prev.output_size}")
        for i, layer in enumerate(layers):
            if isinstance(layer, Recurrent):
                if not sequence:
                    raise ShapeError(f"DRNN: layer {i} ({layer.kind}) needs sequences but an "
                                     "earlier layer returns only the last step")
                sequence = layer.return_sequences
        self.layers = tuple(layers)
        self._recurrent = [i for i, l in enumerate(layers) if isinstance(l, Recurrent)]
        self._returns_sequences = sequence
        self._slice_row_step = self._scratch_per_row_step()
        # Set by loaders: where the model came from, for `drnn info` --
        # {"format", "file", "read": [...], "inferred": [...], "defaulted": [...]}.
        self.source = None

    # -- description -------------------------------------------------------
    @property
    def takes_tokens(self):
        return isinstance(self.layers[0], Embedding)

    @property
    def input_size(self):
        """Features per step (None when the model takes token ids)."""
        return self.layers[0].input_size

    @property
    def output_size(self):
        return self.layers[-1].output_size

    @property
    def returns_sequences(self):
        return self._returns_sequences

    @property
    def num_parameters(self):
        return sum(l.num_parameters for l in self.layers)

    def config(self):
        return {"layers": [l.config() for l in self.layers]}

    def __repr__(self):
        inner = ",\n  ".join(repr(l) for l in self.layers)
        return f"DRNN([\n  {inner}\n])"

    def __reduce__(self):
        # The layers pickle as config + raw float32 weights (Layer.__reduce__):
        # a pickle costs about the weight bytes, and unpickling rebuilds the
        # same layers without inferring anything.  Extra attributes (source)
        # travel as state; the derived ones are rebuilt by __init__.
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("layers", "_recurrent", "_returns_sequences", "_slice_row_step")}
        return (type(self), (list(self.layers),), state or None)

    def save(self, path):
        """Write the model in drnn's own format (safetensors + architecture JSON)."""
        from .io.native import save
        save(self, path)

    # -- input handling ----------------------------------------------------
    def _check_dtype(self, arr, what):
        if self.takes_tokens:
            if arr.dtype.kind not in "iu":
                raise DtypeError(f"{what}: this model starts with an Embedding and takes integer "
                                 f"token ids, got dtype {arr.dtype}")
            if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size \
                    and int(arr.max()) > np.iinfo(np.int64).max:     # would wrap to negative
                n = self.layers[0].num_embeddings
                raise ShapeError(f"{what}: token id {int(arr.max())} is outside [0, {n})")
            return arr.astype(np.int64, copy=False)
        if arr.dtype.kind not in "fiub" or arr.dtype.kind == "b":
            raise DtypeError(f"{what}: expected real numbers (float32 preferred), got dtype {arr.dtype}")
        return arr

    def _prepare(self, x, lengths):
        """-> (padded batch, lengths int32 or None, form, per-sequence lengths)."""
        feat_rank = 0 if self.takes_tokens else 1    # trailing axes per step
        F = self.input_size
        if isinstance(x, (list, tuple)):
            if lengths is not None:
                raise ShapeError("predict: a list of sequences carries its own lengths; "
                                 "do not pass lengths=")
            if not x:
                raise ShapeError("predict: expected at least one sequence, got an empty list")
            seqs = []
            for i, s in enumerate(x):
                s = self._check_dtype(np.asarray(s), f"sequence {i}")
                if s.ndim != 1 + feat_rank:
                    raise ShapeError(f"sequence {i}: expected "
                                     + ("a 1-D array of token ids" if self.takes_tokens
                                        else f"a 2-D (time, {F}) array") + f", got shape {s.shape}")
                if not self.takes_tokens and s.shape[1] != F:
                    raise ShapeError(f"sequence {i}: expected {F} features, got {s.shape[1]}")
                seqs.append(s)
            lens = np.array([len(s) for s in seqs], dtype=np.int32)
            T = int(lens.max())
            dtype = np.int64 if self.takes_tokens else np.float32
            batch = np.zeros((len(seqs), T) + ((F,) if not self.takes_tokens else ()), dtype)
            for i, s in enumerate(seqs):
                batch[i, :len(s)] = s
            return batch, lens, "list", lens

        x = self._check_dtype(np.asarray(x), "x")
        given_shape = x.shape
        if x.ndim == 1 + feat_rank:
            form, x = "single", x[None]
            if lengths is not None:
                raise ShapeError("predict: lengths= is for a batch; a single sequence has its own length")
        elif x.ndim == 2 + feat_rank:
            form = "batch"
        else:
            want = "(batch, time) or (time,) token ids" if self.takes_tokens else \
                f"(batch, time, {F}) or (time, {F})"
            raise ShapeError(f"x: expected shape {want}, got {x.shape}")
        if not self.takes_tokens and x.shape[-1] != F:
            raise ShapeError(f"x: expected {F} features on the last axis, got {x.shape[-1]} "
                             f"(shape {given_shape})")
        B, T = x.shape[0], x.shape[1]
        if lengths is not None:
            lens = np.asarray(lengths)
            if lens.dtype.kind not in "iu":
                raise DtypeError(f"lengths: expected integers, got dtype {lens.dtype}")
            if lens.shape != (B,):
                raise ShapeError(f"lengths: expected shape ({B},), one per sequence, got {lens.shape}")
            if B and (lens.min() < 1 or lens.max() > T):
                raise ShapeError(f"lengths: each must be in [1, {T}] (the time axis), got "
                                 f"min {lens.min()} max {lens.max()}")
            lens = lens.astype(np.int32)
            if B and lens.min() == T:
                lens = None          # all full: the fast path, same numbers
        else:
            lens = None
        if not self.takes_tokens:
            x = np.ascontiguousarray(x, dtype=np.float32)
        return x, lens, form, None

    def _prepare_state(self, initial_state, B, unbatched):
        """User state (PyTorch layout) -> list per recurrent layer of [h0, (c0)] (L*D, B, .)."""
        rec = [self.layers[i] for i in self._recurrent]
        if initial_state is None:
            return [None] * len(rec)
        if not rec:
            raise ShapeError("initial_state: this model has no recurrent layer")
        entries = [initial_state] if len(rec) == 1 else initial_state
        if len(rec) > 1 and (not isinstance(entries, (list, tuple)) or len(entries) != len(rec)):
            raise ShapeError(f"initial_state: expected a list of {len(rec)} entries, one per "
                             "recurrent layer")
        out = []
        for layer, entry in zip(rec, entries):
            parts = list(entry) if isinstance(entry, (tuple, list)) else [entry]
            shapes = layer.state_shapes
            names = ["h_0", "c_0"][:len(shapes)]
            if len(parts) != len(shapes):
                raise ShapeError(f"initial_state for {layer.kind}: expected "
                                 + (" and ".join(names)) + f" ({len(shapes)} arrays), got {len(parts)}")
            arrays = []
            for name, part, (LD, W) in zip(names, parts, shapes):
                arr = np.asarray(part)
                if arr.dtype.kind not in "fiu":
                    raise DtypeError(f"initial_state {name}: expected floats, got dtype {arr.dtype}")
                want = (LD, W) if unbatched else (LD, B, W)
                if arr.shape != want:
                    raise ShapeError(f"initial_state {name} for {layer.kind}: expected shape {want} "
                                     f"(layers*directions, {'' if unbatched else 'batch, '}size), "
                                     f"got {arr.shape}")
                if unbatched:
                    arr = arr[:, None, :]
                arrays.append(np.ascontiguousarray(arr, dtype=np.float32))
            out.append(arrays)
        return out

    # -- running -----------------------------------------------------------
    def stream(self, batch_size=1, num_threads=1):
        """A stateful Stream for step-at-a-time inference (see drnn.stream):
        ``s.step(x_t)``, ``s.run(chunk)``, ``s.reset()``, ``s.state``.
        Each stream has its own state; the model can feed many at once.
        num_threads: threads for each step() (see drnn.stream)."""
        from .stream import Stream
        return Stream(self, batch_size, num_threads=num_threads)

    def predict(self, x, lengths=None, initial_state=None, return_state=False, num_threads=None):
        """Run the model.  See the module docstring for input forms and state layout.

        x: (batch, time, features), (time, features), or a list of
        (time_i, features) arrays; token ids when the first layer is an
        Embedding.  lengths: valid steps per sequence of a right-padded batch
        (each in [1, time]); outputs past a sequence's length are zero and its
        final state is taken at its own last step.  num_threads caps the
        threads (default: DRNN_NUM_THREADS, else the machine's cores); results
        do not depend on it.  Returns float32 outputs, and the final state too
        when return_state=True.
        """
        batch, lens, form, list_lens = self._prepare(x, lengths)
        B = batch.shape[0]
        states = self._prepare_state(initial_state, B, form == "single")
        if batch.shape[1] == 0 or (list_lens is not None and not list_lens.all()):
            return self._predict_empty(batch, form, list_lens, states, return_state, num_threads)
        step = self._slice_steps(B, batch.shape[1])
        if step is None:
            value, final_states = self._run_layers(batch, lens, states, num_threads)
        else:
            value, final_states = self._run_sliced(batch, lens, states, num_threads, step)
        if lens is not None and value.ndim == 3:
            # Dense heads map padding to their bias: keep padded steps zero.
            mask = np.arange(value.shape[1])[None, :] >= lens[:, None]
            value[mask] = 0.0

        if form == "single":
            out = value[0]
        elif form == "list":
            out = [value[i, :n] if value.ndim == 3 else value[i] for i, n in enumerate(list_lens)]
        else:
            out = value
        if not return_state:
            return out
        return out, self._user_states(final_states, form == "single")

    def _run_layers(self, batch, lens, states, num_threads):
        """Every layer over the padded batch -> (output, per recurrent layer [h_n, (c_n)])."""
        value = batch
        final_states = []
        rec_idx = 0
        for layer in self.layers:
            if isinstance(layer, Recurrent):
                value, st = layer._forward(value, lens, states[rec_idx], num_threads)
                final_states.append(st)
                rec_idx += 1
            else:
                value, _ = layer._forward(value, lens, None, num_threads)
                if isinstance(layer, Embedding):
                    value = np.ascontiguousarray(value, dtype=np.float32)
        return value, final_states

    def _scratch_per_row_step(self):
        """Scratch bytes one more step of one sequence adds to a run, or None
        when the model cannot run in slices of time (see _slice_steps)."""
        rec = [self.layers[i] for i in self._recurrent]
        if not rec or any(l.bidirectional or l.reverse for l in rec):
            return None
        span = 64       # steps: smooths the workspace's 64-byte alignment
        work = max(l._stack.workspace_bytes(1, span + 1) - l._stack.workspace_bytes(1, 1)
                   for l in rec) / span
        return work + 4 * max(l.output_size for l in self.layers)    # a layer's output

    def _slice_steps(self, B, T):
        """Steps per slice of time for a run whose scratch would outgrow
        _core.RUN_SLICE_BYTES, or None to run the sequence in one go.

        The scratch of a recurrent layer (csrc/sequence.c) holds the input
        projection of every step: for a long sequence, several times the
        output's own size (an LSTM 64 at batch 1: 1 KiB a step against 256 B
        of output), kept by the model for the thread afterwards.  A model
        whose recurrent layers all run forward can go through the sequence
        in slices instead, carrying the state from one slice to the next --
        the same bits (a stream's guarantee) with scratch bounded per slice.
        Bidirectional and reverse layers need the whole sequence at once."""
        if self._slice_row_step is None or T < 2:
            return None
        per_step = self._slice_row_step * B
        if per_step * T <= _core.RUN_SLICE_BYTES:
            return None
        return max(1, int(_core.RUN_SLICE_BYTES // per_step))

    def _run_sliced(self, batch, lens, states, num_threads, step):
        """_run_layers over slices of time [t0, t0 + step), the recurrent states
        carried across.  Layers behind one that drops time are Dense only
        (stateless): each slice recomputes them, the last slice's output stays."""
        B, T = batch.shape[0], batch.shape[1]
        states = list(states)
        out = None
        for t0 in range(0, T, step):
            t1 = min(T, t0 + step)
            part = np.ascontiguousarray(batch[:, t0:t1])
            part_lens = None if lens is None else \
                np.clip(lens - t0, 0, t1 - t0).astype(np.int32)
            value, states = self._run_layers(part, part_lens, states, num_threads)
            if not self._returns_sequences:
                out = value
                continue
            if out is None:
                out = np.empty((B, T) + value.shape[2:], np.float32)
            out[:, t0:t1] = value
        return out, states

    @staticmethod
    def _user_states(final_states, unbatched):
        """Per recurrent layer [h, (c)] (L*D, B, .) -> predict()'s return_state layout."""
        user_states = []
        for st in final_states:
            if unbatched:
                st = [s[:, 0, :] for s in st]
            user_states.append(st[0] if len(st) == 1 else tuple(st))
        if len(user_states) == 1:
            user_states = user_states[0]
        return user_states

    def _predict_empty(self, batch, form, list_lens, states, return_state, num_threads):
        """Sequences of zero time steps: an empty output, the initial state as final state.

        A list mixing empty and non-empty sequences runs the non-empty ones as one
        batch (their numbers are the same alone or in a batch) and fills in the rest."""
        if not self._returns_sequences:
            raise ShapeError("x: a sequence of zero time steps has no last step to output "
                             "(this model returns only the last step)")
        rec = [self.layers[i] for i in self._recurrent]
        B = batch.shape[0]
        final = []
        for layer, st in zip(rec, states):
            if st is None:
                st = [np.zeros((LD, B, W), np.float32) for LD, W in layer.state_shapes]
            final.append([np.array(a, dtype=np.float32, copy=True) for a in st])
        empty_out = np.zeros((0, self.output_size), np.float32)
        if form == "list":
            outs = [empty_out.copy() for _ in range(B)]
            keep = np.flatnonzero(list_lens)
            if keep.size:
                seqs = [batch[i, :list_lens[i]] for i in keep]
                sub_state = self._user_states([[a[:, keep] for a in st] for st in final], False) \
                    if final else None
                res = self.predict(seqs, initial_state=sub_state, return_state=bool(final),
                                   num_threads=num_threads)
                ys, sts = res if final else (res, None)
                for i, y in zip(keep, ys):
                    outs[i] = y
                if final:
                    sts = [sts] if len(final) == 1 else sts
                    for st, new in zip(final, sts):
                        new = list(new) if isinstance(new, tuple) else [new]
                        for a, b in zip(st, new):
                            a[:, keep] = b
            out = outs
        elif form == "single":
            out = empty_out
        else:
            out = np.zeros((B, 0, self.output_size), np.float32)
        if not return_state:
            return out
        return out, self._user_states(final, form == "single")
