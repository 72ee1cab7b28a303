"""drnn.load(path, timeout=...): parse a file in a child process.

Every reader refuses a bad file with a DrnnError, but a reader can only be
as robust as the libraries under it: the HDF5 C library (under h5py) loops
forever on some damaged files, and nothing in Python can interrupt a C
loop.  With a timeout, drnn.load runs the reader in a fresh ("spawn")
child process and waits at most that long; the child sends back the model
(models pickle as architecture + raw weights) or the error, and a child
that overruns is killed.  The child runs only drnn's own readers, the same
code as an in-process load, so what it sends back is drnn's own objects.
"""
import multiprocessing

from ..errors import DrnnError, FormatError


def _child(conn, path, architecture, options):
    from . import load
    try:
        model = load(path, architecture=architecture, **options)
        conn.send(("ok", model))
    except DrnnError as e:
        conn.send(("error", type(e).__name__, str(e)))
    except BaseException as e:        # not a drnn error: report it as the file's fault
        conn.send(("error", "FormatError", f"{path}: {type(e).__name__}: {e}"))
    finally:
        conn.close()


def load_isolated(path, architecture, options, timeout):
    from .. import errors
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, path, architecture, options), daemon=True,
                       name="drnn-load")
    proc.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise FormatError(f"{path}: loading did not finish within {timeout:g} s and was "
                              "stopped (a damaged file can make a parsing library loop)")
        try:
            reply = receive.recv()
        except EOFError:
            raise FormatError(f"{path}: the loader process ended without an answer (exit code "
                              f"{proc.exitcode})") from None
    finally:
        receive.close()
        if proc.is_alive():
            proc.kill()
        proc.join()
    if reply[0] == "ok":
        return reply[1]
    cls = getattr(errors, reply[1], None)
    if not (isinstance(cls, type) and issubclass(cls, DrnnError)):
        cls = FormatError
    raise cls(reply[2])
