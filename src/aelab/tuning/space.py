"""The search space: what a trial samples, how its values become params, and the digest that names a study."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from aelab.config import SPACE_OF, TUNABLE, Params, TuneConfig
from aelab.data.prepared import PreparedData
from aelab.errors import ConfigError
from aelab.models.components import plan_blocks
from aelab.paths import BEST_PARAMS_FILE
from aelab.training.digest import PLACEMENT_KEYS, digest

if TYPE_CHECKING:  # Optuna is imported where trials are run: `aelab train --variant tuned` needs only the YAML
    import optuna
    from optuna.trial import FrozenTrial

SEARCH_VERSION = 1
"""Bumped when the trial procedure changes, so old studies are not continued with different trials."""


def suggest(trial: optuna.Trial, cfg: TuneConfig, default_lr: float) -> dict[str, Any]:
    """The trial's settings: sampled where the space gives a range, fixed where it gives a value."""
    space = cfg.space
    values: dict[str, Any] = {}
    for name in ("hidden_units", *SPACE_OF[cfg.variant]):
        r = getattr(space, name)
        values[name] = trial.suggest_int(name, r.low, r.high, log=r.log) if r.searched else r.low
    for name in ("rho", "beta", "lr"):
        r = getattr(space, name)
        if r is None:
            values[name] = default_lr
        else:
            values[name] = trial.suggest_float(name, r.low, r.high, log=r.log) if r.searched else r.low
    return values


def params_overrides(cfg: TuneConfig, values: dict[str, Any]) -> dict[str, Any]:
    """Trial values as a nested params fragment (the content of `best_params.yaml`'s `params`).

    It sets every field of the tuned variant, so the result does not depend on `variants` in params.yaml.
    """
    rho, beta = float(values["rho"]), float(values["beta"])
    if cfg.variant == "conv":
        shape = cfg.space.block.model_dump(mode="json")
        channels = int(values["channels"])
        variant = {
            "blocks": [{**shape, "channels": channels * 2**i} for i in range(int(values["blocks"]))],
            "code_dim": int(values["hidden_units"]),
            "decoder": cfg.space.decoder,
            "sparsity": {"rho": rho, "beta": beta},
            "max_epochs": None,
            "corruption": [],
        }
    else:
        variant = {"hidden_dims": [int(values["hidden_units"])] * int(values["depth"]), "rho": rho, "beta": beta}
    return {"variants": {cfg.variant: variant}, "train": {"lr": float(values["lr"])}}


def tuned_params(params: Params, path: Path = BEST_PARAMS_FILE) -> tuple[Params, str]:
    """Params for `aelab train --variant tuned`: params.yaml with the best trial's values; and the base variant."""
    try:
        best = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run `aelab tune` (or `dvc repro tune`) first") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(best, dict) or not isinstance(best.get("params"), dict) or best.get("variant") not in TUNABLE:
        raise ConfigError(
            f"{path}: expected `variant:` ({' or '.join(TUNABLE)}) and a `params` mapping, as `aelab tune` writes"
        )
    return params.derive(best["params"], str(path)), best["variant"]


def search_digest(params: Params, data: PreparedData) -> str:
    """Everything that changes what a trial computes; not the budget, timeout, storage or study name."""
    tune = params.tune.model_dump(mode="json", exclude={"n_trials", "timeout", "storage", "study"})
    exclude = {"max_epochs", "early_stopping_patience", *PLACEMENT_KEYS}  # the budget, and where it runs
    train = params.train.model_dump(mode="json", exclude=exclude)
    key = {
        "version": SEARCH_VERSION,
        "seed": params.seed,
        "model": params.model.model_dump(mode="json"),
        "train": train,
        "tune": tune,
        "data": data.meta,
    }
    return digest(key, length=10)


def study_name(params: Params, digest: str) -> str:
    return params.tune.study or f"{params.tune.variant}-{digest}"


def trial_values(trial: FrozenTrial, cfg: TuneConfig, default_lr: float) -> dict[str, Any]:
    """All settings of a finished trial (sampled ones from the trial, fixed ones from the space)."""
    from optuna.trial import FixedTrial

    fixed = FixedTrial(trial.params)
    return suggest(fixed, cfg, default_lr)


def check_space(params: Params, data: PreparedData) -> None:
    """A space in which some trials could not even be built is a `ConfigError` before the first trial."""
    cfg = params.tune
    if cfg.variant != "conv":
        return
    if data.image_shape is None:
        raise ConfigError(
            "tune.variant: conv needs image data, but the prepared dataset has no image_shape; tune sparse instead"
        )
    deepest = [{**cfg.space.block.model_dump(), "channels": 1}] * cfg.space.blocks.high
    plan_blocks(data.image_shape, deepest, f"tune.space (with blocks {cfg.space.blocks.high})")
