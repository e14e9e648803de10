"""Every ```python block of README.md runs as written, so the README cannot go stale.

A block uses names a reader brings along (``images``, ``model``, ``MEAN`` ...): the prelude of
its section (the ``## `` heading above it) defines them on small data, after ``COMMON``.
Blocks of one section run in order in one namespace, as a reader would run them. A block
under a heading without a prelude fails with a message saying to add one: a new section of
the README gets its prelude here (an empty string if it needs nothing). Preludes are
plain Python strings; to extend one, add lines; to reuse one, refer to it by name.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

COMMON = f"""
import torch
import coreaug_fast
g0 = torch.Generator().manual_seed(0)
TESTS = {str(Path(__file__).resolve().parent)!r}
"""

# A model with a .fc head (the penultimate activation is fc's input), on 3 x 8 x 8 images.
_NET = """
class Net(torch.nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.ReLU())
        self.fc = torch.nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.body(x))

torch.manual_seed(0)
model = Net()
"""

PRELUDES = {
    "Use it in your own loop": _NET + """
images = torch.randint(0, 256, (48, 3, 8, 8), dtype=torch.uint8, generator=g0)   # uint8 (N, C, H, W)
labels = torch.arange(48) % 4
test_images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8, generator=g0)
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
epochs = 2
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
""",
    "Python API": _NET + """
model.eval()
images = torch.rand(12, 3, 8, 8, generator=g0)
labels = torch.arange(12) % 4
""",
    "Choosing the coreset": """
logits = torch.randn(40, 4, generator=g0)
labels = torch.arange(40) % 4
h = torch.randn(40, 6, generator=g0)           # penultimate features
""",
    "Weighted cross-entropy": """
logits = torch.randn(10, 4, generator=g0, requires_grad=True)
labels = torch.arange(10) % 4
weights = torch.rand(10, generator=g0)
""",
    "Augmentation": """
images_u8 = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=g0)
coreset_idx = torch.tensor([1, 4])
g = torch.Generator().manual_seed(1)
idx = torch.tensor([0, 2, 5])
ops = torch.tensor([[0, 3], [5, 9], [12, 1]], dtype=torch.int32)
magnitudes = torch.zeros(3, 2)
offsets = torch.full((3, 2), 4)
flips = torch.tensor([True, False, True])
""",
    "Jacobian spectrum analysis (paper Sec. 3, Fig. 2, App. C)": """
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
images = torch.rand(40, 1, 8, 8, generator=g0)
labels = torch.arange(40) % 4
policy = lambda x: (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
""",
    # a generated ImageNet-layout folder under the block's working directory; torchvision's
    # ResNet-18 of 3 classes (the selection pass runs it on 12 images at 224 x 224)
    "Datasets of any size: folders of images, read from disk": """
import sys, torchvision
sys.path.insert(0, TESTS)
from image_folders import make_imagenet_layout
make_imagenet_layout("data", per_class=4, classes=3, sizes=(60, 300))
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=3)
""",
    # one rank: the block's collective calls run on a process group of size 1 (see _process_group)
    "Several GPUs: `torch.distributed`": """
import torch.distributed as dist
emb_shard = torch.randn(30, 5, generator=g0)
labels_shard = torch.arange(30) % 3
global_idx = torch.arange(30) * 2 + 7
""",
}

_HEADING = re.compile(r"^## (.+?)\s*$")
_FENCE = re.compile(r"^```(\w*)\s*$")


def python_blocks(text: str):
    """[(heading, [block, ...])] for every section with ```python blocks, in README order."""
    sections, heading, lang, lines = {}, None, None, []
    for line in text.splitlines():
        fence = _FENCE.match(line)
        if lang is None and fence:
            lang, lines = fence.group(1), []
        elif lang is not None and line.strip() == "```":
            if lang == "python":
                sections.setdefault(heading, []).append("\n".join(lines) + "\n")
            lang = None
        elif lang is not None:
            lines.append(line)
        elif _HEADING.match(line):
            heading = _HEADING.match(line).group(1)
    return list(sections.items())


SECTIONS = python_blocks(README.read_text())


def test_the_readme_has_python_blocks_and_the_parser_finds_them():
    text = README.read_text()
    assert sum(len(b) for _, b in SECTIONS) == text.count("```python") >= 7


class _ProcessGroup:
    """A gloo process group of one rank for the distributed section, always torn down."""

    def __init__(self, folder):
        self.folder = folder

    def __enter__(self):
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method=f"file://{self.folder}/pg", rank=0, world_size=1)

    def __exit__(self, *exc):
        import torch.distributed as dist
        dist.destroy_process_group()


@pytest.mark.parametrize("heading, blocks", SECTIONS, ids=[h for h, _ in SECTIONS])
def test_block_runs_as_written(heading, blocks, tmp_path, monkeypatch):
    assert heading in PRELUDES, (f"README section {heading!r} has a python block but tests/test_readme.py has no "
                                 f"prelude for it: add PRELUDES[{heading!r}] (the names the block uses)")
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    ns: dict = {"__name__": "readme"}
    exec(compile(COMMON + PRELUDES[heading], f"<prelude {heading}>", "exec"), ns)  # noqa: S102
    with torch.random.fork_rng():
        torch.manual_seed(0)
        group = _ProcessGroup(tmp_path) if "dist." in "".join(blocks) else None
        if group:
            group.__enter__()
        try:
            for i, block in enumerate(blocks):
                exec(compile(block, f"<README.md: {heading}, block {i + 1}>", "exec"), ns)  # noqa: S102
        finally:
            if group:
                group.__exit__()


# ------------------------------------------------------------------ the command lines

_PROGRAM = re.compile(r"^(?:coreaug-train|python -m coreaug_fast\.train)\b")


def readme_commands(text: str):
    """Every coreaug-train command line the README shows: lines of ```bash blocks (with their
    continuation lines) and inline code spans of the prose (which may wrap), as argv lists
    without the program; placeholders ("...") left out."""
    lines = []
    for i, part in enumerate(re.split(r"^```\w*\s*$", text, flags=re.MULTILINE)):
        if i % 2:  # inside a fence
            lines += [ln.split("#")[0].strip() for ln in part.replace("\\\n", " ").splitlines()]
        else:
            lines += [span.replace("\n", " ").strip() for span in re.findall(r"`([^`]+)`", part)]
    out = []
    for line in lines:
        if _PROGRAM.match(line) and len(line.split()) > 1 and "..." not in line and "…" not in line:
            words = line.split()
            out.append(words[1:] if words[0] == "coreaug-train" else words[3:])
    return out


def test_every_coreaug_train_command_in_the_readme_is_accepted():
    """Arguments, settings and the comparison plan of each command are checked as the CLI
    checks them before training (a command that cannot run, like the old torchvision timing
    command whose --reference random was not among its --methods, fails here)."""
    from coreaug_fast.train.cli import build_parser, config_from_args
    from coreaug_fast.train.compare import check_plan

    commands = readme_commands(README.read_text())
    assert len(commands) >= 5, commands
    for argv in commands:
        if "--help" in argv:
            continue
        compare = argv[0] == "compare"
        try:
            args = build_parser().parse_args(argv[1:] if compare else argv)
        except SystemExit:
            pytest.fail(f"README command refused by the parser: coreaug-train {' '.join(argv)}")
        cfg = config_from_args(args)
        cfg.resolved()
        if compare or args.methods:
            check_plan(cfg, args.methods or ["none", "random", "max-loss", "coreset", "full"], args.seeds,
                       args.reference, args.fractions or [cfg.fraction], args.torchvision_baseline)


def test_torchrun_commands_launch_the_script_as_a_program():
    """torchrun runs its argument with Python unless told otherwise: `torchrun ... coreaug-train`
    fails with "can't open file .../coreaug-train"; --no-python or -m coreaug_fast.train work."""
    lines = [m.group(0) for m in re.finditer(r"torchrun[^`\n]*", README.read_text())]
    assert lines
    for line in lines:
        if "coreaug-train" in line:
            assert "--no-python" in line, line
