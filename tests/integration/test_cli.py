import subprocess
import sys

from tests.conftest import REPO


def _aelab(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "aelab.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_bad_param_is_one_line_and_exit_code_2():
    result = _aelab("prepare", "--set", "data.val_fraction=0.9")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "params.yaml: data.val_fraction: Input should be less than 0.5 (got 0.9)" in result.stderr


def test_missing_prepared_data_is_a_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    result = _aelab("reduce", "--method", "pca", cwd=tmp_path)
    assert result.returncode == 2
    assert "data/prepared/meta.json: not found; run `aelab prepare`" in result.stderr


def test_unknown_variant_is_rejected_by_the_parser():
    result = _aelab("train", "--variant", "huge")
    assert result.returncode == 2 and "invalid choice: 'huge'" in result.stderr
