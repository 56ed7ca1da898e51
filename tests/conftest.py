"""Shared test settings: quiet third-party telemetry, a faster Ray Train poll, locate ../shared beside the repo."""
import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
# Ray Train's controller polls its workers every 2 s; the tests' fits last seconds, so poll faster (before any
# ray.init, so every Ray process inherits it)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# ... and start no preemption-watcher actor (one more process per fit, polling every 5 s) for local clusters that
# are never drained
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# ... nor export Prometheus metrics of the controller and the workers (no metrics agent reads them here)
os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")

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


# `make test` runs the modules on several pytest-xdist workers (`--dist loadfile`: a module, and its Ray session, stays
# on one worker; a worker takes the next module when it is almost done). The modules that take longest (one or two
# Ray Train / Tune runs end to end) start first, so that no worker is still on one of them after the others are done.
HEAVY_FIRST = ("test_compare", "test_proxy_study", "test_search_and_train", "test_predict", "test_train_loop",
               "test_tune_search", "test_video_prepare", "test_faults", "test_export", "test_ray_search",
               "test_dnas_search", "test_parsec_job", "test_fusion", "test_train_candidates", "test_faults_train",
               "test_train_failure", "test_video_ray_data", "test_evolution", "test_cost", "test_latency",
               "test_cluster_placement", "test_model", "test_family_twostream")


def pytest_configure(config):
    """On an xdist worker, every ``ray.init`` starts its node again when the raylet missed Ray's fixed 30 s to
    register (several workers starting nodes at once on 2 busy cores): tests/ray_startup.py."""
    if hasattr(config, "workerinput"):
        import ray
        from ray_startup import retrying_init

        ray.init = retrying_init(ray.init)


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):
        return  # a plain (serial) run keeps pytest's order
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a module's tests keep their order


@pytest.fixture(scope="module", autouse=True)
def _no_ray_left_over():
    """Each module starts and ends without a Ray session: one that a module (or a job it ran in process) left open
    would otherwise meet the next module on the same xdist worker, whichever that is."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


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
