"""Build of coreaug_fast and its one torch extension, coreaug_fast._C.

The C++ CPU sources (csrc/*.cpp) are always built, with OpenMP. The CUDA sources
(csrc/*.cu) are added when torch is a CUDA build and nvcc is found, even with no GPU
present, so that CI at least compiles and links them.

Switches (environment variables):
  COREAUG_CUDA=0          CPU-only build.
  COREAUG_CUDA=1          CUDA build; fail loudly if torch or the toolkit cannot do it.
  TORCH_CUDA_ARCH_LIST    CUDA architectures, default "8.0;9.0+PTX" (PTX: newer GPUs JIT it).
  MAX_JOBS                parallel compile jobs (ninja).

Build with the torch that will run the code: `pip install --no-build-isolation -e .`
"""
import glob
import os
import shutil
import sys
import sysconfig

from setuptools import setup


def _locate_cuda_home() -> None:
    # torch takes the folder above `which nvcc` as the toolkit; where nvcc is a wrapper
    # script (/usr/local/bin/nvcc here) that folder has no CUDA headers or libraries.
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if os.path.isfile(os.path.join(home, "include", "cuda_runtime_api.h")):
            os.environ["CUDA_HOME"] = home
            return


_locate_cuda_home()  # before torch.utils.cpp_extension reads it

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - explained to the user
    sys.exit(
        "coreaug_fast builds a torch extension and needs torch importable at build time.\n"
        "Install torch first, then build without isolation: pip install --no-build-isolation -e ."
    )

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    switch = os.environ.get("COREAUG_CUDA", "").strip()
    can = torch.version.cuda is not None and CUDA_HOME is not None
    if switch == "0":
        return False
    if switch == "1":
        if not can:
            sys.exit(
                "COREAUG_CUDA=1 but a CUDA build is impossible here: "
                f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={CUDA_HOME!r} (is nvcc on PATH?)"
            )
        return True
    if switch not in ("", "auto"):
        sys.exit(f"COREAUG_CUDA must be 0, 1 or unset, got {switch!r}")
    return can


def _pip_cuda_includes() -> list:
    # Torch's CUDA headers include some that a slim toolkit lacks (cusparse.h); the pip
    # CUDA packages installed with torch carry them, in torch's own site-packages (which
    # is not the venv's when the venv borrows system site-packages).
    sites = {os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))}
    sites.update({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    found = []
    for site in sorted(sites):
        for sub in ("cu13", "cu12"):
            inc = os.path.join(site, "nvidia", sub, "include")
            if os.path.isdir(inc):
                found.append(inc)
    return found


def _extension():
    with_cuda = _want_cuda()
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cxx = ["-O3", "-fopenmp"]  # the C++ standard is chosen by torch (2.14 needs C++20)
    nvcc = ["-O3", "--expt-relaxed-constexpr"]
    include_dirs = [os.path.join(HERE, "csrc")]
    if with_cuda:
        # Without a GPU to inspect, torch would otherwise compile for every architecture it knows.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        sources += sorted(glob.glob(os.path.join("csrc", "*.cu")))
        cxx.append("-DCOREAUG_WITH_CUDA")
        nvcc.append("-DCOREAUG_WITH_CUDA")
        for inc in _pip_cuda_includes():
            # A fallback only: searched after the toolkit's own headers, never instead of them.
            cxx += ["-idirafter", inc]
            nvcc += ["-I", inc]
        print(f"coreaug_fast: building CPU + CUDA kernels (arch {os.environ['TORCH_CUDA_ARCH_LIST']})")
        ext = CUDAExtension
    else:
        print("coreaug_fast: building CPU kernels only")
        ext = CppExtension
    bases = [os.path.splitext(os.path.basename(s))[0] for s in sources]
    clash = sorted({b for b in bases if bases.count(b) > 1})
    if clash:  # ninja writes one object per base name
        sys.exit(f"csrc/: a .cpp and a .cu share the base name(s) {clash}; rename one")
    return ext(
        name="coreaug_fast._C",
        sources=sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=["-fopenmp"],
    )


setup(
    packages=["coreaug_fast", "coreaug_fast.reference", "coreaug_fast.selection", "coreaug_fast.kernels",
              "coreaug_fast.analysis", "coreaug_fast.train"],
    package_dir={"coreaug_fast": "coreaug_fast", "coreaug_fast.kernels": "kernels"},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
