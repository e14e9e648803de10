"""One vocabulary to the metal: the compiled op and the Triton kernels take a similarity or
optimizer as its integer code, the name's position in coreaug_fast.vocabulary's tuples.

The C++ op reports what it means by each code (``_C.codes()``, the names beside its enums in
``csrc/facility_location.h``); the Triton module derives its constants from the vocabulary by
name. Both are held against the Python tables here, and each similarity code is run on a
small class against the float64 twin, so a code that means another similarity fails even
where the name tables agree. (The other names of the vocabulary have no native code.)
"""
import pytest
import torch

from coreaug_fast import _ext
from coreaug_fast.reference import facility_location_reference
from coreaug_fast.vocabulary import OPTIMIZERS, SIMILARITIES, code

from conftest import TRITON_DEVICE


def test_code_is_the_position_in_the_table():
    assert [code(SIMILARITIES, name) for name in SIMILARITIES] == list(range(len(SIMILARITIES)))
    with pytest.raises(ValueError):
        code(SIMILARITIES, "cosine")


def test_the_cpp_op_names_its_codes_as_the_python_tables_do():
    assert _ext._C.codes() == {"SIMILARITIES": SIMILARITIES, "OPTIMIZERS": OPTIMIZERS}


@pytest.mark.triton
def test_the_triton_kernels_take_their_codes_from_the_python_tables():
    from coreaug_fast.kernels import distances
    from coreaug_fast.kernels import facility_location as triton_fl

    consts = {"distance": distances.DISTANCE, "sqdistance": distances.SQDISTANCE, "exp": distances.EXP}
    assert set(consts) == set(SIMILARITIES)
    assert {name: c.value for name, c in consts.items()} == {name: code(SIMILARITIES, name) for name in consts}
    assert set(triton_fl.OPTIMIZERS) <= set(OPTIMIZERS)


def _one_class(n=24, d=3, seed=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (x - x.mean(0)).float(), torch.zeros(n, dtype=torch.long)  # centred, as the engine hands rows over


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("optimizer", ["naive", "lazy"])
def test_each_cpp_code_runs_its_similarity(similarity, optimizer):
    """The raw op, given a code, against the twin given the name: same picks, gains to float32."""
    x, labels = _one_class()
    ref = facility_location_reference(x, labels, budget=5, similarity=similarity)
    rows, gains, _ = torch.ops.coreaug.facility_location(
        x, None, torch.tensor([0, x.shape[0]]), torch.tensor([5]), 5, code(SIMILARITIES, similarity),
        code(OPTIMIZERS, optimizer), 0.01, 0, 1 << 30)
    assert rows.tolist() == ref.indices.tolist()
    torch.testing.assert_close(gains.double(), ref.gains, rtol=1e-5, atol=1e-6)


@pytest.mark.triton
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_each_triton_code_runs_its_similarity(similarity):
    from coreaug_fast.kernels import facility_location as triton_fl

    x, labels = _one_class()
    ref = facility_location_reference(x, labels, budget=5, similarity=similarity)
    rows, gains, _ = triton_fl.facility_location(x.to(TRITON_DEVICE), None, torch.tensor([0, x.shape[0]]),
                                                 torch.tensor([5]), 5, similarity=similarity)
    assert rows.cpu().tolist() == ref.indices.tolist()
    torch.testing.assert_close(gains.cpu().double(), ref.gains, rtol=1e-5, atol=1e-6)
