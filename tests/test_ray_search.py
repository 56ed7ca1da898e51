"""Distributed island search (pipeline.search): plan, migration, checkpoint/resume, faults, MLflow, job.

The central property: the result depends only on (config, actors, chunk, migration settings), not on the
backend (Ray actors or in-process), on which actor answers first, on actors dying and being restarted, or
on the driver being killed and the search resumed. Each test compares against one uninterrupted run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from e3d.evolution import Evolution, SearchConfig, search
from e3d.spec import load_spec
from pipeline.search import (CheckpointError, Island, IslandSettings, Member, SearchCallback, island_seed,
                             island_sizes, load_checkpoint, migrates_after, plan_rounds, read_meta, resolve_fs,
                             round_iterations, run_distributed_search)

REPO = Path(__file__).resolve().parents[1]
CFG = SearchConfig.from_preset("S", population_size=32, iterations=6000, seed=3)
KW = dict(actors=2, chunk_iterations=500, migration_interval=1, migration_size=2)  # 6 rounds


class DriverDied(Exception):
    """Raised from on_round to stop the driver between rounds, as if its process had died."""


def members(result):
    return [(i.genome, i.score, i.flops, i.params, i.layers) for i in result.population]


def core(rows):
    """History rows without the timing columns."""
    return [{k: v for k, v in r.items() if k not in ("wall_s", "elapsed_s", "restarts")} for r in rows]


def die_after(round_no):
    def cb(info):
        if info.round == round_no:
            raise DriverDied(round_no)
    return cb


def same_outputs(a: Path, b: Path) -> None:
    assert (a / "best.json").read_text() == (b / "best.json").read_text()
    ta, tb = pq.read_table(a / "population.parquet"), pq.read_table(b / "population.parquet")
    assert ta.equals(tb)
    ha, hb = untimed(pq.read_table(a / "history.parquet")), untimed(pq.read_table(b / "history.parquet"))
    assert ha.equals(hb)


def untimed(table):
    return table.drop_columns([c for c in ("wall_s", "elapsed_s") if c in table.column_names])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted in-process run every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    return run_distributed_search(CFG, out_dir=out, backend="local", **KW)


# -- the plan --------------------------------------------------------------------------------------------
def test_round_plan_covers_exactly_the_budget():
    for iterations, actors, chunk in [(6000, 2, 500), (6001, 2, 500), (7, 3, 5), (500_000, 2, 25_000), (1, 4, 10)]:
        rounds = plan_rounds(iterations, actors, chunk)
        per_round = [round_iterations(iterations, actors, chunk, r) for r in range(rounds)]
        assert sum(map(sum, per_round)) == iterations
        assert all(len(p) == actors and max(p) <= chunk for p in per_round)
        assert rounds == -(-iterations // (actors * chunk))
    assert island_sizes(512, 2) == [256, 256] and island_sizes(10, 3) == [4, 3, 3]
    with pytest.raises(ValueError):
        island_sizes(2, 3)


def test_island_seeds_and_migration_schedule():
    assert island_seed(7, 0) == 7  # one island is the single-process search
    seeds = [island_seed(7, i) for i in range(8)]
    assert len(set(seeds)) == 8 and seeds == [island_seed(7, i) for i in range(8)]
    assert island_seed(8, 1) != island_seed(7, 1) and island_seed(8, 0) not in seeds
    s = IslandSettings(actors=3, migration_interval=2, migration_size=4)
    assert [migrates_after(s, r, 7) for r in range(7)] == [False, True, False, True, False, True, False]
    assert not any(migrates_after(IslandSettings(actors=1), r, 9) for r in range(9))
    assert not any(migrates_after(IslandSettings(actors=2, migration_size=0), r, 9) for r in range(9))


# -- equivalences ----------------------------------------------------------------------------------------
def test_one_island_is_exactly_the_single_process_search(tmp_path):
    single = search(CFG, out_dir=tmp_path / "single", progress=False)
    dist = run_distributed_search(CFG, out_dir=tmp_path / "dist", actors=1, chunk_iterations=700, backend="local")
    assert dist.rounds == 9 and dist.iterations == CFG.iterations
    assert members(dist) == [(i.genome, i.score, i.flops, i.params, i.layers) for i in single.population]
    assert dist.best == single.best and dist.best_score == single.best_score
    assert (tmp_path / "dist" / "best.json").read_text() == (tmp_path / "single" / "best.json").read_text()
    # info_json holds each member's seq: the merged population renumbers it by rank (islands count separately)
    assert pq.read_table(tmp_path / "dist" / "population.parquet").drop_columns(["info_json"]).equals(
        pq.read_table(tmp_path / "single" / "population.parquet").drop_columns(["info_json"]))


def test_outputs_and_merged_population(reference):
    out = Path(reference.out_dir)
    for name in ("best.json", "population.parquet", "history.parquet", "progress.png", "config.json"):
        assert (out / name).stat().st_size > 0, name
    assert load_spec(out / "best.json") == reference.best
    pop = pq.read_table(out / "population.parquet").to_pylist()
    assert [r["score"] for r in pop] == sorted((r["score"] for r in pop), reverse=True)
    assert pop[0]["score"] == reference.best_score == max(h["best"] for h in reference.island_history)
    assert len({r["spec_json"] for r in pop}) == len(pop)  # deduplicated across islands
    # the merged population is the union of the islands' final members
    ckpt = load_checkpoint(*resolve_fs(out))
    assert all(isinstance(m, Member) for s in ckpt.islands for m in s["members"])
    union = {m.genome for s in ckpt.islands for m in s["members"]}
    assert len(pop) == len(union) and len(union) <= CFG.population_size
    hist = pq.read_table(out / "history.parquet").to_pylist()
    assert [h["total_iterations"] for h in hist] == [1000 * r for r in range(1, 7)]
    assert all(h["best"] >= h["median"] for h in hist)
    assert json.loads((out / "config.json").read_text())["islands"]["actors"] == 2


def test_migration_ring_moves_elites(reference, tmp_path):
    rows = reference.island_history
    by_round = {}
    for r in rows:
        by_round.setdefault(r["round"], []).append(r)
    assert [r["immigrants_offered"] for r in by_round[1]] == [0, 0]
    assert all(r["immigrants_offered"] == 2 for rnd in range(2, 7) for r in by_round[rnd])
    assert sum(r["immigrants_accepted"] for r in rows) > 0
    isolated = run_distributed_search(CFG, out_dir=tmp_path, backend="local", **(KW | {"migration_size": 0}))
    assert all(r["immigrants_offered"] == 0 for r in isolated.island_history)
    assert members(isolated) != members(reference)
    # one step by hand: island 1 receives island 0's best and keeps it (better than its worst)
    states = [Evolution(c, CFG.initial_spec()).state_dict() for c in
              (SearchConfig.from_dict(CFG.to_dict() | {"population_size": 16, "seed": s}) for s in (1, 2))]
    a, b = Island(states[0]), Island(states[1])
    a.step([], 2000, 0)
    out_a = a.step([], 0, 1)
    star = out_a["emigrants"][0]
    assert isinstance(star, Member) and star.score == max(m.score for m in out_a["state"]["members"])
    out_b = b.step([star], 0, 0)
    assert out_b["immigrants_accepted"] == 1
    assert any(m.genome == star.genome for m in out_b["state"]["members"])


def test_member_layout_round_trips(reference):
    ckpt = load_checkpoint(*resolve_fs(reference.out_dir))
    space = CFG.space(CFG.initial_spec())
    m = ckpt.islands[0]["members"][0]
    ind = m.individual(space)
    assert Member.of(ind) == m and ind.genome == m.genome and (ind.score, ind.seq) == (m.score, m.seq)
    table = pq.read_table(Path(reference.out_dir) / "checkpoint" / read_meta(*resolve_fs(reference.out_dir))[
        "files"]["population"])
    assert set(Member._fields) <= set(table.column_names)  # the on-disk columns are the member's fields


def test_callbacks_see_start_rounds_finish_and_end(reference, tmp_path):
    class Recorder(SearchCallback):
        def __init__(self):
            self.events = []

        def on_start(self, driver):
            self.events.append(("start", driver.start_round, driver.rounds))

        def on_round(self, info):
            self.events.append(("round", info.round, info.history_row["iterations"]))

        def on_finish(self, result):
            self.events.append(("finish", result.best_score))

        def on_end(self, error):
            self.events.append(("end", error))

    rec = Recorder()
    run_distributed_search(CFG, out_dir=tmp_path / "a", backend="local", callbacks=[rec], **KW)
    assert rec.events == [("start", 0, 6), *[("round", r, 1000) for r in range(1, 7)],
                          ("finish", reference.best_score), ("end", None)]
    failing = Recorder()
    with pytest.raises(DriverDied):
        run_distributed_search(CFG, out_dir=tmp_path / "b", backend="local", callbacks=[failing],
                               on_round=die_after(2), **KW)
    assert [e[0] for e in failing.events] == ["start", "round", "round", "end"]
    assert isinstance(failing.events[-1][1], DriverDied)


# -- checkpoint and resume -------------------------------------------------------------------------------
def test_resume_after_the_driver_died_equals_uninterrupted(reference, tmp_path):
    with pytest.raises(DriverDied):
        run_distributed_search(CFG, out_dir=tmp_path, backend="local", on_round=die_after(4), **KW)
    meta = read_meta(*resolve_fs(tmp_path))
    assert meta["round"] == 3  # round 4's checkpoint is written while round 5 runs: never, here
    assert not (tmp_path / "best.json").exists()
    resumed = run_distributed_search(None, out_dir=tmp_path, resume=True, backend="local")
    assert resumed.resumed_from == 3
    assert members(resumed) == members(reference) and resumed.best == reference.best
    assert core(resumed.island_history) == core(reference.island_history)
    same_outputs(tmp_path, Path(reference.out_dir))


def test_resume_twice_and_resume_a_finished_search(reference, tmp_path):
    for stop in (2, 5):
        with pytest.raises(DriverDied):
            run_distributed_search(CFG, out_dir=tmp_path, resume=stop != 2, backend="local",
                                   on_round=die_after(stop), **({} if stop != 2 else KW))
    final = run_distributed_search(CFG, out_dir=tmp_path, resume=True, backend="local", **KW)
    assert members(final) == members(reference)
    again = run_distributed_search(None, out_dir=tmp_path, resume=True, backend="local")
    assert again.resumed_from == again.rounds == 6 and members(again) == members(reference)


def test_checkpoint_refusals(reference, tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_distributed_search(CFG, out_dir=tmp_path / "empty", resume=True, backend="local")
    out = reference.out_dir
    with pytest.raises(CheckpointError, match="already holds"):
        run_distributed_search(CFG, out_dir=out, backend="local", **KW)
    with pytest.raises(CheckpointError, match="actors"):
        run_distributed_search(None, out_dir=out, resume=True, backend="local", actors=3)
    with pytest.raises(CheckpointError, match="population_size"):
        run_distributed_search(SearchConfig.from_dict(CFG.to_dict() | {"population_size": 64}), out_dir=out,
                               resume=True, backend="local")
    with pytest.raises(CheckpointError, match="seed"):
        run_distributed_search(CFG, seed=4, out_dir=out, resume=True, backend="local")


def test_checkpoint_commit_survives_a_writer_that_died(reference, tmp_path):
    with pytest.raises(DriverDied):
        run_distributed_search(CFG, out_dir=tmp_path, backend="local", on_round=die_after(3), **KW)
    cdir = tmp_path / "checkpoint"
    committed = load_checkpoint(*resolve_fs(tmp_path))
    assert committed.round == 2 and sorted(p.name for p in cdir.iterdir()) == [  # and the round before
        "history-r000001.parquet", "history-r000002.parquet", "population-r000001.parquet",
        "population-r000002.parquet", "state-prev.parquet", "state.parquet"]
    # a writer that died after writing round 3's data files but before committing state.parquet
    (cdir / "population-r000003.parquet").write_bytes(b"half-written")
    (cdir / "state.parquet.tmp-deadbeef").write_bytes(b"garbage")
    again = load_checkpoint(*resolve_fs(tmp_path))
    assert again.round == 2 and again.islands == committed.islands and again.history == committed.history
    resumed = run_distributed_search(None, out_dir=tmp_path, resume=True, backend="local")
    assert members(resumed) == members(reference)
    assert sorted(p.name for p in cdir.iterdir()) == [
        "history-r000005.parquet", "history-r000006.parquet", "population-r000005.parquet",
        "population-r000006.parquet", "state-prev.parquet", "state.parquet"]
    # a committed state whose data file is gone is set aside (kept) and the round before is resumed
    (cdir / "population-r000006.parquet").unlink()
    assert load_checkpoint(*resolve_fs(tmp_path)).round == 5
    assert len(list(cdir.glob("state.parquet.corrupt-*"))) == 1


def test_checkpoint_and_outputs_on_a_pyarrow_filesystem(reference, tmp_path):
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(memory))
    root = f"/e3d-test-{os.getpid()}/search"
    try:
        with pytest.raises(DriverDied):
            run_distributed_search(CFG, out_dir=root, filesystem=fs, backend="local", on_round=die_after(4), **KW)
        assert read_meta(fs, root)["round"] == 3
        resumed = run_distributed_search(None, out_dir=root, filesystem=fs, resume=True, backend="local")
        assert members(resumed) == members(reference)
        with fs.open_input_stream(f"{root}/best.json") as fh:
            assert fh.read().decode() == (Path(reference.out_dir) / "best.json").read_text()
        table = pq.read_table(f"{root}/population.parquet", filesystem=fs)
        assert table.equals(pq.read_table(Path(reference.out_dir) / "population.parquet"))
        names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(root))}
        assert {"best.json", "population.parquet", "history.parquet", "progress.png", "checkpoint"} <= names
    finally:
        memory.rm(f"/e3d-test-{os.getpid()}", recursive=True)
    # and a URI
    uri_run = run_distributed_search(CFG, out_dir=f"file://{tmp_path}/uri", backend="local", **KW)
    assert members(uri_run) == members(reference) and (tmp_path / "uri" / "checkpoint" / "state.parquet").exists()


# -- Ray: actors, order independence, faults ---------------------------------------------------------------
def test_ray_actors_give_the_in_process_result(ray_cluster, reference, tmp_path):
    ray = ray_cluster
    pids = {}

    def spy(info):
        pids[info.round] = ray.get([h.pid.remote() for h in info.islands])

    result = run_distributed_search(CFG, out_dir=tmp_path, backend="ray", on_round=spy, **KW)
    assert members(result) == members(reference)
    assert core(result.island_history) == core(reference.island_history)
    same_outputs(tmp_path, Path(reference.out_dir))
    assert all(len(set(p)) == 2 and os.getpid() not in p for p in pids.values())  # two separate actor processes
    assert len({tuple(p) for p in pids.values()}) == 1  # the same actors all along
    assert result.restarts == 0


def test_dead_actors_are_restarted_from_the_checkpoint(ray_cluster, reference, tmp_path):
    ray = ray_cluster
    killed = {}

    def chaos(info):
        if info.round == 2:  # killed from outside (its next round is queued or running by now)
            killed["kill"] = ray.get(info.islands[1].pid.remote())
            ray.kill(info.islands[1])
        if info.round == 4:  # dies by itself in the middle of a later chunk
            killed["exit"] = ray.get(info.islands[0].arm_crash.remote(100))

    result = run_distributed_search(CFG, out_dir=tmp_path, backend="ray", on_round=chaos, **KW)
    assert result.restarts == 2 and set(killed) == {"kill", "exit"}
    assert members(result) == members(reference) and result.best == reference.best
    assert core(result.island_history) == core(reference.island_history)
    for island in (0, 1):  # counted in the history from the round that failed on
        counts = [r["restarts"] for r in result.island_history if r["island"] == island]
        assert counts[0] == 0 and counts[-1] == 1 and counts == sorted(counts)
    meta = read_meta(*resolve_fs(tmp_path))
    assert meta["restarts"] == [1, 1]


def test_faults_while_the_next_round_is_already_queued(ray_cluster, tmp_path):
    """Without migration the driver queues round r + 1 before collecting round r: a death must requeue it."""
    ray = ray_cluster
    kw = KW | {"migration_size": 0}
    local = run_distributed_search(CFG, out_dir=tmp_path / "local", backend="local", **kw)
    hits = []

    def chaos(info):
        if info.round == 2:  # round 3 is queued (or running) on this actor right now
            ray.kill(info.islands[1])
            hits.append("kill")
        if info.round == 3:
            ray.get(info.islands[0].arm_crash.remote(50))  # runs after the queued rounds: dies in a later one
            hits.append("arm")

    result = run_distributed_search(CFG, out_dir=tmp_path / "ray", backend="ray", on_round=chaos, **kw)
    assert hits == ["kill", "arm"] and result.restarts == 2
    assert members(result) == members(local)
    assert core(result.island_history) == core(local.island_history)


def test_an_island_that_keeps_dying_fails_the_search(ray_cluster, tmp_path):
    ray = ray_cluster

    def kill(info):
        if info.round == 1:
            ray.kill(info.islands[0])

    with pytest.raises(RuntimeError, match="island 0 died 1 times"):
        run_distributed_search(CFG, out_dir=tmp_path, backend="ray", max_restarts=0, on_round=kill, **KW)
    assert read_meta(*resolve_fs(tmp_path))["round"] >= 1  # what was done is kept for a resume


@pytest.mark.slow  # a search job in a subprocess, SIGKILLed and resumed (~25 s idle); `make test-slow`, run by CI
def test_search_job_killed_with_sigkill_resumes_to_the_same_result(ray_cluster, tmp_path):
    """jobs/search.py on the running cluster, SIGKILLed mid-search, then `--resume`d by a new driver."""
    address = ray_cluster.get_runtime_context().gcs_address
    out = tmp_path / "job"
    args = ["--preset", "S", "--population", "16", "--iterations", "120000", "--seed", "5", "--actors", "2",
            "--chunk-iterations", "500", "--migration-size", "2", "--cpus-per-actor", "0.5", "--no-mlflow",
            "--address", address]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(REPO / "jobs" / "search.py")]
    proc = subprocess.Popen(cmd + args + ["--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    state = out / "checkpoint" / "state.parquet"
    deadline = time.time() + 60
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            try:
                meta = read_meta(*resolve_fs(out))
            except Exception:  # being replaced right now
                meta = None
            if meta and meta["round"] >= 5:
                proc.send_signal(signal.SIGKILL)
                killed_at = meta["round"]
                break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert killed_at is not None, proc.stderr.read().decode()[-2000:]
    meta = read_meta(*resolve_fs(out))
    assert meta["round"] < meta["rounds"] == 120 and not (out / "best.json").exists()
    done = subprocess.run(cmd + ["--resume", str(out), "--address", address, "--no-mlflow", "--cpus-per-actor",
                                 "0.5"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] >= killed_at - 1 and summary["iterations"] == 120000
    config = SearchConfig.from_preset("S", population_size=16, iterations=120000, seed=5)
    uninterrupted = run_distributed_search(config, out_dir=tmp_path / "ref", backend="local", actors=2,
                                           chunk_iterations=500, migration_size=2)
    same_outputs(out, tmp_path / "ref")
    assert summary["best_score"] == uninterrupted.best_score


# -- MLflow ------------------------------------------------------------------------------------------------
def test_mlflow_run_params_metrics_artifacts_and_resume(reference, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import Tracking

    tracking = Tracking.local(tmp_path / "runs", "test-search")
    with pytest.raises(DriverDied):
        run_distributed_search(CFG, out_dir=tmp_path / "out", backend="local", tracking=tracking,
                               on_round=die_after(4), **KW)
    run_id = read_meta(*resolve_fs(tmp_path / "out"))["mlflow_run_id"]
    result = run_distributed_search(None, out_dir=tmp_path / "out", resume=True, backend="local",
                                    tracking=tracking)
    assert result.run_id == run_id and members(result) == members(reference)
    client = MlflowClient(tracking.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "E3D-S-search-seed3-islands2"
    p = run.data.params
    assert p["population_size"] == "32" and p["iterations"] == "6000" and p["islands.actors"] == "2"
    assert p["islands.migration_size"] == "2" and p["islands.chunk_iterations"] == "500"
    assert float(p["best.stentr"]) == pytest.approx(reference.best_score, abs=1e-4)
    # one value per round; rounds 1-3 were logged twice (before the crash and after the resume), identically
    for name, attr in (("best_score", "best"), ("median_score", "median")):
        logged = {}
        for m in client.get_metric_history(run_id, name):
            assert logged.setdefault(m.step, m.value) == m.value
        assert logged == {r: getattr(h, attr) for r, h in enumerate(reference.history, start=1)}
    arts = {a.path for a in client.list_artifacts(run_id, "search")} | {a.path for a in client.list_artifacts(run_id)}
    assert {"search/best.json", "search/population.parquet", "search/history.parquet", "search/progress.png",
            "spec"} <= arts
    spec_files = [a.path for a in client.list_artifacts(run_id, "spec")]
    assert spec_files == ["spec/E3D-S-search-seed3.json"]


def test_search_job_in_process_backend_and_bad_resume(reference, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_job", REPO / "jobs" / "search.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = tmp_path / "o"
    rc = job.main(["--backend", "local", "--no-mlflow", "--population", "32", "--iterations", "6000", "--seed", "3",
                   "--actors", "2", "--chunk-iterations", "500", "--migration-size", "2", "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rounds"] == 6 and summary["iterations"] == 6000
    same_outputs(out, Path(reference.out_dir))  # the job builds the same config from its options
    assert job.main(["--backend", "local", "--no-mlflow", "--resume", str(out), "--actors", "3"]) == 2
    assert "actors" in capsys.readouterr().err
    assert job.main(["--backend", "local", "--no-mlflow", "--out", str(out)]) == 2  # would overwrite
