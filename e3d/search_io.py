"""Search outputs, shared by the single-process search and the distributed one (pipeline/):

- ``best.json``: the best spec (loadable by :func:`e3d.spec.load_spec`);
- ``population.parquet``: one row per member, best first, with scores, costs and the spec JSON;
- ``history.parquet``: one row per chunk of iterations (best/median score, outcome counters);
- ``progress.png``: best and median score over iterations.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .evolution import ChunkStats, Individual, SearchConfig
from .scores import homoentr, stentr
from .spec import ArchSpec, save_specs

POPULATION_FILE, HISTORY_FILE, BEST_FILE, PLOT_FILE = ("population.parquet", "history.parquet", "best.json",
                                                       "progress.png")


def population_table(population: Sequence[Individual], name: str = "E3D-search") -> pa.Table:
    """Rows best first: name, rank, spec_json, score, stentr, homoentr, flops, params, layers, summaries."""
    rows: dict[str, list] = {k: [] for k in ("name", "rank", "spec_json", "score", "stentr", "homoentr", "flops",
                                             "params", "layers", "kernel_pattern", "depths", "widths",
                                             "bottlenecks", "stem", "head")}
    for rank, ind in enumerate(sorted(population, key=lambda i: (-i.score, i.seq))):
        spec = ind.spec(f"{name}-{rank:03d}")
        for key, value in (("name", spec.name), ("rank", rank), ("spec_json", spec.to_json(indent=None)),
                           ("score", ind.score), ("stentr", _finite_or_none(stentr, spec)),
                           ("homoentr", homoentr(spec)), ("flops", ind.flops), ("params", ind.params),
                           ("layers", ind.layers), ("kernel_pattern", spec.kernel_pattern),
                           ("depths", list(spec.depths)), ("widths", list(spec.widths)),
                           ("bottlenecks", [s.bottleneck for s in spec.stages]), ("stem", spec.stem.out),
                           ("head", spec.head.out)):
            rows[key].append(value)
    schema = pa.schema([("name", pa.string()), ("rank", pa.int32()), ("spec_json", pa.string()),
                        ("score", pa.float64()), ("stentr", pa.float64()), ("homoentr", pa.float64()),
                        ("flops", pa.int64()), ("params", pa.int64()), ("layers", pa.int32()),
                        ("kernel_pattern", pa.string()), ("depths", pa.list_(pa.int32())),
                        ("widths", pa.list_(pa.int32())), ("bottlenecks", pa.list_(pa.int32())),
                        ("stem", pa.int32()), ("head", pa.int32())])
    return pa.table(rows, schema=schema)


def _finite_or_none(fn, spec: ArchSpec) -> float | None:
    try:
        return fn(spec)
    except ValueError:  # InfiniteScoreError: possible for stentr when the search ran on homoentr
        return None


def history_table(history: Sequence[ChunkStats]) -> pa.Table:
    """One row per chunk; ``elapsed_s`` is cumulative."""
    rows = [h.to_dict() for h in history]
    elapsed = 0.0
    for r in rows:
        elapsed += r["wall_s"]
        r["elapsed_s"] = elapsed
    if not rows:
        return pa.table({"total_iterations": pa.array([], pa.int64())})
    return pa.Table.from_pylist(rows)


def read_population(path: str | Path) -> list[ArchSpec]:
    """The specs of a ``population.parquet``, best first (e.g. to seed or resume a search)."""
    table = pq.read_table(path, columns=["spec_json"])
    return [ArchSpec.from_dict(json.loads(s)) for s in table.column("spec_json").to_pylist()]


def plot_progress(history: Sequence[ChunkStats], path: str | Path, title: str = "E3D search") -> None:
    import matplotlib  # noqa: PLC0415 - only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    x = [h.total_iterations for h in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(x, [h.best for h in history], label="best")
    ax.plot(x, [h.median for h in history], label="median")
    ax.set_xlabel("iterations")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_search_outputs(out_dir: str | Path, best: ArchSpec, population: Sequence[Individual],
                         history: Sequence[ChunkStats], config: SearchConfig | None = None,
                         name: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the four output files (and ``config.json`` when ``config`` is given); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f for k, f in (("best", BEST_FILE), ("population", POPULATION_FILE),
                                      ("history", HISTORY_FILE), ("plot", PLOT_FILE))}
    save_specs(best, paths["best"])
    pq.write_table(population_table(population, name or best.name), paths["population"])
    pq.write_table(history_table(history), paths["history"])
    title = f"{name or best.name}: {config.score if config else 'score'}"
    plot_progress(history, paths["plot"], title=title)
    if config is not None:
        paths["config"] = out / "config.json"
        paths["config"].write_text(json.dumps(config.to_dict() | (extra or {}), indent=2) + "\n")
    return paths
