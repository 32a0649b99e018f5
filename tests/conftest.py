"""Test environment: offline, no torch.compile, and no way to reach gsplat's CUDA backend."""

import os
import sys
import tempfile
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")
os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="modgs-torch-home-"))
os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="modgs-mpl-"))

# Any accidental gsplat CUDA call fails in a millisecond instead of starting a 30-minute nvcc build.
_stub = types.ModuleType("gsplat.cuda._backend")
_stub._C = None
sys.modules.setdefault("gsplat.cuda._backend", _stub)

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run slow end-to-end tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow end-to-end test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
