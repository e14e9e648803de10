"""`make gpu-check`'s peer install (bench/gpu_check.py install_peer_wheels): the wheels that
`make gpu-wheels` fetched are installed with no index into a private folder that the
benchmark processes then import from; without wheels nothing changes."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402


def _wheel(folder: Path, name: str, body: str) -> Path:
    """A minimal pure-Python wheel of one module ``name`` whose source is ``body``."""
    dist = f"{name}-0.1.dist-info"
    path = folder / f"{name}-0.1-py3-none-any.whl"
    files = {f"{name}.py": body,
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{dist}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


def test_wheels_install_offline_into_the_private_folder_the_phases_import_from(tmp_path, monkeypatch):
    wheels, site = tmp_path / "whl", tmp_path / "site"
    wheels.mkdir()
    _wheel(wheels, "peer_one", "VALUE = 11\n")
    _wheel(wheels, "peer_two", "VALUE = 22\n")
    site.mkdir()
    (site / "stale.py").write_text("")  # left by an earlier run: the folder is emptied first
    monkeypatch.setenv("PYTHONPATH", "/already/there")
    result = {}
    gpu_check.install_peer_wheels(result, wheels, site)
    assert result["peer_wheels"]["installed"] == ["peer_one-0.1-py3-none-any.whl", "peer_two-0.1-py3-none-any.whl"]
    assert result["peer_wheels"]["why"] is None
    assert os.environ["PYTHONPATH"] == os.pathsep.join([str(site), "/already/there"])
    assert not (site / "stale.py").exists()
    # a phase is a child process: it inherits the variable and imports the peers
    run = subprocess.run([sys.executable, "-c", "import peer_one, peer_two; print(peer_one.VALUE + peer_two.VALUE)"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.stdout.strip() == "33", run.stderr


def test_without_wheels_nothing_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/already/there")
    for wheels in (tmp_path / "absent", tmp_path):  # no folder, and a folder with no wheel
        result = {}
        gpu_check.install_peer_wheels(result, wheels, tmp_path / "site")
        assert result["peer_wheels"]["installed"] == [] and "make gpu-wheels" in result["peer_wheels"]["why"]
        assert os.environ["PYTHONPATH"] == "/already/there"
        assert not (tmp_path / "site").exists()


def test_a_broken_wheel_is_reported_and_the_path_is_left_alone(tmp_path, monkeypatch):
    wheels = tmp_path / "whl"
    wheels.mkdir()
    (wheels / "broken-0.1-py3-none-any.whl").write_bytes(b"not a zip file")
    monkeypatch.setenv("PYTHONPATH", "/already/there")
    result = {}
    gpu_check.install_peer_wheels(result, wheels, tmp_path / "site")
    assert result["peer_wheels"]["installed"] == []
    assert result["peer_wheels"]["why"]  # pip's own words, for the report
    assert os.environ["PYTHONPATH"] == "/already/there"
