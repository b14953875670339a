"""No credential reaches the MLflow store, and a bad tracking URI is one line within seconds."""

from __future__ import annotations

import socket
import time

import mlflow
import pytest

from aelab.config import TrackingConfig, flatten
from aelab.errors import ConfigError
from aelab.tracking import check_tracking_uri, log_params, mlflow_logger, redact, redact_text, tracking_uri

DB_URL = "postgresql://optuna:hunter2@db.example.org:5432/studies"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DB_URL, "postgresql://optuna:***@db.example.org:5432/studies"),
        ("mysql+pymysql://u:p%40ss@h/db", "mysql+pymysql://u:***@h/db"),
        ("https://user:tok@mlflow.example.org", "https://user:***@mlflow.example.org"),
        ("https://mlflow.example.org:5000/path", "https://mlflow.example.org:5000/path"),  # a port is no password
        ("postgresql://user@host/db", "postgresql://user@host/db"),  # no password to hide
        ("data/studies/x.journal", "data/studies/x.journal"),
    ],
)
def test_redact_text_hides_url_passwords_only(text, expected):
    assert redact_text(text) == expected


def test_redact_masks_secret_keys_but_not_lookalikes():
    found = redact(
        {
            "db.password": "pw",
            "api_token": "t",
            "aws_secret_access_key": "k",
            "s3.key": "k",
            "data.label_column": "label",
            "tune.storage": DB_URL,
            "urls": [DB_URL],
            "unset_token": None,
        }
    )
    assert found["db.password"] == found["api_token"] == found["aws_secret_access_key"] == found["s3.key"] == "***"
    assert found["data.label_column"] == "label" and found["unset_token"] is None
    assert found["tune.storage"] == found["urls"][0] == "postgresql://optuna:***@db.example.org:5432/studies"


def test_logged_params_never_hold_the_password(tiny_params):
    """The path `train` takes: its flattened params through our MLflow logger, and the tune parent run's batch."""
    params = tiny_params.model_copy(
        update={
            "tune": tiny_params.tune.model_copy(update={"storage": DB_URL}),
            "tracking": tiny_params.tracking.model_copy(update={"uri": "https://u:hunter2@mlflow.example.org"}),
        }
    )
    logger = mlflow_logger(TrackingConfig(), "redaction", {"note": DB_URL})
    logger.log_hyperparams({**flatten(params), "world_size": 1})
    client = mlflow.MlflowClient(tracking_uri(TrackingConfig()))
    log_params(client, logger.run_id, {"tune.storage": DB_URL})
    run = client.get_run(logger.run_id)
    stored = {**run.data.params, **run.data.tags}
    assert "hunter2" not in repr(stored)
    assert run.data.params["tune.storage"] == "postgresql://optuna:***@db.example.org:5432/studies"
    assert run.data.params["tracking.uri"] == "https://u:***@mlflow.example.org"
    assert run.data.tags["note"] == "postgresql://optuna:***@db.example.org:5432/studies"


@pytest.mark.parametrize("uri", ["postgres-sql://h/db", "ftp://host/mlruns", "htp://localhost:5000"])
def test_unknown_tracking_scheme_is_one_line(uri):
    with pytest.raises(ConfigError, match=r"^tracking.uri: .* has an unknown scheme .*; allowed: sqlite, postgresql"):
        check_tracking_uri(uri)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_tracking_server_is_one_line_at_once():
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"no MLflow server answers at http://u:\*\*\*@127.0.0.1:\d+ within"):
        check_tracking_uri(f"http://u:hunter2@127.0.0.1:{_closed_port()}", timeout=2.0)
    assert time.monotonic() - start < 5


def test_silent_tracking_server_times_out_quickly():
    with socket.socket() as server:  # accepts connections (the kernel's backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        start = time.monotonic()
        with pytest.raises(ConfigError, match=r"within 1 s"):
            check_tracking_uri(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=1.0)
        assert time.monotonic() - start < 4


def test_train_logger_checks_the_uri_before_anything_else(tiny_params):
    with pytest.raises(ConfigError, match="unknown scheme 'bogus'"):
        mlflow_logger(TrackingConfig(uri="bogus://x"), "run", {})


def test_local_and_database_uris_pass_without_a_connection():
    for uri in ("sqlite:///mlruns/mlflow.db", "postgresql+psycopg2://u:p@db.invalid/x", "mlruns"):
        check_tracking_uri(uri)


def test_evaluate_stops_at_once_when_the_training_run_store_is_gone(tmp_path, tiny_params):
    """`evaluate` logs into the tracking store of the params; a server that is gone is one line, at once."""
    from aelab.evaluation.runs import log_evaluation
    from aelab.evaluation.study import Outputs

    params = tiny_params.derive({"tracking": {"uri": _closed_url()}}, "test")
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"no MLflow server answers at http://127\.0\.0\.1:\d+"):
        log_evaluation(
            params, {"undercomplete": {}}, Outputs(tmp_path / "ev"), tmp_path / "models", tmp_path / "m.json"
        )
    assert time.monotonic() - start < 10


def _closed_url() -> str:
    return f"http://127.0.0.1:{_closed_port()}"
