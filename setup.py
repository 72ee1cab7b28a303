"""Build drnn's extension: the C kernels in csrc/ and the Cython layer in src/.

No -march=native: the wheel must run on any x86-64 (and the portable C path
builds on any CPU).  Instruction-set variants, when added, get their own
per-file flags and are chosen at run time by csrc/cpu.c.
"""
import glob
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", "*.c")))

extra_compile_args = ["-O3", "-fno-math-errno", "-Wall", "-Wno-unused-function"]
if os.environ.get("DRNN_SANITIZE"):
    # DRNN_SANITIZE=1 pip install -e .  builds with ASan + UBSan for testing.
    extra_compile_args += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]

ext = Extension(
    "drnn._core",
    sources=["src/_core.pyx"] + CSRC,
    include_dirs=["csrc", "src", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=extra_compile_args,
    extra_link_args=["-fsanitize=address,undefined"] if os.environ.get("DRNN_SANITIZE") else [],
    depends=glob.glob("csrc/*.h") + ["src/cdrnn.pxd"],
)

setup(
    ext_modules=cythonize([ext], include_path=["src"], language_level=3,
                          compiler_directives={"embedsignature": True}),
)
