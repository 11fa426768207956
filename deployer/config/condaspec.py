"""A conda package spec, read as conda reads it and written as the pip requirement it means.

Why pip: images are plain-Python venvs on a ``python:<version>-slim`` base, and building a
real conda environment (micromamba) would need conda's channels (conda.anaconda.org,
conda-forge), which the machines that build images do not reach: they reach PyPI, Debian's
mirrors and npm. So a conda package is installed from PyPI under its PyPI name, its version
constraint rewritten in pip's syntax (PEP 440) with the meaning conda gives it.

conda's reading (``conda.models.match_spec`` and ``conda.models.version``), followed here::

    conda spec                 conda means                       pip requirement
    numpy                      any version                       numpy
    numpy=1.21                 fuzzy: 1.21, 1.21.0, 1.21.5 ...   numpy==1.21.*
    numpy=1.21.0               fuzzy too: 1.21.0, 1.21.0.1 ...   numpy==1.21.0.*
    numpy==1.21.0              exact                             numpy==1.21.0
    numpy 1.21                 exact (a bare version is)         numpy==1.21
    numpy 1.21.* / numpy 1.21* fuzzy                             numpy==1.21.*
    numpy>=1.2,<2              a range                           numpy>=1.2,<2
    numpy=1.21.0=py39h_0       exact 1.21.0 (with a build, '='   numpy==1.21.0
                               is not fuzzy), build py39h_0      (build dropped)
    numpy 1.21 py39h_0         exact 1.21, build py39h_0         numpy==1.21
    conda-forge::numpy         numpy from that channel           numpy (from PyPI)

Inside a range, ``=1.2`` is fuzzy (``==1.2.*``) and a ``.*`` after ``<``, ``<=``, ``>``,
``>=`` or ``==`` is ignored, as conda ignores it. Build strings name conda builds: wheels
have none, so they are dropped. ``|`` (either-or) has no pip equivalent and is an error.
pip's ``.*`` follows numbers only, so a fuzzy pre- or post-release (``=1.0rc1``), which can
only match itself in practice, is pinned exactly (``==1.0rc1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# conda name -> PyPI name, where they differ. Names that agree need no entry: scikit-learn,
# pandas, pyyaml, python-dateutil, pillow, tensorflow-cpu (on PyPI under that name too), and
# names that differ only in case or in '-', '_', '.' (ruamel_yaml is ruamel.yaml), which pip
# compares as one name (PEP 503).
PYPI_NAMES = {
    "pytorch": "torch",  # PyPI's 'pytorch' is a stub that fails to install
    "pytorch-cpu": "torch",  # the pytorch channel's old CPU-only package
    "pytorch-gpu": "torch",  # conda-forge's metapackage for its CUDA build
    "py-xgboost": "xgboost",  # conda-forge's Python package of xgboost
    "py-xgboost-cpu": "xgboost-cpu",  # the CPU-only build; PyPI has it as xgboost-cpu
    "py-xgboost-gpu": "xgboost",  # PyPI's xgboost wheel for Linux includes GPU support
    "py-lightgbm": "lightgbm",  # Anaconda's name; conda-forge calls it lightgbm
    "tensorflow-gpu": "tensorflow",  # PyPI's tensorflow-gpu is a stub since 2.12
    "matplotlib-base": "matplotlib",  # matplotlib without the Qt backend
    "numpy-base": "numpy",  # Anaconda's half of numpy; the numpy wheel is both
    "msgpack-python": "msgpack",  # PyPI's msgpack-python stopped at 0.5.6
    "pytables": "tables",
    "python-graphviz": "graphviz",  # the bindings; conda's 'graphviz' is the program
    "py-opencv": "opencv-python-headless",  # headless: the image has no GUI libraries
    "opencv": "opencv-python-headless",  # conda-forge's opencv includes the bindings
}

# Conda packages with no PyPI counterpart, and what to do instead: each message completes
# "conda package 'NAME' has no pip counterpart: ...".
_CUDA = (
    "it is conda's CUDA, which a pip image does not use: drop this line (GPU packages "
    "from PyPI bring their own CUDA libraries: torch's Linux wheels pull them in as "
    "nvidia-* packages, TensorFlow as 'tensorflow[and-cuda]' under 'pip:')"
)
_TORCH_BUILD = (
    "it selects which build of conda's pytorch to install, and pip has no such switch: drop "
    "this line (on Linux x86-64, torch from PyPI is the CUDA build, which also runs on CPU; "
    "for the smaller CPU-only build, build the image with "
    "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)"
)
_BLAS = (
    "it selects the BLAS of conda's numpy and scipy builds, and pip has no such switch: "
    "drop this line (numpy and scipy wheels from PyPI bundle their own OpenBLAS)"
)
_SYSTEM_LIBRARY = (
    "it is a system library that conda ships for its own Python; the image uses the base "
    "image's Python and Debian's libraries: drop this line (a library that a package needs "
    "at run time goes under environment.system_packages, by its Debian name)"
)
CONDA_ONLY: dict[str, str] = {
    **dict.fromkeys(
        [
            "cudatoolkit",
            "cuda-toolkit",  # PyPI's cuda-toolkit is NVIDIA's pip metapackage, not this
            "cuda-version",
            "cuda-runtime",
            "cuda-cudart",
            "cuda-nvcc",
            "cudnn",
            "nccl",
            "pytorch-cuda",
        ],
        _CUDA,
    ),
    **dict.fromkeys(["cpuonly", "pytorch-mutex"], _TORCH_BUILD),
    **dict.fromkeys(
        ["blas", "libblas", "libcblas", "liblapack", "openblas", "libopenblas", "nomkl"],
        _BLAS,
    ),
    **dict.fromkeys(
        [
            "_libgcc_mutex",
            "_openmp_mutex",
            "libgcc-ng",
            "libgcc",
            "libstdcxx-ng",
            "libstdcxx",
            "libgomp",
            "libgfortran-ng",
            "libgfortran",
            "libgfortran5",
            "ld_impl_linux-64",
            "openssl",
            "ca-certificates",
            "libffi",
            "zlib",
            "libzlib",
            "xz",
            "bzip2",
            "ncurses",
            "readline",
            "sqlite",
            "libsqlite",
            "tk",
            "libuuid",
            "libnsl",
            "libxcrypt",
        ],
        _SYSTEM_LIBRARY,
    ),
}
# Programs conda installs, and the Debian package that provides each.
PROGRAMS = {
    "git": "git",
    "graphviz": "graphviz",  # on PyPI, 'graphviz' is the Python bindings (conda: python-graphviz)
    "ffmpeg": "ffmpeg",
    "curl": "curl",
    "wget": "wget",
    "make": "make",
    "gcc": "gcc",
    "gxx": "g++",
    "c-compiler": "gcc",
    "cxx-compiler": "g++",
    "compilers": "build-essential",
    "nodejs": "nodejs",
}
# conda's own package manager and installers: the image has none of them.
_CONDA_TOOLS = {"conda", "mamba", "micromamba", "conda-build", "anaconda"}


class SpecError(ValueError):
    """A spec that cannot be read, or that pip cannot express; the message says why."""


@dataclass(frozen=True)
class CondaSpec:
    """One conda package spec, in conda's terms."""

    name: str  # lower case, as conda compares names
    version: str  # conda's version spec once conda has rewritten it ("1.21*"); "" for any
    build: str  # "" when none is given
    channel: str  # "" when none is given


def parse(text: str) -> CondaSpec:
    """Read ``text`` as conda does (``[channel::]name[ version[ build]]``, or ``=`` between)."""
    spec = text.strip()
    if "[" in spec or "(" in spec:
        raise SpecError("the [key=value] form is not supported here; write NAME VERSION")
    channel, _, spec = spec.rpartition("::") if "::" in spec else ("", "", spec)
    match = re.fullmatch(r"(?P<name>[^ =<>!~]+)(?P<rest>[ =<>!~].*)?", spec)
    if match is None or not re.fullmatch(r"[a-z0-9_][a-z0-9_.+-]*", match["name"].lower()):
        raise SpecError("expected a package name, then optionally a version and a build")
    version, build = _version_and_build((match["rest"] or "").strip())
    return CondaSpec(match["name"].lower(), _as_conda_reads(version, build), build, channel)


def pypi_name(conda_name: str) -> str:
    return PYPI_NAMES.get(conda_name, conda_name)


def no_pip_counterpart(conda_name: str) -> str | None:
    """Why a conda package has no PyPI counterpart and what to do instead, or None."""
    if conda_name in CONDA_ONLY:
        return CONDA_ONLY[conda_name]
    if conda_name in PROGRAMS:
        return (
            "it is a program, not a Python package: list the Debian package "
            f"'{PROGRAMS[conda_name]}' under environment.system_packages instead"
        )
    if conda_name.startswith("r-"):
        return "it is an R package, and the image runs Python only: drop this line"
    if conda_name in _CONDA_TOOLS:
        return "the image installs with pip, not conda: drop this line"
    return None


def pip_requirement(spec: CondaSpec) -> str:
    """The pip requirement that installs what ``spec`` asks for (the build aside)."""
    return pypi_name(spec.name) + _pip_specifier(spec.version)


def _version_and_build(rest: str) -> tuple[str, str]:
    """Split conda's ``VERSION[ BUILD]`` or ``VERSION=BUILD``: the build follows the first
    space or '=' that ends the version (not one inside an operator such as '>=')."""
    for index in range(1, len(rest)):
        build = rest[index + 1 :].strip()
        if (
            rest[index] in " ="
            and rest[index - 1] not in "=!|,<>~ "
            and build
            and not any(char in build for char in "-=,|<>~ ")
        ):
            return rest[:index].replace(" ", ""), build
    return rest.replace(" ", ""), ""


def _as_conda_reads(version: str, build: str) -> str:
    """conda's own rewriting of a leading '=': ``=1.2`` is ``1.2*`` (fuzzy), unless a build
    follows (``=1.2=py39_0``: exact 1.2); ``==1.2`` is the bare, exact ``1.2``."""
    if version in ("=", "=="):
        raise SpecError(f"'{version}' is not followed by a version")
    if not version.startswith("="):
        return version
    bare = version.lstrip("=")
    if version.startswith("==") and not build:
        return bare
    if any(char in bare for char in "=,|"):
        return version
    return bare if build or bare.endswith("*") else f"{bare}*"


# A version pip reads (PEP 440), and the release part alone, which is all '.*' may follow.
_PEP440 = re.compile(
    r"(\d+!)?\d+(\.\d+)*"
    r"([-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?\d*)?"
    r"(-\d+|[-_.]?(post|rev|r)[-_.]?\d*)?"
    r"([-_.]?dev[-_.]?\d*)?"
    r"(\+[a-z0-9]+([-_.][a-z0-9]+)*)?",
    re.IGNORECASE,
)
_RELEASE = re.compile(r"\d+(\.\d+)*")
_PART = re.compile(r"(?P<op>==|!=|>=|<=|~=|>|<|=)?(?P<version>.*)")


def _pip_specifier(version: str) -> str:
    """conda's version spec (after ``_as_conda_reads``) in pip's syntax, same meaning."""
    if version in ("", "*"):
        return ""
    if "|" in version:
        raise SpecError(f"'{version}' uses '|' (either-or), which pip has no way to say")
    return ",".join(_pip_part(part) for part in version.split(","))


def _pip_part(part: str) -> str:
    match = _PART.fullmatch(part)
    assert match is not None  # the pattern admits any text
    op, version = match["op"], match["version"]
    fuzzy = version.endswith("*")
    version = version.rstrip("*").rstrip(".")
    if not version or "*" in version or not _PEP440.fullmatch(version):
        raise SpecError(f"'{part}' is not a version constraint pip can read (PEP 440)")
    if op is None or op == "=":  # a bare version is exact; '=' and a trailing '*' are fuzzy
        return _prefix("==", version) if fuzzy or op == "=" else f"=={version}"
    if op == "!=" and fuzzy:
        return _prefix("!=", version)
    if op == "~=" and (fuzzy or "." not in version):
        raise SpecError(f"'{part}': '~=' needs a version with a '.' and no '*'")
    return f"{op}{version}"  # conda ignores '.*' after <, <=, >, >= and ==


def _prefix(op: str, version: str) -> str:
    """conda's "starts with": pip's '.*', which follows numbers only. A fuzzy pre- or
    post-release (=1.0rc1) can only match itself in practice, so it is pinned exactly."""
    return f"{op}{version}.*" if _RELEASE.fullmatch(version) else f"{op}{version}"
