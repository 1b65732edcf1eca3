"""The two module fixtures each trainer's tests share: the tiny data, made once, and one run on it
that several tests read (training is the slow part, so it runs once per module)."""
from __future__ import annotations

import pytest


def data_and_trained_run(make_data, run, tiny_config, data_folder: str, *overrides: str):
    """Fixtures (``data``, ``trained``): ``make_data``'s folder, and (OUT, the run's figures) of ``run``
    (a ray_jobs.training job, in this process) with ``tiny_config(data, *overrides)`` on ``data / data_folder``."""

    @pytest.fixture(scope="module")
    def data(tmp_path_factory):
        return make_data(tmp_path_factory.mktemp("data"))

    @pytest.fixture(scope="module")
    def trained(data, tmp_path_factory):
        out = tmp_path_factory.mktemp("run")
        return out, run(tiny_config(data, *overrides), str(data / data_folder), out, progress=False)

    return data, trained
