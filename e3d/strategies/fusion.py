"""``fusion``: where to fuse space and time, learned in probability space (Zhou et al., CVPR 2020 and its
supplement, ``../shared/papers/spatiotemporal-fusion-probability-space-supplement.md``; ``docs/fusion.md``).

1. Train a densely connected *template* network whose every layer holds the fusion units S (1xkxk),
   ST (ktxkxk) and S+ST (both, summed), each behind a learnable drop-path gate per (layer, input, unit):
   concrete relaxation (Eq. S13), KL regulariser (Eq. S12), Monte Carlo data term (Eq. S8-S9), on Ray Train
   with a checkpoint per epoch (:mod:`e3d.fusion.template`; the training: :mod:`pipeline.fusion`).
2. Read off each unit's posterior probability per layer, ``1 - sqrt(p)`` (Eq. S16-S17):
   ``fusion_probabilities.csv`` + ``fusion_layers.csv`` + ``fusion_heatmap.png`` in the out dir and MLflow.
3. Map the most probable strategy ("Opt") onto a backbone of the ``e3d-fused`` family
   (:mod:`e3d.families.fused`): per stage S -> 1xkxk, ST -> 3xkxk, S+ST -> both in parallel. The candidates
   are Opt and the backbone with S, ST and S+ST everywhere (the supplement's §3 comparison), ranked by their
   log-probability under the learned template, so the job trains all of them with the same recipe.

The backbone (option ``backbone``): ``evolution`` (default; the E3D search's winner at the request's budget
and clip, run in-process with ``backbone_iterations`` / ``backbone_population`` / ``preset`` / ``initial`` /
``max_depth`` / ``kernels``: the same settings the demo's evolution search takes), ``table8`` (Table 8's
initial structure at the clip, widths scaled up or down to the budget), a zoo name, or a spec file. Widths are
scaled down (multiples of 8) until every candidate, S+ST everywhere included, fits the budget.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..fusion.backbone import BudgetError, fit_budget, fused, network_key, units_of
from ..spec import ArchSpec, SpecError, StageSpec
from ..strategy import (NEEDS_TRAINING, Candidate, RequestError, SearchContext, SearchOutcome, SearchRequest,
                        check_known_options, register_strategy)

if TYPE_CHECKING:
    from ..fusion.template import TemplateSettings

UNITS = ("S", "ST", "S+ST")
VARIANTS = ("S", "ST", "S+ST", "E3D")  # besides Opt; E3D: the backbone with the kernels its search picked
SCORE_NAME = "fusion_log_prob"
_BACKBONE_SEARCH = {"backbone_iterations": "iterations", "backbone_population": "population_size",
                    "preset": "preset", "initial": "initial", "max_depth": "max_depth", "kernels": "kernels"}
_TEMPLATE = {"blocks": int, "layers_per_block": int, "growth": int, "stem": int, "template_kernel": int, "kt": int,
             "mc_samples": int, "compression": float, "init_drop": float, "tau": float, "template_dropout": float}
_TRAINING = {"epochs": int, "batch_size": int, "lr": float, "arch_lr": float, "length_scale": float,
             "kl_weight": float}
OPTIONS = ("backbone", "variants", "granularity") + tuple(_BACKBONE_SEARCH) + tuple(_TEMPLATE) + tuple(_TRAINING)
DEFAULTS: dict[str, Any] = {"backbone": "evolution", "variants": ["S", "ST", "S+ST"], "granularity": "stage",
                            "arch_lr": 0.05, "kl_weight": 1.0}


@dataclass(frozen=True)
class TemplateTraining:
    """What the strategy asks its trainer to train: the template, the recipe's epochs, batch size and rate (None:
    the job's recipe's, or the trainer's default recipe without one) and the gates' training options."""

    template: TemplateSettings
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    length_scale: float | None = None
    kl_weight: float = 1.0
    arch_lr: float = 0.05


# -- the strategy ---------------------------------------------------------------------------------------------
class FusionStrategy:
    name = "fusion"
    description = ("spatiotemporal fusion learned in probability space (template with drop-path gates); Opt vs "
                   "S / ST / S+ST everywhere on a backbone")
    needs = NEEDS_TRAINING
    cli_options = {"iterations": "backbone_iterations", "population": "backbone_population", "preset": "preset",
                   "initial": "initial", "max_depth": "max_depth", "kernels": "kernels"}
    quick_options = {"backbone_iterations": 400, "backbone_population": 16, "epochs": 1, "blocks": 2,
                     "layers_per_block": 2, "growth": 8, "stem": 8}

    # -- checks ---------------------------------------------------------------------------------------------
    def check(self, request: SearchRequest) -> None:
        opts = request.options
        check_known_options(self.name, opts, OPTIONS)
        for key, kind in (_TEMPLATE | _TRAINING).items():
            if key in opts:
                v = opts[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) \
                        or v <= 0:
                    raise RequestError(f"options.{key}", f"strategy 'fusion': option {key!r} must be a positive "
                                                         f"{'integer' if kind is int else 'number'}, got {v!r}")
        if "init_drop" in opts and not opts["init_drop"] < 1:
            raise RequestError("options.init_drop", f"strategy 'fusion': option 'init_drop' must be in (0, 1), "
                                                    f"got {opts['init_drop']!r}")
        if "compression" in opts and not opts["compression"] <= 1:
            raise RequestError("options.compression", f"strategy 'fusion': option 'compression' must be in (0, 1], "
                                                      f"got {opts['compression']!r}")
        if "template_dropout" in opts and not opts["template_dropout"] < 1:
            raise RequestError("options.template_dropout", "strategy 'fusion': template_dropout must be < 1")
        for key in ("template_kernel", "kt"):
            if key in opts and opts[key] % 2 == 0:
                raise RequestError(f"options.{key}", f"strategy 'fusion': option {key!r} must be odd, got {opts[key]}")
        kt = opts.get("kt", 3)
        if kt > request.clip.frames:
            raise RequestError("options.kt", f"strategy 'fusion': the ST kernels' temporal size {kt} exceeds the "
                                             f"clip's {request.clip.frames} frames")
        variants = opts.get("variants", DEFAULTS["variants"])
        if not isinstance(variants, (list, tuple)) or not all(v in VARIANTS for v in variants):
            raise RequestError("options.variants", f"strategy 'fusion': variants is a list among "
                                                   f"{', '.join(VARIANTS)}, got {variants!r}")
        if opts.get("granularity", "stage") not in ("stage", "block"):
            raise RequestError("options.granularity", "strategy 'fusion': granularity is 'stage' or 'block', got "
                                                      f"{opts['granularity']!r}")
        if request.budget.latency_ms is not None:
            raise RequestError("budget.latency_ms", "strategy 'fusion' does not take a latency budget")
        backbone = opts.get("backbone", DEFAULTS["backbone"])
        if not isinstance(backbone, str) or not backbone:
            raise RequestError("options.backbone", f"strategy 'fusion': backbone is 'evolution', 'table8', a zoo "
                                                   f"name or a spec file, got {backbone!r}")
        if backbone == "evolution":
            self._evolution_check(request)
        else:
            start = self._fixed_backbone(request)
            try:
                fit_budget(start, request.budget, grow=backbone == "table8")
            except BudgetError as exc:
                raise RequestError(f"budget.{exc.field}", f"strategy 'fusion': {exc}") from None

    def _evolution_request(self, request: SearchRequest) -> SearchRequest:
        opts = {_BACKBONE_SEARCH[k]: v for k, v in request.options.items() if k in _BACKBONE_SEARCH}
        return replace(request, options=opts, out_dir=None, score="stentr" if request.score is None else request.score)

    def _evolution_check(self, request: SearchRequest) -> None:
        from ..strategy import get_strategy  # noqa: PLC0415

        evo = self._evolution_request(request)
        try:
            get_strategy("evolution").check(evo)
        except RequestError as exc:
            name = exc.field.split(".", 1)[1] if exc.field.startswith("options.") else None
            back = {v: k for k, v in _BACKBONE_SEARCH.items()}
            field = f"options.{back.get(name, name)}" if name else exc.field
            raise RequestError(field, f"strategy 'fusion' (backbone search): {exc}") from None

    def _fixed_backbone(self, request: SearchRequest) -> ArchSpec:
        from .. import zoo  # noqa: PLC0415
        from ..spec import load_spec  # noqa: PLC0415

        name = request.options.get("backbone", DEFAULTS["backbone"])
        try:
            if name == "table8":
                spec = zoo.initial_structure(request.options.get("preset") or "S")
            elif name in zoo.names():
                spec = zoo.get(name)
            elif Path(name).is_file():
                spec = load_spec(name)
            else:
                raise SpecError(f"backbone {name!r}: neither 'evolution', 'table8', a zoo name nor a spec file")
            spec = spec.with_input(request.clip.frames, request.clip.size)
        except (SpecError, KeyError, ValueError) as exc:
            raise RequestError("options.backbone", f"strategy 'fusion': {exc.args[0] if exc.args else exc}") from None
        if spec.family not in ("e3d", "e3d-fused"):
            raise RequestError("options.backbone", f"strategy 'fusion': backbone {name!r} is family {spec.family!r}; "
                                                   f"the fusion units map onto e3d / e3d-fused specs")
        return spec.replace(family="e3d", stages=tuple(StageSpec(s.kernel, s.out, s.bottleneck, s.layers, s.stride)
                                                       for s in spec.stages)) if spec.family == "e3d-fused" else spec

    def backbone(self, request: SearchRequest) -> tuple[ArchSpec, dict[str, Any]]:
        """The backbone (e3d family) scaled to the budget, and how it was found."""
        name = request.options.get("backbone", DEFAULTS["backbone"])
        info: dict[str, Any] = {"backbone": name}
        if name == "evolution":
            from ..strategy import get_strategy  # noqa: PLC0415

            t0 = time.process_time()
            outcome = get_strategy("evolution").search(self._evolution_request(request))
            spec = outcome.best.spec
            info |= {"backbone_score": outcome.best.score, "backbone_cpu_s": time.process_time() - t0,
                     "backbone_kernels": spec.kernel_pattern}
        else:
            spec = self._fixed_backbone(request)
        if request.num_classes:
            spec = spec.with_num_classes(request.num_classes)
        spec, factor = fit_budget(spec, request.budget, grow=name == "table8")
        return spec, info | {"width_factor": factor, "backbone_spec": spec.to_dict()}

    # -- search ---------------------------------------------------------------------------------------------
    def settings(self, request: SearchRequest) -> TemplateTraining:
        """What the template is trained with, from the request's options."""
        from ..fusion.template import TemplateSettings  # noqa: PLC0415

        o = DEFAULTS | dict(request.options)
        names = {"template_kernel": "kernel", "template_dropout": "dropout"}
        template = TemplateSettings.from_dict({names.get(k, k): v for k, v in o.items() if k in _TEMPLATE})
        return TemplateTraining(template, epochs=o.get("epochs"), batch_size=o.get("batch_size"), lr=o.get("lr"),
                                length_scale=o.get("length_scale"), kl_weight=o["kl_weight"], arch_lr=o["arch_lr"])

    def search(self, request: SearchRequest, context: SearchContext | None = None) -> SearchOutcome:
        from ..fusion import analysis  # noqa: PLC0415

        self.check(request)
        context = context or SearchContext()
        trainer = context.training(self.name, "a template network")
        start = time.perf_counter()
        out = Path(request.out_dir) if request.out_dir else Path.cwd() / "fusion_search"
        out.mkdir(parents=True, exist_ok=True)
        backbone, binfo = self.backbone(request)
        (out / "backbone.json").write_text(backbone.to_json() + "\n")
        training = self.settings(request)
        result = trainer.run(self.name, replace(request, out_dir=str(out)), context, training)
        recipe = result.extra["recipe"]

        marginals = analysis.layer_marginals(result.drop_p)
        granularity = request.options.get("granularity", DEFAULTS["granularity"])
        variants = list(request.options.get("variants", DEFAULTS["variants"]))
        candidates = self.candidates(request, backbone, marginals, granularity, variants, binfo)
        trainer.log_files(context, self.write_files(out, result, marginals, candidates, backbone), "fusion")

        depths = backbone.depths
        history = []
        for row in result.history:
            m = analysis.layer_marginals(row["drop_p"])
            scores = [analysis.strategy_log_prob(m, depths, analysis.map_strategy(m, depths, granularity))] + \
                [analysis.strategy_log_prob(m, depths, [u] * len(depths)) for u in UNITS]
            history.append({k: v for k, v in row.items() if k != "drop_p" and not k.startswith("fusion.")}
                           | {"step": row["epoch"], "total_iterations": row["epoch"], "best": scores[0],
                              "median": statistics.median(scores)})
        opt = candidates[0].info["fusion"]
        settings_out = {"template": training.template.to_dict(), "recipe": recipe, "length_scale": result.length_scale,
                        "kl_weight": training.kl_weight, "arch_lr": training.arch_lr,
                        "granularity": granularity, "variants": variants, "budget": request.budget.to_dict(),
                        "clip": {"frames": request.clip.frames, "size": request.clip.size}, "seed": request.seed,
                        "layer_marginals": marginals.round(6).tolist(), "opt_layers": analysis.opt_layers(marginals),
                        "opt": opt} | {k: v for k, v in binfo.items() if k != "backbone_spec"}
        return SearchOutcome(strategy=self.name, score_name=SCORE_NAME, candidates=candidates, history=history,
                             settings=settings_out, wall_s=time.perf_counter() - start,
                             cpu_s=result.cpu_s + float(binfo.get("backbone_cpu_s", 0.0)),
                             extra={"opt": "/".join(u if isinstance(u, str) else ",".join(u) for u in opt),
                                    "template_epochs": recipe["epochs"], "template_wall_s": round(result.wall_s, 1)})

    def candidates(self, request: SearchRequest, backbone: ArchSpec, marginals: Any, granularity: str,
                   variants: list[str], binfo: Mapping[str, Any]) -> list[Candidate]:
        """Opt first, then the variants, each scored by its log-probability; one per distinct network."""
        from ..fusion import analysis  # noqa: PLC0415

        prefix = request.name or self.name
        depths = backbone.depths
        kt = request.options.get("kt", 3)
        rows: list[tuple[str, list[Any], Callable[[], ArchSpec]]] = []
        opt = analysis.map_strategy(marginals, depths, granularity)
        rows.append(("opt", opt, lambda: fused(backbone, opt, f"{prefix}-opt", kt=kt)))
        for v in variants:
            if v == "E3D":
                rows.append(("E3D", units_of(backbone), lambda: backbone.replace(name=f"{prefix}-e3d")))
            else:
                units = [v] * len(depths)
                rows.append((v, units, lambda units=units, v=v: fused(backbone, units,
                                                                      f"{prefix}-{v.replace('+', '')}", kt=kt)))
        out: list[Candidate] = []
        seen: dict[Any, str] = {}
        for label, units, make in rows:
            spec = make()
            same = seen.get(network_key(spec))
            if same is not None:
                out[[c.info["variant"] for c in out].index(same)].info["same_as"].append(label)
                continue
            seen[network_key(spec)] = label
            score = analysis.strategy_log_prob(marginals, depths, units)
            out.append(Candidate.of(spec, score, source=self.name,
                                    info={"variant": label, "fusion": units, "log_prob": score, "same_as": [],
                                          "backbone": binfo.get("backbone"),
                                          "width_factor": binfo.get("width_factor")}))
        return [out[0]] + sorted(out[1:], key=lambda c: -c.score)

    # -- outputs --------------------------------------------------------------------------------------------
    def write_files(self, out: Path, result: Any, marginals: Any, candidates: list[Candidate],
                    backbone: ArchSpec) -> list[Path]:
        from ..fusion import analysis  # noqa: PLC0415

        files = [analysis.write_probabilities(out / "fusion_probabilities.csv", result.layout, result.drop_p),
                 analysis.write_layers(out / "fusion_layers.csv", result.layout, marginals),
                 analysis.plot_heatmap(out / "fusion_heatmap.png", result.layout, result.drop_p,
                                       title=f"posterior of the fusion units ({len(result.layout)} template layers)")]
        summary = {"opt_layers": analysis.opt_layers(marginals), "layer_table": analysis.layer_table(result.layout,
                                                                                                     marginals),
                   "backbone": backbone.name, "backbone_kernels": backbone.kernel_pattern,
                   "backbone_depths": list(backbone.depths),
                   "candidates": [{"name": c.spec.name, "variant": c.info["variant"], "fusion": c.info["fusion"],
                                   "same_as": c.info["same_as"], "log_prob": c.score, "kernels": c.spec.kernel_pattern,
                                   "gflops": c.flops / 1e9, "mparams": c.params / 1e6} for c in candidates]}
        path = out / "fusion_strategy.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        specs = out / "fusion_candidates.json"
        specs.write_text(json.dumps([c.spec.to_dict() for c in candidates], indent=2) + "\n")
        return files + [path, specs, out / "backbone.json"]


STRATEGY = register_strategy(FusionStrategy())
