import pytest

from aelab.config import apply_overrides, flatten, load_params, parse_override, validate_params
from aelab.errors import ConfigError
from tests.conftest import REPO, TINY_PARAMS


def test_repo_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "digits"
    assert params.variants.sparse.rho == pytest.approx(0.05)
    assert params.pca_components == params.variants.undercomplete.code_dim


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.lrr=0.1", "train.lrr: unknown key; allowed: "),
        ("train.lr=-1.0", "train.lr: Input should be greater than 0"),
        ("train.max_epochs=abc", "train.max_epochs: Input should be a valid integer"),
        ("data.source=imagenet", "data.source: Input should be 'digits', 'mnist', 'fashion-mnist' or 'arrays'"),
        ("variants.sparse.rho=1.5", "variants.sparse.rho: Input should be less than 1"),
        ("variants.undercomplete.hidden_dims=[]", "variants.undercomplete.hidden_dims: List should have at least 1"),
        ("variants.denoising.corruption=[{kind: blur}]", "variants.denoising.corruption.0"),
        ("evaluate.oneclass.score=[mse, blur]", "evaluate.oneclass.score: allowed: one of mse, "),
        ("evaluate.oneclass.score=[]", "or a non-empty list of mse, standardized"),
    ],
)
def test_bad_values_name_the_dotted_key_on_one_line(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_params(REPO / "params.yaml", [override])
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message
    assert message.startswith(str(REPO / "params.yaml"))


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match=r"train.lrr: unknown key; allowed: .*\blr\b"):
        load_params(REPO / "params.yaml", ["train.lrr=0.1"])


def test_overrides_parse_yaml_values_and_nest():
    assert parse_override("variants.sparse.hidden_dims=[128, 64]") == (["variants", "sparse", "hidden_dims"], [128, 64])
    raw = apply_overrides(TINY_PARAMS, ["train.lr=1.0e-3", "seed=3"])
    params = validate_params(raw)
    assert params.train.lr == pytest.approx(1e-3) and params.seed == 3
    assert TINY_PARAMS["seed"] == 7  # the original is untouched


@pytest.mark.parametrize("bad", ["novalue", "=3", "seed.x=1"])
def test_malformed_overrides(bad):
    with pytest.raises(ConfigError):
        load_params(REPO / "params.yaml", [bad])


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_arrays_source_requires_a_path():
    with pytest.raises(ConfigError, match="data.path is required"):
        validate_params({**TINY_PARAMS, "data": {"source": "arrays"}})


def test_flatten_gives_dotted_keys():
    flat = flatten(validate_params(TINY_PARAMS))
    assert flat["variants.sparse.rho"] == pytest.approx(0.1)
    assert flat["train.max_epochs"] == 2
    assert flat["variants.denoising.corruption"] == [{"kind": "masking", "p": 0.3}]
