"""Shared test settings: quiet third-party telemetry, a faster Ray Train poll, locate ../shared beside the repo."""
import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
# Ray Train's controller polls its workers every 2 s; the tests' fits last seconds, so poll faster (before any
# ray.init, so every Ray process inherits it)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI runs on a clean clone without a Hypothesis database: derandomized, every run draws the same examples, so a
# failure there reproduces here. `make test-props` (`pytest -m hypothesis --hypothesis-profile=explore`) draws new
# ones on every run and prints the @reproduce_failure blob of a failure: keep the failing input as an @example.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("ci")


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
