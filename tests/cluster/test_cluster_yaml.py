"""Both cluster configs pass Ray's own validation, offline (no cloud, no ssh), plus the properties
docs/cluster.md promises. Fast: part of the default `make test`."""
from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
pytest.importorskip("jsonschema")  # Ray's validate_config needs it (ray[default])
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
AWS = REPO / "cluster.yaml"
LOCAL = REPO / "cluster" / "local.yaml"
SCRIPT = REPO / "scripts" / "local_cluster.sh"


def load(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def ray_validated(config: dict) -> dict:
    """What `ray up` does before it talks to any provider: fill in the provider's defaults, then
    check against ray/autoscaler/ray-schema.json and Ray's extra rules (commands._bootstrap_config)."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def flag(cmd: str, name: str) -> str | None:
    for tok in shlex.split(cmd.replace(";", " ; ")):
        if tok.startswith(f"--{name}="):
            return tok.split("=", 1)[1]
    return None


@pytest.fixture(scope="module")
def aws() -> dict:
    return load(AWS)


@pytest.fixture(scope="module")
def local() -> dict:
    return load(LOCAL)


# ---------------------------------------------------------------- cluster.yaml (AWS)

def test_aws_config_passes_ray_validation(aws):
    prepared = ray_validated(aws)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_aws_node_types_cpu_head_cpu_search_gpu_train(aws):
    types = aws["available_node_types"]
    head = types[aws["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != aws["head_node_type"]}
    assert head["resources"].get("GPU", 0) == 0
    assert not re.match(r"^(g|p)\d", head["node_config"]["InstanceType"]), "head must be a CPU instance"
    gpu = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    cpu = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) == 0}
    assert gpu and cpu, "need a CPU worker type (search) and a GPU worker type (training)"
    for k, v in gpu.items():
        assert re.match(r"^(g|p)\d", v["node_config"]["InstanceType"]), k
    for k, v in workers.items():
        assert 0 <= v["min_workers"] <= v["max_workers"], k
        assert v["max_workers"] >= 1, k
    assert sum(v["max_workers"] for v in workers.values()) <= aws["max_workers"]
    assert aws["idle_timeout_minutes"] > 0
    for k, v in types.items():  # no node falls back to Ray's built-in (Ubuntu 18.04) default AMI
        assert v["node_config"].get("ImageId"), k


def test_aws_node_types_carry_the_resources_the_job_pins_to(aws):
    """search_cpu (one per CPU) on the search nodes, train_gpu (one per GPU) on the train nodes: the names
    jobs/search_and_train.py pins its islands and Train workers to, and asks the autoscaler for; so the GPU
    type can start at zero nodes."""
    from pipeline.context import SEARCH_RESOURCE
    from pipeline.train.resources import TRAIN_RESOURCE

    types = aws["available_node_types"]
    search = [t for t in types.values() if t["resources"].get(SEARCH_RESOURCE)]
    train = [t for t in types.values() if t["resources"].get(TRAIN_RESOURCE)]
    assert search and all(t["resources"][SEARCH_RESOURCE] == t["resources"]["CPU"] for t in search)
    assert train and all(t["resources"][TRAIN_RESOURCE] == t["resources"].get("GPU") for t in train)
    assert all(t["min_workers"] == 0 for t in train), "the job asks for train nodes: none need to idle"


def test_aws_setup_installs_the_project_from_its_repository(aws):
    cmds = "\n".join(aws["setup_commands"])
    assert "git clone" in cmds
    assert re.search(r'pip install .*-c constraints\.txt .*-e "?\.\[ray\]"?', cmds), cmds
    assert "python -c" in cmds and "import e3d, pipeline" in cmds  # fails the node if the install is broken
    assert aws["file_mounts"], "the data location is mounted/synced"
    starts = " ".join(aws["head_start_ray_commands"])
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in starts
    assert any("$RAY_HEAD_IP" in c for c in aws["worker_start_ray_commands"])


def test_aws_mlflow_server_needs_a_login_and_stays_on_the_private_address(aws):
    """The head generates the credentials before Ray starts (so before any worker joins), every worker gets
    them from the head (cluster_synced_files) and every node's shell sources them; the server is
    cluster/mlflow_server.sh (basic-auth app) on the head's private address, never 0.0.0.0."""
    head_setup = aws["head_setup_commands"]
    made = [i for i, c in enumerate(head_setup) if "mlflow_server.sh credentials" in c]
    assert made, head_setup
    assert "~/.e3d-ray-secrets" in aws["cluster_synced_files"]
    for cmds in (head_setup, aws["worker_setup_commands"]):
        assert any(".e3d-ray-secrets/mlflow.env" in c and "~/.e3d-mlflow.env" in c for c in cmds), cmds
    assert any("~/.e3d-mlflow.env" in c for c in aws["setup_commands"])  # ~/.bashrc sources it
    starts = aws["head_start_ray_commands"]
    server = [c for c in starts if "mlflow_server.sh start" in c]
    assert len(server) == 1 and "hostname -I" in server[0], starts
    everything = "\n".join(str(c) for k in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                                            "head_start_ray_commands", "worker_start_ray_commands") for c in aws[k])
    assert "0.0.0.0" not in everything and "mlflow server" not in everything  # only through the script
    assert "MLFLOW_TRACKING_PASSWORD" not in everything  # never on a command line
    script = (REPO / "cluster" / "mlflow_server.sh").read_text()
    assert "--app-name basic-auth" in script and "umask 077" in script


# ---------------------------------------------------------------- cluster/local.yaml

def test_local_config_passes_ray_validation(local):
    prepared = ray_validated(local)
    assert prepared["provider"]["type"] == "local"
    assert prepared["available_node_types"]["local.cluster.node"]["max_workers"] == 0


def test_local_config_is_loopback_only(local):
    assert local["provider"]["head_ip"] == "127.0.0.1"
    assert local["provider"].get("worker_ips", []) == []
    proxy = local["auth"]["ssh_proxy_command"].split()
    assert proxy[0] == "nc" and proxy[1] == "127.0.0.1"
    start = local["head_start_ray_commands"][-1]
    assert flag(start, "node-ip-address") == "127.0.0.1"
    assert flag(start, "dashboard-host") == "127.0.0.1"
    assert flag(start, "num-cpus") == "2"
    # not Ray's defaults, which a test run's ray.init() on the same machine may be using
    assert flag(start, "port") not in (None, "6379")
    assert flag(start, "dashboard-port") not in (None, "8265")
    assert flag(start, "dashboard-agent-listen-port") not in (None, "52365")
    assert flag(start, "ray-client-server-port") not in (None, "10001")
    env = " ".join(local["setup_commands"])
    assert "RAY_TMPDIR=" in env and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in env
    assert ".venv/bin" in env


def test_local_config_agrees_with_the_harness_script(local):
    text = SCRIPT.read_text()
    const = dict(re.findall(r"^(LC_[A-Z]+)=(\S+)", text, flags=re.M))
    assert local["auth"]["ssh_user"] == const["LC_USER"]
    assert local["auth"]["ssh_private_key"] == f"{const['LC_DIR']}/id_ed25519"
    assert local["auth"]["ssh_proxy_command"] == f"nc {const['LC_HOST']} {const['LC_PORT']}"
    assert f"RAY_TMPDIR={const['LC_DIR']}/tmp" in " ".join(local["setup_commands"])


def test_ray_validation_is_not_vacuous(aws, local):
    """The same check refuses a typo'd field (so the passes above mean something)."""
    import jsonschema

    bad = copy.deepcopy(aws)
    bad["available_node_types"]["train"]["max_worker"] = 4
    with pytest.raises(jsonschema.ValidationError):
        ray_validated(bad)
    bad = copy.deepcopy(local)
    bad["auth"]["ssh_port"] = 2222  # Ray 2.60 has no such option (hence the nc ProxyCommand)
    with pytest.raises(jsonschema.ValidationError):
        ray_validated(bad)
