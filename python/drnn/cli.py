"""The drnn command line: `drnn info FILE`.

Each subcommand reports errors as one line on stderr and a non-zero exit
status, never a traceback.
"""
import argparse
import sys


def _info(args):
    import drnn
    model = drnn.load(args.file)
    print(f"{args.file}: drnn model, {model.num_parameters:,} parameters")
    print(f"input: {'token ids' if model.takes_tokens else f'{model.input_size} features per step'}")
    for i, layer in enumerate(model.layers):
        print(f"  [{i}] {layer!r}  ({layer.num_parameters:,} parameters)")
    print(f"output: {model.output_size} features"
          + (" per step" if model.returns_sequences else " (last step only)"))
    print(f"kernels: {drnn.cpu_info()['isa']}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="drnn", description="Fast CPU inference for RNNs.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print a model file's architecture")
    p.add_argument("file")
    p.set_defaults(func=_info)
    args = parser.parse_args(argv)
    from .errors import DrnnError
    try:
        return args.func(args)
    except (DrnnError, OSError) as e:
        print(f"drnn: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
