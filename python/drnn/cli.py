"""The drnn command line.

    drnn info FILE                       what drnn recovered from a model file
    drnn convert FILE OUT.safetensors    write it in drnn's own format
    drnn demo                            generate text with the bundled character LM
    drnn predict MODEL IN.npy -o OUT.npy run any loadable model on an array
    drnn bench [MODEL]                   time drnn (and PyTorch / ONNX Runtime)

Options that a file cannot carry (--nonlinearity, --last-step-only,
--dense-activations for PyTorch state_dicts; --architecture for plain weight
files; --ignore-masking for Keras) go to the loader.  Each subcommand
reports errors as one line on stderr and a non-zero exit status, never a
traceback.
"""
import argparse
import json
import os
import sys
import time

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
BUNDLED_MODEL = os.path.join(DATA_DIR, "charlm.safetensors")
BUNDLED_VOCAB = os.path.join(DATA_DIR, "charlm_vocab.json")


class CliError(Exception):
    """A user error the command line reports as one line."""


def _load_options(args):
    options = {}
    if getattr(args, "nonlinearity", None):
        options["nonlinearity"] = args.nonlinearity
    if getattr(args, "last_step_only", False):
        options["return_sequences"] = False
    if getattr(args, "dense_activations", None):
        options["dense_activations"] = [a.strip() for a in args.dense_activations.split(",")]
    if getattr(args, "ignore_masking", False):
        options["ignore_masking"] = True
    if getattr(args, "timeout", None):
        options["timeout"] = args.timeout
    if getattr(args, "architecture", None):
        with open(args.architecture, encoding="utf-8") as f:
            options["architecture"] = f.read()
    return options


def _describe(model, path):
    import drnn
    lines = []
    source = getattr(model, "source", None) or {}
    fmt = source.get("format", "drnn")
    lines.append(f"{path}: {fmt} model, {model.num_parameters:,} parameters")
    for key in ("read", "inferred", "defaulted"):
        for item in source.get(key) or []:
            lines.append(f"  {key}: {item}")
    if hasattr(model, "describe"):           # ONNX graphs describe themselves
        lines.extend("  " + line for line in model.describe().splitlines())
    else:
        lines.append("input: " + ("token ids" if model.takes_tokens
                                  else f"{model.input_size} features per step"))
        for i, layer in enumerate(model.layers):
            lines.append(f"  [{i}] {layer!r}  ({layer.num_parameters:,} parameters)")
        lines.append(f"output: {model.output_size} features"
                     + (" per step" if model.returns_sequences else " (last step only)"))
    lines.append(f"kernels: {drnn.cpu_info()['isa']}")
    return "\n".join(lines)


def _info(args):
    import drnn
    model = drnn.load(args.file, **_load_options(args))
    print(_describe(model, args.file))
    return 0


def _convert(args):
    import drnn
    from .errors import UnsupportedError
    if not args.output.lower().endswith(".safetensors"):
        raise UnsupportedError(f"{args.output}: drnn's format is a .safetensors file")
    model = drnn.load(args.file, **_load_options(args))
    if not isinstance(model, drnn.DRNN):
        # An ONNX graph or a Keras model with masking: to_drnn() gives the
        # equivalent stack, or raises UnsupportedError saying why there is none.
        to_drnn = getattr(model, "to_drnn", None)
        if to_drnn is None:
            raise UnsupportedError(f"{args.file}: a {type(model).__name__} cannot be written in "
                                   "drnn's format")
        try:
            model = to_drnn()
        except UnsupportedError as e:
            msg = str(e)
            raise UnsupportedError(msg if msg.startswith(args.file) else
                                   f"{args.file}: {msg}") from None
    model.save(args.output)
    n = len(model.layers)
    print(f"wrote {args.output}: {n} layer{'s' if n != 1 else ''}, "
          f"{model.num_parameters:,} parameters")
    for note in (getattr(model, "source", None) or {}).get("converted", []):
        print(f"  {note}")
    return 0


# -- demo ------------------------------------------------------------------
def _bundled():
    """-> (model, chars, record) of the bundled character-level LM."""
    import drnn
    for path in (BUNDLED_MODEL, BUNDLED_VOCAB):
        if not os.path.exists(path):
            raise CliError(f"{path}: the bundled model is missing from this installation "
                           "(run scripts/train_charlm.py, or reinstall drnn)")
    model = drnn.load(BUNDLED_MODEL)
    try:
        with open(BUNDLED_VOCAB, encoding="utf-8") as f:
            record = json.load(f)
        chars = record["chars"]
    except (ValueError, KeyError, TypeError) as e:
        raise CliError(f"{BUNDLED_VOCAB}: not a readable vocabulary ({e})") from None
    return model, chars, record


def _demo(args):
    import numpy as np
    import drnn
    if args.length < 0:
        raise CliError(f"--length must be >= 0, got {args.length}")
    if not args.temperature > 0:
        raise CliError(f"--temperature must be > 0, got {args.temperature}")
    if not args.prompt:
        raise CliError("--prompt must not be empty")
    model, chars, record = _bundled()
    index = {c: i for i, c in enumerate(chars)}
    unknown = sorted({c for c in args.prompt if c not in index})
    if unknown:
        raise CliError(f"--prompt: characters not in the model's vocabulary: {''.join(unknown)!r}")
    rng = np.random.default_rng(args.seed)
    stream = model.stream()
    logits = np.empty(model.output_size, np.float32)
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    elapsed = 0.0
    steps = 0
    for c in args.prompt:                           # prime the state with the prompt
        t = time.perf_counter()
        stream.step(index[c], out=logits)
        elapsed += time.perf_counter() - t
        steps += 1
    for _ in range(args.length):
        z = logits.astype(np.float64) / args.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        tok = int(rng.choice(len(p), p=p))
        out.write(chars[tok])
        out.flush()
        t = time.perf_counter()
        stream.step(tok, out=logits)
        elapsed += time.perf_counter() - t
        steps += 1
    out.write("\n\n")
    per_step = elapsed / steps
    print(f"-- {steps} stream steps ({len(args.prompt)} prompt + {args.length} generated): "
          f"{1 / per_step:,.0f} steps/s, {per_step * 1e6:.1f} us per step "
          f"(kernels: {drnn.cpu_info()['isa']}; model: {model.num_parameters:,} parameters, "
          f"validation {record.get('val_bpc', '?')} bits/char)")
    return 0


# -- predict -----------------------------------------------------------------
def _load_model(path, args=None):
    import drnn
    if not os.path.exists(path):
        raise CliError(f"{path}: no such model file")
    return drnn.load(path, **(_load_options(args) if args is not None else {}))


def _load_npy(path, what):
    import numpy as np
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file ({what})") from None
    except OSError as e:
        raise CliError(f"{path}: cannot read it ({what}): {e.strerror or e}") from None
    if magic != b"\x93NUMPY":
        raise CliError(f"{path}: not an .npy file ({what}; write one with numpy.save)")
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file ({what})") from None
    except (ValueError, OSError, EOFError) as e:
        raise CliError(f"{path}: not a readable .npy array ({what}): "
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


class _Progress:
    """A one-line progress bar on stderr (only drawn when there is more than one batch)."""

    def __init__(self, total, enabled):
        self.total, self.enabled, self.t0 = total, enabled and total > 1, time.perf_counter()

    def update(self, done, seqs):
        if not self.enabled:
            return
        width = 30
        fill = int(width * done / self.total)
        rate = seqs / max(time.perf_counter() - self.t0, 1e-9)
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} batches "
                         f"({rate:,.0f} seq/s)")
        if done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _predict(args):
    import numpy as np
    model = _load_model(args.model, args)
    x = _load_npy(args.input, "input")
    if x.dtype.kind not in "iuf":
        raise CliError(f"{args.input}: expected a numeric array, got dtype {x.dtype}")
    lengths = None
    if args.lengths:
        lengths = _load_npy(args.lengths, "lengths")
        if lengths.dtype.kind not in "iu" or lengths.ndim != 1:
            raise CliError(f"{args.lengths}: expected a 1-D integer array of lengths, got "
                           f"dtype {lengths.dtype} shape {lengths.shape}")
    tokens = getattr(model, "takes_tokens", False)
    batched_rank = 2 if tokens else 3
    if x.ndim not in (batched_rank - 1, batched_rank):
        form = "(batch, time) or (time,) token ids" if tokens else \
            f"(batch, time, {getattr(model, 'input_size', 'features')}) or (time, features)"
        raise CliError(f"{args.input}: expected shape {form}, got {x.shape}")
    if x.ndim == batched_rank and lengths is not None and lengths.shape[0] != x.shape[0]:
        raise CliError(f"{args.lengths}: {lengths.shape[0]} lengths for a batch of {x.shape[0]}")
    kw = {"num_threads": args.num_threads} if args.num_threads else {}

    def run(xb, lb):
        try:
            return model.predict(xb, lengths=lb, **kw) if lb is not None else model.predict(xb, **kw)
        except Exception as e:
            from .errors import DrnnError
            if isinstance(e, (DrnnError, ValueError, TypeError)):
                raise CliError(f"{args.input}: {e}") from None
            raise

    if x.ndim < batched_rank:
        y = run(x, None if lengths is None else lengths)
    else:
        B = x.shape[0]
        bs = args.batch_size or B
        starts = list(range(0, B, bs)) or [0]
        progress = _Progress(len(starts), not args.quiet)
        parts = []
        for k, s in enumerate(starts):
            parts.append(run(x[s:s + bs], None if lengths is None else lengths[s:s + bs]))
            progress.update(k + 1, min(s + bs, B))
        if isinstance(parts[0], tuple):
            # Several outputs (a Keras Bidirectional with merge_mode=None):
            # each joined over the batch chunks, then stacked on a new axis 0.
            y = np.stack([np.concatenate(p, axis=0) for p in zip(*parts)])
        else:
            y = np.concatenate(parts, axis=0) if len(parts) > 1 else np.asarray(parts[0])
    out = args.output
    try:
        np.save(out, np.asarray(y, dtype=np.float32))
    except OSError as e:
        raise CliError(f"{out}: cannot write the output ({e.strerror or e})") from None
    if not out.endswith(".npy"):
        out += ".npy"
    if not args.quiet:
        print(f"wrote {out}: {np.asarray(y).shape} float32")
    return 0


# -- bench -------------------------------------------------------------------
def _bench(args):
    import drnn
    from . import _bench
    if args.model:
        model = _load_model(args.model, args)
        name = args.model
    else:
        model, _, _ = _bundled()
        name = "bundled character LM (" + os.path.basename(BUNDLED_MODEL) + ")"
    steps = args.steps
    shapes = [(1, steps), (16, steps)] if not args.batch else [(args.batch, steps)]
    threads = args.num_threads or drnn.cpu_info()["num_threads"]
    print(f"model: {name}, {model.num_parameters:,} parameters; kernels: "
          f"{drnn.cpu_info()['isa']}; {threads} thread(s); median of {args.repeats} runs",
          flush=True)
    inputs, results, notes = _bench.run(model, shapes, args.repeats, threads,
                                        peers=not args.drnn_only)
    frameworks = ["drnn"] + [f for f in ("torch", "onnxruntime")
                             if any(f in r for r in results.values())]
    head = f"{'input (batch x time)':<22}" + "".join(f"{f:>16}" for f in frameworks)
    print(head)
    print("-" * len(head))
    for label, _ in inputs:
        row = f"{label:<22}"
        for f in frameworks:
            sec = results[label].get(f, (None,))[0]
            row += f"{'-' if sec is None else f'{sec * 1e3:.3f} ms':>16}"
        print(row)
    for label, _ in inputs:
        base = results[label]["drnn"][0]
        row = f"{'time/drnn ' + label:<22}{'1.00x':>16}"
        for f in frameworks[1:]:
            sec = results[label].get(f, (None,))[0]
            row += f"{'-' if sec is None else f'{sec / base:.2f}x':>16}"
        if len(frameworks) > 1:
            print(row)
    diffs = [f"{f} {max(results[l][f][1] for l, _ in inputs if f in results[l]):.2e}"
             for f in frameworks[1:]]
    if diffs:
        print("max |output - drnn|: " + ", ".join(diffs))
    for note in notes:
        print("note: " + note)
    return 0


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid positive integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_load_options(p):
    p.add_argument("--architecture", metavar="JSON",
                   help="for a plain .safetensors/.npz of weights: a JSON file with the "
                        "architecture (DRNN.config()); for a Keras save_weights .h5: the "
                        "Keras model config")
    p.add_argument("--nonlinearity", choices=("tanh", "relu"),
                   help="PyTorch nn.RNN layers' nonlinearity (a state_dict does not say; "
                        "default tanh)")
    p.add_argument("--last-step-only", action="store_true",
                   help="PyTorch: the recurrent layers return only the last step")
    p.add_argument("--dense-activations", metavar="A,B,...",
                   help="PyTorch: activation after each Linear layer, in order "
                        "(identity, relu, tanh, sigmoid, softmax, log_softmax)")
    p.add_argument("--ignore-masking", action="store_true",
                   help="Keras: load a model with Masking / Embedding(mask_zero=True) as the "
                        "plain stack, without its masking")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="parse the file in a child process and give up after SECONDS "
                        "(for untrusted files: a damaged HDF5 file can hang its library)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="drnn", description="Fast CPU inference for RNNs.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print what drnn recovers from a model file")
    p.add_argument("file")
    _add_load_options(p)
    p.set_defaults(func=_info)
    p = sub.add_parser("convert", help="write a model file in drnn's own format")
    p.add_argument("file")
    p.add_argument("output", help="OUT.safetensors")
    _add_load_options(p)
    p.set_defaults(func=_convert)

    p = sub.add_parser("demo", help="generate text with the bundled character-level LSTM, "
                                    "one stream step per character",
                       description="Generate text with the bundled character-level language "
                                   "model (Embedding -> 2-layer LSTM -> Linear, trained on the "
                                   "pydoc_data topics), printing each character as the stream "
                                   "produces it, then the stream's speed.")
    p.add_argument("--prompt", default="The ", help="text that primes the state (default %(default)r)")
    p.add_argument("--length", type=int, default=300, help="characters to generate (default 300)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="softmax temperature, > 0 (default 0.8)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("predict", help="run a model on an .npy array and save the output",
                       description="Run MODEL (any file drnn.load reads) on INPUT.npy -- "
                                   "(batch, time, features) or (time, features); token ids "
                                   "(batch, time) or (time,) for a model starting with an "
                                   "Embedding -- and save the float32 output to OUT.npy.")
    p.add_argument("model")
    p.add_argument("input", metavar="INPUT.npy")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npy")
    p.add_argument("--lengths", metavar="FILE.npy", help="1-D integer array: valid steps per "
                   "sequence of a right-padded batch")
    p.add_argument("--batch-size", type=_positive_int, metavar="N",
                   help="run N sequences at a time (default: all at once)")
    p.add_argument("--num-threads", type=_positive_int, metavar="N", help="threads to use")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    _add_load_options(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser("bench", help="time a model in drnn and, if installed, PyTorch and ONNX Runtime",
                       description="Time MODEL (default: the bundled character LM) on random "
                                   "input of batch 1 and 16 (x --steps steps) in drnn and -- for "
                                   "a drnn stack, when installed -- the same model rebuilt in "
                                   "PyTorch and exported to ONNX Runtime; print a table.")
    p.add_argument("model", nargs="?", help="a model file (default: the bundled one)")
    p.add_argument("--steps", type=_positive_int, default=100, help="time steps (default 100)")
    p.add_argument("--batch", type=_positive_int, help="one batch size instead of 1 and 16")
    p.add_argument("--repeats", type=_positive_int, default=20,
                   help="timed runs per cell; the median is shown (default 20)")
    p.add_argument("--num-threads", type=_positive_int, metavar="N",
                   help="threads for every framework (default: drnn's default)")
    p.add_argument("--drnn-only", action="store_true", help="skip PyTorch and ONNX Runtime")
    _add_load_options(p)
    p.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    from .errors import DrnnError
    try:
        return args.func(args)
    except (DrnnError, CliError, OSError, ImportError) as e:
        print(f"drnn: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("drnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
