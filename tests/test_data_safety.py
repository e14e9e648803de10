"""Nothing a user wrote is lost and no folder contradicts itself: run folders that are not
empty are refused unless --resume or --overwrite, --overwrite deletes only this package's
files, writes are atomic, checkpoints carry a checksum, and a comparison's whole plan is
checked before its first run (coreaug_fast/train/files.py, checkpoint.py, compare.py)."""
import json
import os
import stat

import pytest
import torch

from coreaug_fast.train import TrainConfig, main, train
from coreaug_fast.train import compare, files
from coreaug_fast.train.config import UsageError
from coreaug_fast.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--dataset", "synthetic", "--train-size", "20", "--image-size", "8", "--quiet", "--device", "cpu",
        "--copies", "1"]
CMP = ["compare", *TINY, "--epochs", "1", "--methods", "random,coreset", "--seeds", "0"]


def _run(out, *extra):
    return main(TINY + ["--epochs", "1", "--out", str(out), *extra])


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("coreaug-train: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


# ------------------------------------------------------------------ run folders

def test_a_finished_run_is_not_replaced_by_another_configuration(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    before = _snapshot(out)
    assert set(before) == {"checkpoint.pt", "epochs.jsonl", "summary.json"}
    capsys.readouterr()
    assert _run(out, "--lr", "0.05") == 2
    _one_line(capsys, f"--out {out} is not empty", "--resume", "--overwrite")
    assert _snapshot(out) == before


def test_the_python_api_refuses_too(tmp_path):
    cfg = TrainConfig(dataset="synthetic", train_size=20, image_size=8, epochs=1, device="cpu", quiet=True,
                      copies=1, out=str(tmp_path / "run"))
    train(cfg)
    with pytest.raises(UsageError, match="is not empty"):
        train(cfg)


def test_overwrite_deletes_the_old_run_before_training(tmp_path, monkeypatch, capsys):
    """Interrupted in its first epoch, an --overwrite run leaves no file of the old run
    (no old summary beside the new log)."""
    out = tmp_path / "run"
    assert _run(out) == 0

    def interrupted(self, progress=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run_epoch", interrupted)
    assert _run(out, "--lr", "0.05", "--overwrite") == 130
    assert sorted(p.name for p in out.iterdir()) == ["epochs.jsonl"]
    assert (out / "epochs.jsonl").read_text() == ""
    monkeypatch.undo()
    assert _run(out, "--lr", "0.05", "--overwrite") == 0
    assert json.loads((out / "summary.json").read_text())["config"]["lr"] == 0.05


def test_overwrite_never_deletes_files_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "summary.json").write_text("{}")
    assert _run(out, "--overwrite") == 2
    _one_line(capsys, "--overwrite", "notes.txt", "refusing to delete")
    assert (out / "notes.txt").read_text() == "mine" and (out / "summary.json").exists()


def test_resume_and_overwrite_exclude_each_other(tmp_path, capsys):
    assert _run(tmp_path / "run", "--resume", "--overwrite") == 2
    _one_line(capsys, "--resume and --overwrite exclude each other")
    assert not (tmp_path / "run").exists()


def test_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(TINY + ["--epochs", "1", "--out", ""]) == 2
    _one_line(capsys, "--out must name a folder")
    assert list(tmp_path.iterdir()) == []


def test_a_torn_log_line_is_dropped_on_resume(tmp_path):
    """epochs.jsonl is append-only; a kill mid-line is repaired from the checkpoint's records."""
    out = tmp_path / "run"
    assert _run(out, "--epochs", "3", "--stop-after", "1") == 0
    with open(out / "epochs.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # the kill
    assert main(TINY + ["--epochs", "3", "--out", str(out), "--resume"]) == 0
    lines = (out / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["epochs"] == [json.loads(line) for line in lines]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "summary.json"
    files.write_json(path, {"old": 1})

    def half(f):
        f.write(b'{"new": ')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        files.replace_atomically(path, half)
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_get_the_mode_a_plain_open_would(tmp_path, umask):
    """A temporary file is private (0600); the file it becomes must not be (results a group
    shares were unreadable to it)."""
    old = os.umask(umask)
    try:
        files.write_json(tmp_path / "summary.json", {"a": 1})
        with open(tmp_path / "plain.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "summary.json") == mode(tmp_path / "plain.json") == 0o666 & ~umask


def test_a_refused_out_leaves_no_folders_behind(tmp_path, monkeypatch):
    """--out a/b/c is created to be probed: when the probe fails, the folders it made go again
    (the run is refused "before the folder is touched"); keep=False removes them either way."""
    files.check_writable(tmp_path / "kept" / "b")
    assert (tmp_path / "kept" / "b").is_dir()
    files.check_writable(tmp_path / "gone" / "b", keep=False)
    assert not (tmp_path / "gone").exists()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.tempfile, "mkstemp", full)
    with pytest.raises(UsageError, match="cannot write there"):
        files.check_writable(tmp_path / "a" / "b" / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_write_probe_has_a_name_of_its_own(tmp_path):
    """Data-parallel ranks probe --out at once: one rank's probe must never delete another's
    (the old fixed name ".coreaug-write-test" did), and a probe never makes a folder 'not empty'."""
    other = tmp_path / ".coreaug-write-test"
    other.write_text("")
    theirs = tmp_path / (files.PROBE_PREFIX + "rank1")
    theirs.write_text("")
    files.check_writable(tmp_path)
    assert other.exists() and theirs.exists()
    assert files.contents(tmp_path) == [other]  # the old name is not a probe of this version
    theirs_only = tmp_path / "x"
    theirs_only.mkdir()
    (theirs_only / (files.PROBE_PREFIX + "rank0")).write_text("")
    files.check_folder(theirs_only, resume=False, overwrite=False)


# ------------------------------------------------------------------ checkpoints

def _finished(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--epochs", "2", "--stop-after", "1") == 0
    return out, out / "checkpoint.pt"


def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, capsys):
    """4 KiB of zeros in the middle of a real checkpoint (here inside the model's weights
    and momentum): loading it succeeds, the checksum does not."""
    out, ckpt = _finished(tmp_path)
    data = bytearray(ckpt.read_bytes())
    assert len(data) > 40_000
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(4096)
    ckpt.write_bytes(bytes(data))
    before = _snapshot(out)
    capsys.readouterr()
    assert main(TINY + ["--epochs", "2", "--out", str(out), "--resume"]) == 2
    _one_line(capsys, f"--resume: {ckpt} is damaged")
    assert _snapshot(out) == before


def test_checkpoint_checksum_covers_every_value(tmp_path):
    from coreaug_fast.train import checkpoint

    _, ckpt = _finished(tmp_path)
    state = torch.load(ckpt, weights_only=True)
    assert state["sha256"] == checkpoint.checksum(state)
    state["optimizer"]["state"][0]["momentum_buffer"].view(-1)[3] += 1e-7
    assert state["sha256"] != checkpoint.checksum(state)
    state = torch.load(ckpt, weights_only=True)
    state["records"][0]["test_acc"] += 1
    assert state["sha256"] != checkpoint.checksum(state)


@pytest.mark.parametrize("where, needle", [
    ("top", "was written by another version of coreaug-train (unknown keys policy_state)"),
    ("config", "unknown settings sampler (written by another version"),
    ("missing", "missing sha256"),
])
def test_checkpoint_with_unknown_keys_is_one_line(tmp_path, capsys, where, needle):
    from coreaug_fast.train import checkpoint

    out, ckpt = _finished(tmp_path)
    state = torch.load(ckpt, weights_only=True)
    if where == "top":
        state["policy_state"] = 1
    elif where == "config":
        state["config"]["sampler"] = "trivialaugment"
    else:
        del state["sha256"]
    if where != "missing":
        state["sha256"] = checkpoint.checksum(state)
    torch.save(state, ckpt)
    capsys.readouterr()
    assert main(TINY + ["--epochs", "2", "--out", str(out), "--resume"]) == 2
    _one_line(capsys, str(ckpt), needle)


# ------------------------------------------------------------------ compare

def test_compare_refuses_a_used_folder_and_overwrite_replaces_it(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(CMP + ["--out", str(out)]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(CMP + ["--lr", "0.05", "--out", str(out)]) == 2
    _one_line(capsys, f"--out {out} is not empty", "continue the comparison there with --resume")
    assert _snapshot(out) == before
    # --overwrite: the old comparison's runs are gone, not mixed into the new table
    assert main([*CMP[:-4], "--methods", "random", "--seeds", "1", "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.md", "compare.png",
                                                     "random-0.1-s1"]


def test_compare_overwrite_keeps_foreign_files(tmp_path, capsys):
    out = tmp_path / "cmp"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "data.bin").write_text("x")
    assert main(CMP + ["--out", str(out), "--overwrite"]) == 2
    _one_line(capsys, "refusing to delete", "mine/")
    assert (out / "mine" / "data.bin").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--methods", "random,random,none"], "--methods must be distinct (each method is one row of the table); "
                                          "repeated: random"),
    (["--methods", "random,coreset", "--fractions", "0.1,0.2,0.1"],
     "--fractions must be distinct (each fraction is one row of the table); repeated: 0.1"),
    (["--methods", "random,coreset", "--seeds", "0,-1"], "--seeds must be integers in [0, 4294967295], got -1"),
    (["--methods", "random,coreset", "--seeds", f"0,{2**32}"], "--seeds must be integers in [0, 4294967295]"),
])
def test_the_whole_plan_is_checked_before_the_first_run(tmp_path, capsys, monkeypatch, extra, needle):
    monkeypatch.setattr(compare, "train", lambda *a, **k: pytest.fail("trained before refusing"))
    out = tmp_path / "cmp"
    assert main(["compare", *TINY, "--epochs", "1", *extra, "--out", str(out)]) == 2
    _one_line(capsys, needle)
    assert not out.exists()


def test_compare_resume_restarts_a_run_killed_before_its_first_checkpoint(tmp_path):
    out = tmp_path / "cmp"
    assert main(CMP + ["--out", str(out)]) == 0
    (out / "coreset-0.1-s0" / "summary.json").unlink()
    (out / "coreset-0.1-s0" / "checkpoint.pt").unlink()
    (out / "coreset-0.1-s0" / "epochs.jsonl").write_text('{"epo')
    kept = (out / "random-0.1-s0" / "summary.json").stat().st_mtime_ns
    assert main(CMP + ["--out", str(out), "--resume"]) == 0
    assert (out / "random-0.1-s0" / "summary.json").stat().st_mtime_ns == kept
    assert json.loads((out / "coreset-0.1-s0" / "summary.json").read_text())["complete"]
    assert os.path.getsize(out / "coreset-0.1-s0" / "epochs.jsonl") > 10
