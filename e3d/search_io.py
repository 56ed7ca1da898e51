"""Search outputs, the same for every strategy (:class:`e3d.strategy.SearchOutcome`):

- ``best.json``: the best spec (loadable by :func:`e3d.spec.load_spec`);
- ``population.parquet``: one row per candidate, best first: spec JSON, the ranking score, STEntr,
  HomoEntr, cost, shape summaries, the strategy and its provenance notes;
- ``history.parquet``: the strategy's history (one row per round / chunk / epoch);
- ``progress.png``: best and median score over the history, when it has them;
- ``pareto.csv`` / ``pareto.png``: score, FLOPs and params of every candidate, the Pareto front marked;
- ``outcome.json``: the summary and the settings (:func:`read_outcome` restores the whole outcome).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .spec import ArchSpec, save_specs
from .statefile import CorruptFile, file_sha256, read_json, set_aside, write_json
from .strategy import Candidate, SearchOutcome

POPULATION_FILE, HISTORY_FILE, BEST_FILE, PLOT_FILE, OUTCOME_FILE = (
    "population.parquet", "history.parquet", "best.json", "progress.png", "outcome.json")

_SCHEMA = pa.schema([("name", pa.string()), ("rank", pa.int32()), ("spec_json", pa.string()),
                     ("score", pa.float64()), ("stentr", pa.float64()), ("homoentr", pa.float64()),
                     ("flops", pa.int64()), ("params", pa.int64()), ("layers", pa.int32()),
                     ("family", pa.string()), ("kernel_pattern", pa.string()), ("depths", pa.list_(pa.int32())),
                     ("widths", pa.list_(pa.int32())), ("bottlenecks", pa.list_(pa.int32())),
                     ("stem", pa.int32()), ("head", pa.int32()), ("source", pa.string()),
                     ("scores_json", pa.string()), ("info_json", pa.string())])


def candidates_table(candidates: Sequence[Candidate]) -> pa.Table:
    """One row per candidate, in the given (ranked) order."""
    rows = []
    for rank, c in enumerate(candidates):
        s = c.spec
        rows.append({"name": s.name, "rank": rank, "spec_json": s.to_json(indent=None), "score": c.score,
                     "stentr": c.scores.get("stentr"), "homoentr": c.scores.get("homoentr"), "flops": c.flops,
                     "params": c.params, "layers": c.layers, "family": s.family, "kernel_pattern": s.kernel_pattern,
                     "depths": list(s.depths), "widths": list(s.widths),
                     "bottlenecks": [x.bottleneck for x in s.stages], "stem": s.stem.out, "head": s.head.out,
                     "source": c.source, "scores_json": json.dumps(dict(c.scores)),
                     "info_json": json.dumps(dict(c.info), default=str)})
    return pa.Table.from_pylist(rows, schema=_SCHEMA)


def read_candidates(path: str | Path) -> list[Candidate]:
    """The candidates of a ``population.parquet``, best first."""
    out = []
    for r in pq.read_table(path).to_pylist():
        spec = ArchSpec.from_dict(json.loads(r["spec_json"]))
        scores = json.loads(r["scores_json"]) if r.get("scores_json") else {
            k: r[k] for k in ("stentr", "homoentr") if r.get(k) is not None}
        out.append(Candidate(spec, r["flops"], r["params"], r["layers"], r["score"], scores,
                             r.get("source") or "", json.loads(r["info_json"]) if r.get("info_json") else {}))
    return out


def read_population(path: str | Path) -> list[ArchSpec]:
    """The specs of a ``population.parquet``, best first (e.g. to seed or resume a search)."""
    table = pq.read_table(path, columns=["spec_json"])
    return [ArchSpec.from_dict(json.loads(s)) for s in table.column("spec_json").to_pylist()]


def history_table(history: Sequence[dict[str, Any]]) -> pa.Table:
    if not history:
        return pa.table({"step": pa.array([], pa.int64())})
    keys = list(dict.fromkeys(k for h in history for k in h))  # every row's columns, not only the first's
    return pa.Table.from_pylist([{k: h.get(k) for k in keys} for h in history])


def plot_progress(history: Sequence[dict[str, Any]], path: str | Path, title: str = "search") -> bool:
    """Best and median score over the history's ``total_iterations`` (or ``step``); False when it has none."""
    rows = [h for h in history if "best" in h and math.isfinite(float(h["best"]))]
    if not rows:
        return False
    import matplotlib  # noqa: PLC0415 - only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    xkey = "total_iterations" if "total_iterations" in rows[0] else "step"
    x = [h.get(xkey, i) for i, h in enumerate(rows)]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(x, [h["best"] for h in rows], label="best")
    if "median" in rows[0]:
        ax.plot(x, [h["median"] for h in rows], label="median")
    ax.set_xlabel(xkey.replace("_", " "))
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_outcome(out_dir: str | Path, outcome: SearchOutcome) -> dict[str, Path]:
    """Write the output files of ``outcome`` under ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f for k, f in (("best", BEST_FILE), ("population", POPULATION_FILE),
                                      ("history", HISTORY_FILE), ("plot", PLOT_FILE), ("outcome", OUTCOME_FILE))}
    save_specs(outcome.best.spec, paths["best"])
    pq.write_table(candidates_table(outcome.candidates), paths["population"])
    pq.write_table(history_table(outcome.history), paths["history"])
    if not plot_progress(outcome.history, paths["plot"], title=f"{outcome.strategy}: {outcome.score_name}"):
        del paths["plot"]
    from .pareto import write_pareto  # noqa: PLC0415

    paths |= write_pareto(out, outcome.candidates, title=f"{outcome.strategy}: {outcome.score_name}, FLOPs, params")
    doc = {"summary": outcome.summary(), "settings": outcome.settings, "strategy": outcome.strategy,
           "score_name": outcome.score_name, "wall_s": outcome.wall_s, "cpu_s": outcome.cpu_s,
           "extra": outcome.extra}
    doc["files"] = {f: file_sha256(out / f) for f in CHECKED_FILES}  # what read_outcome verifies
    write_json(paths["outcome"], doc, default=_json_default)  # written last: its presence means the outcome is complete
    return paths


CHECKED_FILES = (BEST_FILE, POPULATION_FILE, HISTORY_FILE)


def read_outcome(out_dir: str | Path, *, say: Callable[[str], None] | None = None) -> SearchOutcome | None:
    """The outcome written by :func:`write_outcome`, or None when ``out_dir`` holds no complete one.

    ``outcome.json`` carries a checksum and the SHA-256 of the files it needs; when one of them does not read
    back (a copy cut short, a crash without atomic rename), it is reported with ``say`` (default: stderr), set
    aside (renamed ``*.corrupt-<time>``, never deleted) with ``outcome.json``, and None is returned: the search is
    redone (the island search resumes from its checkpoint)."""
    out = Path(out_dir)
    if not (out / OUTCOME_FILE).is_file():
        return None
    try:
        return _read_outcome(out)
    except CorruptFile as exc:
        report = say or (lambda line: print(line, file=sys.stderr))
        moved = [set_aside(p) for p in dict.fromkeys((exc.path, out / OUTCOME_FILE)) if p.exists()]
        report(f"[search] {exc.path} is corrupt ({exc.reason}): set aside as "
               f"{', '.join(p.name for p in moved)}; the search is redone from its checkpoint")
        return None


def _read_outcome(out: Path) -> SearchOutcome:
    doc = read_json(out / OUTCOME_FILE)
    for name, digest in (doc.get("files") or {}).items():
        path = out / name
        if not path.is_file():
            raise CorruptFile(path, "missing")
        if file_sha256(path) != digest:
            raise CorruptFile(path, "checksum mismatch")
    try:
        history = pq.read_table(out / HISTORY_FILE).to_pylist() if (out / HISTORY_FILE).is_file() else []
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise CorruptFile(out / HISTORY_FILE, f"not a Parquet table ({exc})") from None
    try:
        candidates = read_candidates(out / POPULATION_FILE)
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptFile(out / POPULATION_FILE, f"does not read back ({type(exc).__name__}: {exc})") from None
    try:
        return SearchOutcome(strategy=doc["strategy"], score_name=doc["score_name"], candidates=candidates,
                             history=history, settings=doc.get("settings", {}), wall_s=doc.get("wall_s", 0.0),
                             cpu_s=doc.get("cpu_s"), extra=doc.get("extra", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFile(out / OUTCOME_FILE, f"incomplete ({type(exc).__name__}: {exc})") from None


def _json_default(x: Any) -> Any:
    if isinstance(x, (tuple, set)):
        return list(x)
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return str(x)
