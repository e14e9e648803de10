"""The build: what build_info reports, and the one clear error without the extension."""
import pytest
import torch

import coreaug_fast
from coreaug_fast import _ext

from conftest import HAS_GPU


def test_build_info_reports_this_build():
    info = coreaug_fast.build_info()
    assert info["extension"] is True, info["import_error"]
    assert info["torch"] == torch.__version__
    assert info["gpu"] == HAS_GPU
    assert info["openmp"] is True
    # The CUDA sources are compiled whenever torch is a CUDA build and nvcc exists.
    if torch.version.cuda is not None:
        assert info["cuda_kernels"] is True
        assert info["cuda_version"].split(".")[0] == torch.version.cuda.split(".")[0]
    assert info["triton"] == ("compiled" if HAS_GPU else "interpreted")
    assert info["device_name"] == (torch.cuda.get_device_name() if HAS_GPU else "cpu")


def test_ops_are_registered():
    assert hasattr(torch.ops.coreaug, "gradient_embeddings")


def test_missing_extension_raises_one_clear_error(monkeypatch):
    monkeypatch.setattr(_ext, "_C", None)
    monkeypatch.setattr(_ext, "_IMPORT_ERROR", ImportError("No module named 'coreaug_fast._C'"))
    assert coreaug_fast.build_info()["extension"] is False
    with pytest.raises(coreaug_fast.ExtensionNotBuiltError, match="pip install --no-build-isolation"):
        coreaug_fast.gradient_embeddings(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    # the references still work
    ref = coreaug_fast.reference.gradient_embeddings_reference(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    assert ref.shape == (2, 3)
