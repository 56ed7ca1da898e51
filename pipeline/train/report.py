"""Results of trained candidates: the result record, training-curve plots and the summary table."""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence


@dataclass
class CandidateResult:
    """One trained candidate. Accuracies are percentages; ``val_*`` are the last epoch's single-view
    validation, ``mv_*`` the final multi-view evaluation (K clips x crops, averaged softmax)."""

    name: str
    run_name: str
    spec: dict[str, Any]
    trained_spec: dict[str, Any]
    flops: int = 0
    params: int = 0
    stentr: float = float("nan")
    homoentr: float = float("nan")
    input: str = ""
    train_input: str = ""
    train_flops: int = 0
    epochs: int = 0
    val_top1: float = float("nan")
    val_top5: float = float("nan")
    best_val_top1: float = float("nan")
    mv_top1: float = float("nan")
    mv_top5: float = float("nan")
    mv_videos: int = 0
    mv_views_per_video: float = 0.0
    mv_predictions: dict[str, list[int]] | None = None  # per validation video: video_id, pred, label
    eval_clips: int = 0            # the multi-view evaluation's clips x crops per video (0: not recorded)
    eval_crops: int = 0
    train_time_s: float = 0.0      # sum of epoch times (training + validation) over all sessions
    wall_time_s: float = 0.0       # this session's trainer.fit() wall time
    clips_per_s: float = float("nan")
    resumed_from_epoch: int = 0
    started_at: float = 0.0        # unix time when this session's trainer.fit() started / returned
    finished_at: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str | None = None
    run_dir: str | None = None
    mlflow_run_id: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CandidateResult":
        return cls(**data)

    def row(self) -> dict[str, Any]:
        """The summary-table row."""
        return {"candidate": self.name, "gflops": round(self.flops / 1e9, 3), "mparams": round(self.params / 1e6, 3),
                "stentr": _r(self.stentr, 2), "homoentr": _r(self.homoentr, 2), "input": self.input,
                "train_input": self.train_input, "epochs": self.epochs, "val_top1": _r(self.val_top1, 2),
                "best_val_top1": _r(self.best_val_top1, 2), "top1": _r(self.mv_top1, 2), "top5": _r(self.mv_top5, 2),
                "train_time_s": round(self.train_time_s, 1), "clips_per_s": _r(self.clips_per_s, 2),
                "mlflow_run_id": self.mlflow_run_id, "error": self.error}


def _r(x: Any, nd: int) -> Any:
    try:
        return round(float(x), nd) if math.isfinite(float(x)) else None
    except (TypeError, ValueError):
        return None


TABLE_COLUMNS = (("candidate", "candidate", "{}"), ("gflops", "GFLOPs", "{:.3f}"), ("mparams", "params(M)", "{:.2f}"),
                 ("stentr", "STEntr", "{:.2f}"), ("train_input", "trained at", "{}"), ("epochs", "epochs", "{}"),
                 ("val_top1", "val top1", "{:.1f}"), ("top1", "top1", "{:.1f}"), ("top5", "top5", "{:.1f}"),
                 ("train_time_s", "train time(s)", "{:.0f}"))


def format_table(results: Sequence[CandidateResult]) -> str:
    """A fixed-width text table: candidate, FLOPs, params, STEntr, trained input, epochs, last-epoch val top-1,
    multi-view top-1/top-5, training time. FLOPs/params/STEntr are at the spec's own input size."""
    rows = [r.row() for r in results]
    cells = [[h for _, h, _ in TABLE_COLUMNS]]
    for row in rows:
        line = []
        for key, _, fmt in TABLE_COLUMNS:
            v = row.get(key)
            line.append("-" if v is None else fmt.format(v))
        cells.append(line)
    for row, r in zip(cells[1:], results):
        if r.error:
            row[-1] = f"FAILED: {r.error.splitlines()[0][:60]}"
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_COLUMNS))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
           for line in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def table_csv(results: Sequence[CandidateResult]) -> str:
    rows = [r.row() for r in results]
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def plot_curves(histories: dict[str, Sequence[dict[str, Any]]], path: str | Path, title: str = "") -> Path:
    """Loss and top-1 per epoch (train and validation) for one or several candidates, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (name, hist) in enumerate(histories.items()):
        ep = [h["epoch"] for h in hist]
        for key, style in (("train", "--"), ("val", "-")):  # one colour per candidate, dashed = train
            if any(f"{key}_loss" in h for h in hist):
                ax_loss.plot(ep, [h.get(f"{key}_loss", float("nan")) for h in hist], style, color=f"C{i % 10}",
                             marker="o", ms=3, label=f"{name} {key}")
                ax_acc.plot(ep, [h.get(f"{key}_top1", float("nan")) for h in hist], style, color=f"C{i % 10}",
                            marker="o", ms=3, label=f"{name} {key}")
    ax_loss.set_yscale("log")  # early validation losses (BN statistics still settling) dwarf the rest
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="top-1 accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_summary(results: Sequence[CandidateResult], folder: str | Path) -> list[Path]:
    """``summary.csv``, ``summary.json`` (full results with histories), ``summary.txt`` and
    ``curves.png`` (all candidates) in ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "summary.csv", folder / "summary.json", folder / "summary.txt"]
    paths[0].write_text(table_csv(results))
    paths[1].write_text(json.dumps([r.to_dict() for r in results], indent=2, default=str) + "\n")
    paths[2].write_text(format_table(results) + "\n")
    names = [r.name for r in results]
    hist = {(r.name if names.count(r.name) == 1 else r.run_name): r.history for r in results if r.history}
    if hist:
        paths.append(plot_curves(hist, folder / "curves.png", "candidates"))
    return paths
