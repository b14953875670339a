"""`aelab tune` without a search: refusals before any trial, worker pinning, Ctrl-C inside a store write."""

import os
import signal
import time

import numpy as np
import pytest
import torch

from aelab.config import validate_params
from aelab.errors import ConfigError
from aelab.tracking import uninterruptible
from aelab.tuning import space, worker
from tests.helpers import tiny_raw


def test_conv_search_on_data_without_images_is_refused_before_any_trial():
    from aelab.data.prepared import PreparedData, Split

    x = np.zeros((4, 6), dtype=np.float32)
    flat = PreparedData(Split(x, None), Split(x, None), Split(x, None), meta={})
    with pytest.raises(ConfigError, match=r"tune.variant: conv needs image data, .* tune sparse instead"):
        space.check_space(validate_params(tiny_raw(variant="conv")), flat)


def test_workers_are_pinned_one_gpu_each(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert worker.worker_devices(3, "auto") == ["2", "5", "2"]
    assert worker.worker_devices(2, "cpu") == [None, None]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert worker.worker_devices(2, "gpu") == ["0", "1"]
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None


def test_ctrl_c_inside_a_store_write_is_delivered_when_the_write_ends():
    done = []
    with pytest.raises(KeyboardInterrupt), uninterruptible():
        with uninterruptible():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("inner")
        done.append("outer")
    assert done == ["inner", "outer"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_parallel_workers_draw_one_progress_bar_and_start_cold(monkeypatch) -> None:
    from aelab.tuning import worker

    started = []

    class Done:
        pid = 1

        def __init__(self, cmd, env):
            started.append(cmd)
            assert env["AELAB_WARM_START"] == "0" and env["AELAB_WORKERS"] == "3"

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(worker.subprocess, "Popen", Done)
    monkeypatch.setenv("AELAB_WARM_START", "1")  # on here, off in the workers
    monkeypatch.delenv("AELAB_WORKERS", raising=False)
    worker.launch_workers(3, ["--params", "params.yaml"], "cpu")
    assert len(started) == 3
    assert "train.progress_bar=false" not in started[0]
    assert all(cmd[-2:] == ["--set", "train.progress_bar=false"] for cmd in started[1:])
