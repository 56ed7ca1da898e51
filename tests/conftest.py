"""Shared test settings: quiet third-party telemetry, locate ../shared beside the repo."""
import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU local Ray for one test module (ends any session another module left running)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test (tiny tensors: a thread pool only adds contention), restored after."""
    from e3d.latency import torch_threads

    with torch_threads(1):
        yield
