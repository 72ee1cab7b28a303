"""The drnn command line.

    drnn info FILE                       what drnn recovered from a model file
    drnn convert FILE OUT.safetensors    write it in drnn's own format

Options that a file cannot carry (--nonlinearity, --last-step-only,
--dense-activations for PyTorch state_dicts; --architecture for plain weight
files) go to the loader.  Each subcommand
reports errors as one line on stderr and a non-zero exit status, never a
traceback.
"""
import argparse
import sys


def _load_options(args):
    options = {}
    if getattr(args, "nonlinearity", None):
        options["nonlinearity"] = args.nonlinearity
    if getattr(args, "last_step_only", False):
        options["return_sequences"] = False
    if getattr(args, "dense_activations", None):
        options["dense_activations"] = [a.strip() for a in args.dense_activations.split(",")]
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
    model = drnn.load(args.file, **_load_options(args))
    if not isinstance(model, drnn.DRNN):
        raise UnsupportedError(f"{args.file}: this {type(model).__name__} runs graph operations "
                               "around its recurrent layers that drnn's own format cannot hold; "
                               "load the original file instead")
    if not args.output.lower().endswith(".safetensors"):
        raise UnsupportedError(f"{args.output}: drnn's format is a .safetensors file")
    model.save(args.output)
    print(f"wrote {args.output}: {len(model.layers)} layers, {model.num_parameters:,} parameters")
    return 0


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
                        "(identity, relu, tanh, sigmoid, softmax)")


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
    args = parser.parse_args(argv)
    from .errors import DrnnError
    try:
        return args.func(args)
    except (DrnnError, OSError, ImportError) as e:
        print(f"drnn: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
