"""Build drnn's extension: the C kernels in csrc/ and the Cython layer in src/.

The kernel sources (KERNELS) are compiled once per instruction set, each
time with that ISA's flags and its own DRNN_KERNEL_SUFFIX / DRNN_VW, so one
loop written once becomes a portable, an AVX2+FMA and an AVX-512 variant;
csrc/cpu.c picks one at run time.  Everything else is compiled once with
the baseline flags.  Never -march=native: the wheel must run on any x86-64,
and on other CPUs only the portable variant is built.
"""
import glob
import os
import platform

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["csrc/gemm.c", "csrc/lstm.c", "csrc/gru.c", "csrc/rnn.c", "csrc/act.c"]
COMMON = sorted(p for p in glob.glob("csrc/*.c") if p not in KERNELS)

X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
# name -> (vector width in floats, extra compiler flags)
ISAS = {"portable": (4, [])}
if X86:
    ISAS["avx2"] = (8, ["-mavx2", "-mfma"])
    ISAS["avx512"] = (16, ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw", "-mfma"])

SANITIZE = bool(os.environ.get("DRNN_SANITIZE"))
BASE_FLAGS = ["-O3", "-fno-math-errno", "-Wall", "-Wno-unused-function", "-pthread"]
if SANITIZE:
    # DRNN_SANITIZE=1 pip install -e .  builds with ASan + UBSan (see scripts/).
    BASE_FLAGS += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]


class build_ext_isa(build_ext):
    """Compile the kernel sources once per ISA and link all variants in."""

    def build_extension(self, ext):
        objects = []
        for isa, (width, flags) in ISAS.items():
            objects += self.compiler.compile(
                KERNELS,
                output_dir=os.path.join(self.build_temp, "isa-" + isa),
                macros=[("DRNN_KERNEL_SUFFIX", isa), ("DRNN_VW", str(width))],
                include_dirs=["csrc"],
                extra_postargs=BASE_FLAGS + flags,
                depends=glob.glob("csrc/*.h"),
            )
        ext.extra_objects = objects
        super().build_extension(ext)


ext = Extension(
    "drnn._core",
    sources=["src/_core.pyx"] + COMMON,
    include_dirs=["csrc", "src", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    + ([("DRNN_HAVE_X86_VARIANTS", "1")] if X86 else []),
    extra_compile_args=BASE_FLAGS,
    extra_link_args=["-pthread"] + (["-fsanitize=address,undefined"] if SANITIZE else []),
    depends=glob.glob("csrc/*.h") + KERNELS + ["src/cdrnn.pxd"],
)

setup(
    ext_modules=cythonize([ext], include_path=["src"], language_level=3,
                          compiler_directives={"embedsignature": True}),
    cmdclass={"build_ext": build_ext_isa},
)
