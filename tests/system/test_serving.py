"""`mlflow models serve` of a logged aelab model answers an HTTP request with the codes of `aelab encode`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import aelab
from tests.helpers import TABLE_COLUMNS, log_table_model

pytestmark = pytest.mark.slow


def test_mlflow_models_serve_answers_a_request(tmp_path):
    frame, info = log_table_model(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env_args = ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", info.model_uri, *env_args]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = json.dumps({"dataframe_split": frame[TABLE_COLUMNS].head(3).to_dict(orient="split")}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = json.loads(response.read())
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(1)
        expected = aelab.load(tmp_path / "table").encode(frame[TABLE_COLUMNS].head(3))
        np.testing.assert_allclose(np.asarray(answer["predictions"]), expected, rtol=1e-5, atol=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)
