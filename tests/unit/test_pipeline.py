"""Pipeline wiring without running it: `dvc.yaml` as DVC reads it agrees with the CLI, params.yaml, the source tree
and `aelab.paths` (the full `dvc repro` is a system test)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from aelab.cli import _parser
from aelab.config import load_params
from aelab.paths import (
    BEST_PARAMS_FILE,
    CODES_DIR,
    EVALUATION_DIR,
    METRICS_DIR,
    MODELS_DIR,
    ONECLASS_MODEL_DIR,
    PREPARED_DIR,
    SETTINGS_DIR,
    TUNED,
)
from aelab.training.digest import training_settings
from tests.conftest import REPO

TRAINING_STAGES = ("settings", "train_tuned", "tune", "evaluate", "oneclass")  # train@<variant>: via settings
# the variants `dvc repro` trains: `pipeline.variants` of the shipped params.yaml
VARIANTS = load_params(REPO / "params.yaml").pipeline.variants
# what every stage that trains a network reads: a change to any of these must re-run all of them
TRAINING_PARAMS = {
    "seed",
    "model.activation",
    "model.dropout",
    "model.loss",
    "train.batch_size",
    "train.lr",
    "train.weight_decay",
    "train.optimizer",
    "train.precision",
    "train.accumulate_grad_batches",
}


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The stages as DVC expands them (foreach, ${item}), read from a copy of dvc.yaml and params.yaml."""
    from dvc.repo import Repo

    folder = tmp_path_factory.mktemp("dvc")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, folder / name)
    repo = Repo.init(str(folder), no_scm=True)
    try:
        repo.index.check_graph()  # no cycles, no output claimed twice
        found = {}
        for stage in repo.index.stages:
            params = {key for dep in stage.deps if hasattr(dep, "params") for key in dep.params}
            files = {Path(dep.def_path) for dep in stage.deps if not hasattr(dep, "params")}
            param_files = {Path(dep.def_path) for dep in stage.deps if hasattr(dep, "params")}
            outs = {Path(out.def_path) for out in stage.outs}
            found[stage.name] = {"cmd": stage.cmd, "params": params, "deps": files, "outs": outs}
            found[stage.name]["param_files"] = param_files
        return found
    finally:
        repo.close()


def test_stages_cover_every_variant(stages) -> None:
    expected = {"prepare", "settings", "reduce_pca", "tune", "train_tuned", "reduce_tuned", "evaluate", "oneclass"}
    expected |= {f"{kind}@{variant}" for kind in ("train", "reduce") for variant in VARIANTS}
    assert set(stages) == expected


def test_every_command_is_one_the_cli_accepts(stages) -> None:
    parser = _parser()
    for name, stage in stages.items():
        program, *argv = stage["cmd"].split()
        assert program == "aelab", name
        args = parser.parse_args(argv)
        item = name.partition("@")[2] or {"train_tuned": TUNED, "reduce_tuned": TUNED, "reduce_pca": "pca"}.get(name)
        if item:  # the stage's variant is the one its command trains or encodes
            assert item in (getattr(args, "variant", None), getattr(args, "method", None)), name


def test_outputs_are_where_the_code_writes_them(stages) -> None:
    assert stages["prepare"]["outs"] == {PREPARED_DIR}
    assert stages["settings"]["outs"] == {SETTINGS_DIR}
    for variant in (*VARIANTS, TUNED):
        train = stages[f"train@{variant}" if variant != TUNED else "train_tuned"]
        reduce = stages[f"reduce@{variant}" if variant != TUNED else "reduce_tuned"]
        assert train["outs"] == {MODELS_DIR / variant} and reduce["outs"] == {CODES_DIR / variant}
    assert stages["reduce_pca"]["outs"] == {CODES_DIR / "pca"}
    assert stages["tune"]["outs"] == {BEST_PARAMS_FILE}
    assert stages["evaluate"]["outs"] == {EVALUATION_DIR, METRICS_DIR}
    assert stages["oneclass"]["outs"] == {ONECLASS_MODEL_DIR}


def test_every_dependency_exists_or_is_made_by_a_stage(stages) -> None:
    outs = {out for stage in stages.values() for out in stage["outs"]}
    for name, stage in stages.items():
        for dep in stage["deps"]:
            # data/codes holds data/codes/pca; data/settings/<variant>.json lies in data/settings
            made = any(dep == out or out.is_relative_to(dep) or dep.is_relative_to(out) for out in outs)
            assert made or (REPO / dep).exists(), f"{name}: {dep} is neither in the checkout nor a stage's output"
        assert stage["param_files"] <= {Path("params.yaml"), BEST_PARAMS_FILE}, name
    assert BEST_PARAMS_FILE in stages["train_tuned"]["param_files"]  # the search's result feeds the tuned model


def test_every_params_key_is_in_params_yaml(stages) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in stages.items():
        for key in stage["params"]:
            node = raw
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{name}: params key {key} not in params.yaml"
                node = node[part]


def test_training_stages_read_the_same_training_params(stages) -> None:
    for name, stage in stages.items():
        if name.startswith(TRAINING_STAGES):
            assert stage["params"] >= TRAINING_PARAMS, f"{name} misses {sorted(TRAINING_PARAMS - stage['params'])}"
    for variant in VARIANTS:
        assert stages[f"train@{variant}"]["deps"] >= {PREPARED_DIR, SETTINGS_DIR / f"{variant}.json"}
        assert not stages[f"train@{variant}"]["params"]  # only what its settings file holds
        assert stages[f"reduce@{variant}"]["deps"] >= {PREPARED_DIR, MODELS_DIR / variant}
    assert "variants" in stages["evaluate"]["params"]  # the one-class models are trained like the variants


def test_the_settings_stage_tracks_every_value_a_settings_file_holds(stages) -> None:
    tracked = stages["settings"]["params"]
    assert {"seed", "variants", "train.max_epochs", "pipeline.variants"} <= tracked
    for variant in VARIANTS:
        settings = training_settings(load_params(REPO / "params.yaml"), variant)
        assert set(settings) == {"seed", "model", "variant", "train"}
        assert {f"model.{key}" for key in settings["model"]} <= tracked, variant
        assert {f"train.{key}" for key in settings["train"] if key != "epochs"} <= tracked, variant


def test_a_variant_with_its_own_epochs_keeps_its_settings_when_train_max_epochs_changes() -> None:
    base = load_params(REPO / "params.yaml", ["variants.stacked.max_epochs=20"])
    changed = load_params(REPO / "params.yaml", ["variants.stacked.max_epochs=20", "train.max_epochs=3"])
    assert training_settings(base, "stacked") == training_settings(changed, "stacked")
    assert training_settings(changed, "undercomplete")["train"]["epochs"] == 3
    assert training_settings(base, "undercomplete") != training_settings(changed, "undercomplete")
