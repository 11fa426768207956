"""Conda package specs as pip requirements: conda's meaning, pip's syntax."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement

from deployer.config import condaspec


def pip(spec: str) -> str:
    return condaspec.pip_requirement(condaspec.parse(spec))


@pytest.mark.parametrize(
    ("conda", "expected"),
    [
        # No version: any.
        ("pandas", "pandas"),
        ("pandas=*", "pandas"),
        ("pandas *", "pandas"),
        # '=' is fuzzy: a prefix of the version, however many parts it has.
        ("numpy=1.21", "numpy==1.21.*"),
        ("numpy=1.21.0", "numpy==1.21.0.*"),
        ("numpy=1", "numpy==1.*"),
        ("numpy=1.21.*", "numpy==1.21.*"),
        ("numpy=1.21*", "numpy==1.21.*"),
        # '==' is exact.
        ("numpy==1.21.0", "numpy==1.21.0"),
        ("numpy==1.21", "numpy==1.21"),
        # The space-separated form: a bare version is exact, a starred one fuzzy.
        ("numpy 1.21", "numpy==1.21"),
        ("numpy 1.21.*", "numpy==1.21.*"),
        ("numpy 1.21*", "numpy==1.21.*"),
        # Ranges pass through; '.*' after a relational operator is ignored, as conda does.
        ("numpy>=1.2,<2", "numpy>=1.2,<2"),
        ("numpy >=1.2, <2", "numpy>=1.2,<2"),
        ("numpy>1.2", "numpy>1.2"),
        ("numpy<=1.26.4", "numpy<=1.26.4"),
        ("numpy>=1.2.*", "numpy>=1.2"),
        ("numpy!=1.22.*", "numpy!=1.22.*"),
        ("numpy!=1.22.0", "numpy!=1.22.0"),
        ("numpy~=1.21.0", "numpy~=1.21.0"),
        ("numpy>=1.2,!=1.22.*,<2", "numpy>=1.2,!=1.22.*,<2"),
        # Inside a range, '=' is fuzzy too.
        ("numpy=1.2,<1.2.5", "numpy==1.2.*,<1.2.5"),
        # Pre-releases and other PEP 440 versions.
        ("scipy==1.14.0rc1", "scipy==1.14.0rc1"),
        # pip's '.*' follows numbers only: a fuzzy pre- or post-release matches itself.
        ("lightgbm=4.3.0.post1", "lightgbm==4.3.0.post1"),
        ("scipy=1.14.0rc1", "scipy==1.14.0rc1"),
        ("scipy!=1.14.0rc1.*", "scipy!=1.14.0rc1"),
        # A build string makes '=VERSION' exact; the build itself is dropped.
        ("numpy=1.21.0=py39h_0", "numpy==1.21.0"),
        ("numpy==1.21.0=py39h_0", "numpy==1.21.0"),
        ("numpy 1.21 py39h_0", "numpy==1.21"),
        ("numpy 1.21.* py39*", "numpy==1.21.*"),
        ("numpy >=1.0 , < 2.0 py34_0", "numpy>=1.0,<2.0"),
        ("numpy * openblas_0", "numpy"),
        # A channel is dropped: pip installs from PyPI.
        ("conda-forge::numpy=1.21", "numpy==1.21.*"),
        ("conda-forge/linux-64::numpy", "numpy"),
        ("pytorch::pytorch=2.3.1=py3.11_cpu_0", "torch==2.3.1"),
        # Names that differ between conda and PyPI.
        ("pytorch=2.3", "torch==2.3.*"),
        ("pytorch-cpu", "torch"),
        ("py-xgboost=2.1", "xgboost==2.1.*"),
        ("py-xgboost-cpu", "xgboost-cpu"),
        ("py-lightgbm", "lightgbm"),
        ("matplotlib-base>=3.8", "matplotlib>=3.8"),
        ("msgpack-python", "msgpack"),
        ("py-opencv", "opencv-python-headless"),
        ("tensorflow-gpu=2.15", "tensorflow==2.15.*"),
        # Names that agree need no mapping (pip compares them case- and '-_.'-blind).
        ("tensorflow-cpu", "tensorflow-cpu"),
        ("pyyaml=6.0", "pyyaml==6.0.*"),
        ("python-dateutil", "python-dateutil"),
        ("pillow>=10", "pillow>=10"),
        ("scikit-learn=1.5.2", "scikit-learn==1.5.2.*"),
        ("mkl", "mkl"),  # on PyPI as Intel's wheels
        # conda compares names in lower case.
        ("PyYAML", "pyyaml"),
    ],
)
def test_a_conda_spec_becomes_the_pip_requirement_with_its_meaning(
    conda: str, expected: str
) -> None:
    assert pip(conda) == expected
    Requirement(expected)  # pip can read it: packaging is the parser pip uses


@pytest.mark.parametrize(
    ("conda", "name", "version", "build", "channel"),
    [
        ("numpy", "numpy", "", "", ""),
        ("numpy=1.21", "numpy", "1.21*", "", ""),
        ("numpy==1.21", "numpy", "1.21", "", ""),
        ("numpy=1.21=py39h_0", "numpy", "1.21", "py39h_0", ""),
        ("numpy 1.21 py39h_0", "numpy", "1.21", "py39h_0", ""),
        ("conda-forge::numpy>=1.2,<2", "numpy", ">=1.2,<2", "", "conda-forge"),
    ],
)
def test_a_spec_is_read_as_conda_reads_it(
    conda: str, name: str, version: str, build: str, channel: str
) -> None:
    assert condaspec.parse(conda) == condaspec.CondaSpec(name, version, build, channel)


@pytest.mark.parametrize(
    ("conda", "message"),
    [
        ("numpy 1.21|1.22", "'1.21|1.22' uses '|' (either-or), which pip has no way to say"),
        ("numpy>=1.2|<1", "'>=1.2|<1' uses '|' (either-or), which pip has no way to say"),
        ("numpy=1.0_1", "'1.0_1*' is not a version constraint pip can read (PEP 440)"),
        ("numpy 1.*.3", "'1.*.3' is not a version constraint pip can read (PEP 440)"),
        ("numpy~=1", "'~=1': '~=' needs a version with a '.' and no '*'"),
    ],
)
def test_a_version_pip_cannot_express_is_an_error(conda: str, message: str) -> None:
    with pytest.raises(condaspec.SpecError) as raised:
        pip(conda)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("conda", "message"),
    [
        (
            "numpy[version='>=1.2']",
            "the [key=value] form is not supported here; write NAME VERSION",
        ),
        ("=1.2", "expected a package name, then optionally a version and a build"),
        ("num*", "expected a package name, then optionally a version and a build"),
        ("numpy==", "'==' is not followed by a version"),
    ],
)
def test_a_spec_conda_would_not_read_either_is_an_error(conda: str, message: str) -> None:
    with pytest.raises(condaspec.SpecError) as raised:
        condaspec.parse(conda)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("cudatoolkit", "it is conda's CUDA, which a pip image does not use: drop this line"),
        ("cudnn", "it is conda's CUDA"),
        ("nccl", "it is conda's CUDA"),
        ("cuda-toolkit", "it is conda's CUDA"),
        ("pytorch-cuda", "it is conda's CUDA"),
        ("cpuonly", "it selects which build of conda's pytorch to install"),
        ("blas", "it selects the BLAS of conda's numpy and scipy builds"),
        ("openblas", "it selects the BLAS of conda's numpy and scipy builds"),
        ("nomkl", "it selects the BLAS of conda's numpy and scipy builds"),
        ("libgcc-ng", "it is a system library that conda ships for its own Python"),
        ("libstdcxx-ng", "it is a system library"),
        ("_libgcc_mutex", "it is a system library"),
        ("openssl", "it is a system library"),
        ("ca-certificates", "it is a system library"),
        ("libffi", "it is a system library"),
        ("zlib", "it is a system library"),
        ("git", "it is a program, not a Python package: list the Debian package 'git'"),
        ("gxx", "it is a program, not a Python package: list the Debian package 'g++'"),
        ("graphviz", "it is a program"),
        ("r-base", "it is an R package, and the image runs Python only: drop this line"),
        ("r-ggplot2", "it is an R package"),
        ("conda", "the image installs with pip, not conda: drop this line"),
    ],
)
def test_conda_only_packages_say_what_to_do_instead(name: str, start: str) -> None:
    reason = condaspec.no_pip_counterpart(name)
    assert reason is not None
    assert reason.startswith(start)


@pytest.mark.parametrize("name", ["numpy", "mkl", "pytorch", "python-graphviz", "rpy2"])
def test_packages_on_pypi_have_a_counterpart(name: str) -> None:
    assert condaspec.no_pip_counterpart(name) is None


def test_the_cuda_advice_says_where_cuda_comes_from_with_pip() -> None:
    assert condaspec.CONDA_ONLY["cudatoolkit"] == (
        "it is conda's CUDA, which a pip image does not use: drop this line (GPU packages "
        "from PyPI bring their own CUDA libraries: torch's Linux wheels pull them in as "
        "nvidia-* packages, TensorFlow as 'tensorflow[and-cuda]' under 'pip:')"
    )


def test_mapped_names_are_not_also_conda_only() -> None:
    assert not set(condaspec.PYPI_NAMES) & (set(condaspec.CONDA_ONLY) | set(condaspec.PROGRAMS))
