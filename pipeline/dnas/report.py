"""What the search shows: the architecture-weight heatmap (one per epoch) and the per-epoch MLflow logging
from rank 0 of the Train workers into the job's search run."""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from e3d.dnas.space import DnasSpace, op_name
from pipeline.tracking import WorkerMetricsLogger

log = logging.getLogger("pipeline.dnas")


def arch_heatmap(space: DnasSpace, alpha: Sequence, beta: Sequence, path: str | Path, *, title: str = "") -> Path:
    """One column per stage: the stack layers' op weights (layers x ops) above the head-layer path weights
    (nodes before x this stage's widths). Values printed in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(space.stages)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n + 1, 5.5), dpi=100, squeeze=False,
                             gridspec_kw={"height_ratios": [max(1, max(st.max_stack for st in space.stages)), 4]})
    prev = [str(space.stem_width)]
    for s, st in enumerate(space.stages):
        ax = axes[0][s]
        if st.max_stack:
            _cells(ax, alpha[s], [op_name(o) for o in space.ops], [f"L{i + 1}" for i in range(st.max_stack)])
        else:
            ax.axis("off")
        ax.set_title(f"stage {s + 2}: ops", fontsize=8)
        _cells(axes[1][s], beta[s], [str(w) for w in st.widths], prev)
        axes[1][s].set_title(f"stage {s + 2}: path", fontsize=8)
        prev = [str(w) for w in st.widths]
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _cells(ax: Any, values: Sequence[Sequence[float]], xlabels: list[str], ylabels: list[str]) -> None:
    ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(xlabels)), xlabels, fontsize=7)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")


def weight_metrics(space: DnasSpace, alpha: Sequence, beta: Sequence) -> dict[str, float]:
    """Every architecture weight as a metric: ``alpha.s3.l2.d4``, ``beta.s4.96to160`` (stages numbered as in
    Table 1, 2..7; widths name the nodes)."""
    out = {}
    prev = [space.stem_width]
    for s, st in enumerate(space.stages):
        for layer, row in enumerate(alpha[s]):
            out |= {f"alpha.s{s + 2}.l{layer + 1}.{op_name(o)}": float(w) for o, w in zip(space.ops, row)}
        for i, row in enumerate(beta[s]):
            out |= {f"beta.s{s + 2}.{prev[i]}to{w}": float(p) for w, p in zip(st.widths, row)}
        prev = list(st.widths)
    return out


@dataclass
class DnasMlflowLogger(WorkerMetricsLogger):
    """The workers' MLflow logger (rank 0) with every architecture weight as a metric and the heatmap artifact
    (``arch/epoch_NNNN.png``) each epoch. Tracking never stops the search: failures warn."""

    heatmaps: bool = True

    def on_epoch_end(self, state: Any, metrics: dict[str, Any]) -> None:
        if self._client is None:
            return
        epoch = int(metrics["epoch"])
        alpha, beta = json.loads(metrics["alpha_json"]), json.loads(metrics["beta_json"])
        super().on_epoch_end(state, metrics | weight_metrics(state.space, alpha, beta))
        if self.heatmaps:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    png = arch_heatmap(state.space, alpha, beta, Path(tmp) / f"epoch_{epoch:04d}.png",
                                       title=f"epoch {epoch} ({metrics['phase']}): expected "
                                             f"{metrics['expected_gflops']:.4g} GFLOPs, derived "
                                             f"{metrics['derived_gflops']:.4g}")
                    self._client.log_artifact(self.run_id, str(png), artifact_path="arch")
            except Exception as exc:  # noqa: BLE001 - tracking must never kill the search
                log.warning("[dnas] heatmap logging failed (%r); continuing", exc)
