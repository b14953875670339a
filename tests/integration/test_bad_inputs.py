"""Bad input, as a careful user or an attacker would give it: each case is one `aelab: error: ...` line, exit 2.

Every case runs the real command line in-process, in a scratch project (tiny digits params); the setup returns
the arguments (and may write files). Focused tests of the same holes: test_pca_io (no pickle), test_tracking_safety
(secrets, tracking URI), test_fileio (torn journal, folder lock, quarantine).
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from aelab.cli import main
from aelab.data.sources import IDX_DATASETS, IdxDataset, md5sum
from tests.conftest import TINY_PARAMS

Setup = Callable[[Path, pytest.MonkeyPatch], list[str]]


def _arrays(path: Path, **extra: object) -> list[str]:
    sets = ["data.source=arrays", f"data.path={path}", *(f"data.{k}={v}" for k, v in extra.items())]
    return ["prepare", *(a for s in sets for a in ("--set", s))]


def _npy(values: np.ndarray) -> Setup:
    def setup(root: Path, _: pytest.MonkeyPatch) -> list[str]:
        np.save(root / "x.npy", values)
        return _arrays(root / "x.npy")

    return setup


def _csv(text: str, **extra: object) -> Setup:
    def setup(root: Path, _: pytest.MonkeyPatch) -> list[str]:
        (root / "d.csv").write_text(text)
        return _arrays(root / "d.csv", **extra)

    return setup


def _csv_rows(header: str, row: Callable[[int], str]) -> str:
    return "\n".join([header, *(row(i) for i in range(20))]) + "\n"


def _truncated_npz(root: Path, _: pytest.MonkeyPatch) -> list[str]:
    np.savez(root / "d.npz", x=np.zeros((20, 4)))
    data = (root / "d.npz").read_bytes()
    (root / "d.npz").write_bytes(data[: len(data) // 2])
    return _arrays(root / "d.npz")


def _idx_folder(root: Path, monkeypatch: pytest.MonkeyPatch, truncate: bool, register: bool) -> list[str]:
    """A tiny MNIST-shaped folder; `register` makes its MD5s the published ones (else the real MNIST ones count)."""
    folder = root / "idx"
    folder.mkdir()
    for name, shape in (("train-images-idx3-ubyte.gz", (30, 4, 4)), ("t10k-images-idx3-ubyte.gz", (10, 4, 4))):
        header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in shape)
        payload = header + bytes(int(np.prod(shape)))
        (folder / name).write_bytes(gzip.compress(payload[:-5] if truncate else payload))
    for name, n in (("train-labels-idx1-ubyte.gz", 30), ("t10k-labels-idx1-ubyte.gz", 10)):
        (folder / name).write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(n)))
    if register:
        files = {f.name: md5sum(f) for f in folder.iterdir()}
        monkeypatch.setitem(IDX_DATASETS, "mnist", IdxDataset(files=files, mirrors=()))
    return ["prepare", "--set", "data.source=mnist", "--set", f"data.path={folder}"]


def _prepared(root: Path) -> None:
    from aelab.config import load_params
    from aelab.stages.prepare import prepare

    prepare(load_params(root / "params.yaml").data, 7)


def _torn(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _torn_prepared_split(root: Path, _: pytest.MonkeyPatch) -> list[str]:
    _prepared(root)
    _torn(root / "data/prepared/train.npz")
    return ["reduce", "--method", "pca"]


def _torn_codes(root: Path, _: pytest.MonkeyPatch) -> list[str]:
    from aelab.config import load_params
    from aelab.data.prepared import load_prepared
    from aelab.stages.reduce import reduce

    _prepared(root)
    reduce(load_params(root / "params.yaml"), "pca", load_prepared(root / "data/prepared"))
    _torn(root / "data/codes/pca/codes.npz")
    return ["evaluate"]


def _train_with(uri: Callable[[], str]) -> Setup:
    def setup(root: Path, _: pytest.MonkeyPatch) -> list[str]:
        _prepared(root)
        return ["train", "--variant", "undercomplete", "--set", f"tracking.uri={uri()}"]

    return setup


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _set(*overrides: str) -> Setup:
    return lambda root, _: ["prepare", *(a for o in overrides for a in ("--set", o))]


CASES: dict[str, tuple[Setup, str]] = {
    # params (these already gave one line)
    "negative lr": (_set("train.lr=-1.0"), r"train\.lr: Input should be greater than 0"),
    "unknown key": (_set("train.lrr=0.1"), r"train\.lrr: unknown key; allowed: .*\blr\b"),
    "malformed override": (_set("novalue"), r"override 'novalue': expected key=value"),
    # trainer strings, checked when params load (were a Lightning traceback after the data loaded)
    "unknown accelerator": (
        _set("train.accelerator=tpux"),
        r"train\.accelerator: unknown accelerator; allowed: auto, cpu, cuda, gpu, mps, tpu \(got 'tpux'\)",
    ),
    "unknown strategy": (
        _set("train.strategy=bogus"),
        r"train\.strategy: unknown strategy; allowed: auto, ddp, .*fsdp.* \(got 'bogus'\)",
    ),
    # journal paths stay inside the project
    "journal outside the project": (
        _set("tune.storage=../x.journal"),
        r"tune\.storage: a journal path must stay inside the project: relative, without '\.\.' leaving it",
    ),
    "absolute journal path": (_set("tune.storage=/tmp/x.journal"), r"tune\.storage: a journal path must stay inside"),
    # user arrays (NaN, text and empty already gave one line)
    "NaN values": (_npy(np.full((20, 4), np.nan)), r"x\.npy: features contain NaN or infinite values"),
    "text values": (_npy(np.full((20, 4), "a")), r"x\.npy: features must be numeric, got <U1"),
    "empty array": (_npy(np.zeros((0, 4))), r"x\.npy: expected an array .* at least 10 rows, got \(0, 4\)"),
    "complex values": (_npy(np.ones((20, 4)) * (1 + 2j)), r"x\.npy: features are complex \(complex128\); allowed"),
    "beyond float32": (_npy(np.full((20, 4), 1.0e300)), r"x\.npy: features too large for float32 \(largest .*1e\+300"),
    "truncated user npz": (_truncated_npz, r"d\.npz: cannot read \("),
    "text column, labels not named": (
        _csv(_csv_rows("a,b,kind", lambda i: f"{i},1,{'xy'[i % 2]}")),
        r"d\.csv: non-numeric feature columns kind; name the label column in data\.label_column$",
    ),
    "label column used as a feature": (
        _csv(_csv_rows("a,b,label", lambda i: f"{i},1,{i % 2}")),
        r"d\.csv: column 'label' looks like labels but data\.label_column is not set",
    ),
    "val_fraction too small": (
        _set("data.val_fraction=0.001"),
        r"data\.val_fraction: 0\.001 of \d+ rows is too small for a stratified split over 10 classes",
    ),
    # IDX files (a truncated one already gave one line)
    "truncated IDX": (
        lambda root, mp: _idx_folder(root, mp, truncate=True, register=True),
        r"-images-idx3-ubyte\.gz: truncated or corrupt IDX file: header says",
    ),
    "IDX file on disk with the wrong MD5": (
        lambda root, mp: _idx_folder(root, mp, truncate=False, register=False),
        r"idx/train-images-idx3-ubyte\.gz: MD5 differs from the published mnist file \(expected f68b3c2d",
    ),
    # truncated pipeline files name the command that writes them again
    "truncated prepared split": (
        _torn_prepared_split,
        r"data/prepared/train\.npz: cannot read prepared split \(.*\); run `aelab prepare` again",
    ),
    "truncated codes": (_torn_codes, r"data/codes/pca/codes\.npz: cannot read codes .*`aelab reduce --method pca`"),
    # the tracking store, checked before training starts
    "unknown tracking scheme": (
        _train_with(lambda: "bogus://x"),
        r"tracking\.uri: 'bogus://x' has an unknown scheme 'bogus'; allowed: sqlite",
    ),
    "unreachable tracking server": (
        _train_with(_closed_port),
        r"tracking\.uri: no MLflow server answers at http://127\.0\.0\.1:\d+ within 5 s",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line(case, tmp_path, monkeypatch, capsys):
    setup, expected = CASES[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AELAB_PROJECT_ROOT", str(tmp_path))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    argv = setup(tmp_path, monkeypatch)
    capsys.readouterr()
    start = time.monotonic()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("aelab: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert len(lines[0]) < 1000  # one readable line, not a dump
    assert __import__("re").search(expected, lines[0]), lines[0]
    assert time.monotonic() - start < 60
