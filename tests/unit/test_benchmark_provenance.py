"""Results files are committed: the paths a benchmark records must be relative to the project root."""

from __future__ import annotations

import json

from aelab.benchmarks.provenance import command_line, portable_argv, portable_override, portable_path
from aelab.evaluation import report


def test_paths_inside_the_project_become_relative_and_outside_ones_are_dropped(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "docs").mkdir(parents=True)
    monkeypatch.chdir(root)
    assert portable_path(root / "docs/results/x.json", root) == "docs/results/x.json"
    assert portable_path("docs/results/x.json", root) == "docs/results/x.json"  # relative to the working folder
    assert portable_path(tmp_path / "elsewhere.json", root) is None
    assert portable_override(f"data.path={root}/raw/mnist", root) == "data.path=raw/mnist"
    assert portable_override(f"data.path={tmp_path}/mnist", root) is None
    assert portable_override("evaluate.oneclass.hidden_dims=[512, 128, 32]", root) == (
        "evaluate.oneclass.hidden_dims=[512, 128, 32]"
    )
    argv = ["--dataset", "mnist", "--work", str(tmp_path / "scratch"), f"--out={root}/docs/results/m.json"]
    argv += ["--set", f"data.path={tmp_path}/x", "--set", "evaluate.oneclass.hidden_dims=[512, 128, 32]"]
    argv += ["--params", "src/deep-mnist.yaml"]
    assert portable_argv(argv, root) == [
        "--dataset",
        "mnist",
        "--out",
        "docs/results/m.json",
        "--set",
        "evaluate.oneclass.hidden_dims=[512, 128, 32]",
        "--params",
        "src/deep-mnist.yaml",
    ]
    command = command_line("aelab.benchmarks.oneclass", argv, root)
    assert str(tmp_path) not in command
    assert command.startswith("python -m aelab.benchmarks.oneclass --dataset mnist --out docs/results/m.json")
    assert "'evaluate.oneclass.hidden_dims=[512, 128, 32]'" in command  # quoted: it can be pasted into a shell


def test_report_of_a_results_file_without_a_params_file(tmp_path):
    results = {
        "dataset": "mnist",
        "command": "python -m aelab.benchmarks.oneclass --dataset mnist --variant conv",
        "params_file": None,  # the params file lay outside the project
        "oneclass": {"variant": "conv", "max_epochs": 1},
        "variant_settings": {"code_dim": 32},
        "machine": {"cpus": 2, "torch_threads": 2},
        "wall_seconds": {"prepare": 1.0, "total": 1.0},
        "metrics": {"conv": {"oneclass/auroc_mean": 0.9, "oneclass/auroc/0": 0.9}},
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    text = report.report(tmp_path / "unused.json", [path])
    assert "per-class conv models, 1 epochs each (from `?`)" in text
    assert "on 2 CPUs (2 torch threads): prepare 1 s" in text
