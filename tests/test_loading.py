"""``coreaug_fast.loading``: one dataset item -> uint8 (C, H, W) with the model's channels, as
torchvision's ImageFolder loader converts; the crop parameters of RandomResizedCrop; the
per-row geometry against torchvision's functional ops; whole batches read in a worker, each
item once; unreadable items named with their file."""
import random

import numpy as np
import pytest
import torch

from coreaug_fast import loading
from image_folders import image, make_folder

F = pytest.importorskip("torchvision.transforms.v2.functional")
torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("folder"), per_class=8, classes=2)


def pil(mode, h=13, w=17, seed=0):
    img = image(np.random.default_rng(seed), h, w, 1)
    return img if mode == "RGB" else img.convert(mode)


# ------------------------------------------------------------------ channel conversion

@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "LA", "CMYK", "I;16"])
def test_pil_images_convert_as_imagefolder_does(mode):
    img = pil(mode)
    got = loading.to_uint8_chw(img, 3)
    want = F.pil_to_tensor(img.convert("RGB"))
    assert got.dtype == torch.uint8 and got.shape == (3, 13, 17) and torch.equal(got, want)
    assert torch.equal(loading.to_uint8_chw(img, 1), F.pil_to_tensor(img.convert("L")))


def test_arrays_and_tensors_convert_like_the_pil_loader():
    rgb = pil("RGB")
    hwc = np.array(rgb)
    want = F.pil_to_tensor(rgb)
    assert torch.equal(loading.to_uint8_chw(hwc, 3), want)
    assert torch.equal(loading.to_uint8_chw(torch.from_numpy(hwc).permute(2, 0, 1), 3), want)
    # RGBA drops alpha; grey is repeated, as Image.convert("RGB") does
    rgba = pil("RGBA")
    assert torch.equal(loading.to_uint8_chw(np.asarray(rgba), 3), F.pil_to_tensor(rgba.convert("RGB")))
    grey = pil("L")
    for g in (np.asarray(grey), np.asarray(grey)[:, :, None], torch.from_numpy(np.asarray(grey).copy())[None]):
        assert torch.equal(loading.to_uint8_chw(g, 3), F.pil_to_tensor(grey.convert("RGB")))
    # three channels to one: torchvision's rgb_to_grayscale
    assert torch.equal(loading.to_uint8_chw(want, 1), F.rgb_to_grayscale(want, num_output_channels=1))


@pytest.mark.parametrize("bad,message", [
    (np.zeros((4, 4, 3), np.float32), "the image is a float32 ndarray; give uint8 images"),
    (torch.rand(3, 4, 4), "the image is a torch.float32 tensor; give uint8 images"),
    (np.zeros((2, 4, 4, 3), np.uint8), "the image is an ndarray of shape (2, 4, 4, 3)"),
    (torch.zeros(2, 4, 4, dtype=torch.uint8), "the image has shape (C, H, W) = (2, 4, 4)"),
    (torch.zeros(3, 0, 4, dtype=torch.uint8), "the image has shape (C, H, W) = (3, 0, 4)"),
    ("img.jpg", "the image is a str; expected a PIL image, an ndarray or a tensor"),
])
def test_bad_images_are_refused_with_what_was_found(bad, message):
    with pytest.raises(ValueError) as e:
        loading.to_uint8_chw(bad, 3)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("item,message", [
    ((torch.zeros(3, 4, 4, dtype=torch.uint8),), "is a tuple of 1 items; expected an (image, label) pair"),
    (torch.zeros(3, 4, 4, dtype=torch.uint8), "is a Tensor; expected an (image, label) pair"),
    ((torch.zeros(3, 4, 4, dtype=torch.uint8), -1), "the label -1 is negative"),
    ((torch.zeros(3, 4, 4, dtype=torch.uint8), torch.tensor([1, 2])), "the label tensor([1, 2]) is not an integer"),
    ((torch.zeros(3, 4, 4, dtype=torch.uint8), "cat"), "the label is a str ('cat'), not an integer class id"),
])
def test_items_that_are_not_image_label_pairs_are_named(item, message):
    with pytest.raises(loading.ItemError) as e:
        loading.read_item([item], 0, 3)
    assert e.value.describe() == f"dataset item 0: {message}" or e.value.describe().startswith(f"dataset item 0: {message}")


def test_labels_of_numpy_and_tensor_integers_are_accepted():
    img = torch.zeros(3, 4, 4, dtype=torch.uint8)
    for label in (np.int64(2), torch.tensor(2), 2):
        assert loading.read_item([(img, label)], 0, 3)[1] == 2


def test_an_unreadable_file_is_named_with_its_index_and_path(folder, tmp_path):
    ds = torchvision.datasets.ImageFolder(str(folder))
    path = ds.samples[3][0]
    with open(path, "r+b") as f:  # truncate in place: the dataset's own loader now fails
        data = f.read()
    broken = tmp_path / "broken"
    import shutil
    shutil.copytree(folder, broken)
    target = broken / path[len(str(folder)) + 1:]
    target.write_bytes(data[: len(data) // 3])
    ds = torchvision.datasets.ImageFolder(str(broken))
    with pytest.raises(loading.ItemError) as e:
        loading.read_item(ds, 3, 3)
    assert e.value.index == 3 and e.value.path == str(target)
    assert e.value.describe().startswith(f"dataset item 3 ({target}): cannot be read (")


# ------------------------------------------------------------------ geometry

def torchvision_params(seed, h, w, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """RandomResizedCrop's own params under a torch seed (its own draws)."""
    from torchvision.transforms import v2

    torch.manual_seed(seed)
    t = v2.RandomResizedCrop(8, scale=scale, ratio=ratio)
    p = t.make_params([torch.zeros(3, h, w)])
    return p["top"], p["left"], p["height"], p["width"]


@pytest.mark.parametrize("h,w", [(375, 500), (500, 375), (32, 32), (20, 300), (300, 20), (1, 1)])
def test_crop_params_are_valid_and_cover_what_torchvision_draws(h, w):
    """Every crop lies in the image, with area in [0.08, 1] x the image's (up to rounding) or
    the central fallback; over many draws the range of sizes matches torchvision's."""
    ours, theirs = [], []
    for s in range(400):
        t, l, ch, cw = loading.resized_crop_params(random.Random(s), h, w)
        assert 0 <= t and t + ch <= h and 0 <= l and l + cw <= w and ch >= 1 and cw >= 1
        ours.append((ch, cw))
        theirs.append(torchvision_params(s, h, w)[2:])
    area = lambda sizes: np.array([a * b for a, b in sizes], dtype=float) / (h * w)  # noqa: E731
    # same distribution of crop areas: compare quantiles loosely (400 draws each)
    qo, qt = np.quantile(area(ours), [0.1, 0.5, 0.9]), np.quantile(area(theirs), [0.1, 0.5, 0.9])
    assert np.all(np.abs(qo - qt) < 0.12), (qo, qt)


def test_fallback_is_torchvisions_central_crop():
    class Never(random.Random):  # every try out of range: the fallback decides
        def uniform(self, a, b):
            return b if a > 0.5 else 20.0
    assert loading.resized_crop_params(Never(), 10, 100) == (0, 43, 10, 13)   # wide: clamp to ratio 4/3
    assert loading.resized_crop_params(Never(), 100, 10) == (43, 0, 13, 10)   # tall: clamp to 3/4
    assert loading.resized_crop_params(Never(), 30, 35) == (0, 0, 30, 35)     # within: whole image


def test_random_resized_crop_is_torchvisions_resized_crop():
    img = loading.to_uint8_chw(pil("RGB", 61, 83), 3)
    for s in range(5):
        got = loading.random_resized_crop(img, 24, loading.row_rng(7, s))
        t, l, h, w = loading.resized_crop_params(loading.row_rng(7, s), 61, 83)
        want = F.resized_crop(img, t, l, h, w, [24, 24], antialias=True)
        assert torch.equal(got, want)


@pytest.mark.parametrize("weak,size,resize", [("resized-crop", 224, 256), ("resized-crop", 64, 73),
                                              ("crop-flip", 32, 32)])
def test_eval_view_is_resize_shorter_side_then_center_crop(weak, size, resize):
    assert loading.eval_resize(weak, size) == resize
    img = loading.to_uint8_chw(pil("RGB", 47, 90), 3)
    got = loading.center_view(img, 16, 19)
    want = F.center_crop(F.resize(img, [19], antialias=True), [16, 16])
    assert torch.equal(got, want) and got.shape == (3, 16, 16)
    same = loading.to_uint8_chw(pil("RGB", 16, 16), 3)
    assert torch.equal(loading.center_view(same, 16, 16), same)  # already the size: untouched


# ------------------------------------------------------------------ whole batches

class Counting(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items, self.reads = items, []

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads.append(i)
        return self.items[i]


def items(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [(image(rng, int(rng.integers(20, 60)), int(rng.integers(20, 60)), i % 2), i % 2) for i in range(n)]


@pytest.mark.parametrize("geometry", ["random-crop", "center"])
def test_a_batch_reads_each_item_once_and_cuts_every_row(geometry):
    ds = Counting(items())
    index = torch.tensor([3, 3, 3, 1, 0, 0, 4])
    reader = loading.BatchReader(ds, index, loading.consecutive([0, 4, 7]), channels=3, size=12, geometry=geometry,
                                 resize=14, seed=5)
    x0, y0 = reader[0]
    x1, y1 = reader[1]
    assert sorted(ds.reads) == [0, 1, 3, 4]  # item 3 read once for its three rows
    x, y = torch.cat([x0, x1]), torch.cat([y0, y1])
    assert x.shape == (7, 3, 12, 12) and torch.equal(y, torch.tensor([1, 1, 1, 1, 0, 0, 0]))
    for r, i in enumerate(index.tolist()):
        img = F.pil_to_tensor(ds.items[i][0])
        if geometry == "center":
            want = F.center_crop(F.resize(img, [14], antialias=True), [12, 12])
        else:
            t, l, h, w = loading.resized_crop_params(loading.row_rng(5, r), *img.shape[-2:])
            want = F.resized_crop(img, t, l, h, w, [12, 12], antialias=True)
        assert torch.equal(x[r], want), r
    if geometry == "random-crop":
        assert not torch.equal(x[0], x[1])  # copies of one image get their own crops


def test_a_rows_pixels_depend_on_its_position_not_on_the_task_that_reads_it():
    ds = Counting(items())
    index = torch.tensor([3, 1, 3, 0, 4, 3, 1])
    kw = dict(channels=3, size=10, geometry="random-crop", seed=2)
    whole = loading.BatchReader(ds, index, [torch.arange(7)], **kw)[0][0]
    parts = [torch.tensor([5, 0, 2]), torch.tensor([1, 6]), torch.tensor([3, 4])]
    pieces = loading.BatchReader(ds, index, parts, **kw)
    got = torch.empty_like(whole)
    for t, pos in enumerate(parts):
        got[pos] = pieces[t][0]
    assert torch.equal(got, whole)


def test_a_failed_item_comes_back_as_a_value_not_a_worker_traceback():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 2:
                raise OSError("image file is truncated (7 bytes not processed)")
            return torch.zeros(3, 8, 8, dtype=torch.uint8), 0
    out = loading.BatchReader(Broken(), torch.tensor([0, 2, 1]), [torch.arange(3)], channels=3, size=8, geometry="center",
                              resize=8)[0]
    assert isinstance(out, loading.Failed) and out.error.index == 2
    assert out.error.describe() == "dataset item 2: cannot be read (OSError: image file is truncated (7 bytes " \
                                   "not processed))"
