"""``e3d export`` and ``e3d latency``: ONNX / torch.export files, and latency predicted from a per-block table.

    e3d export --zoo E3D-S --onnx e3d-s.onnx                  # export, check against PyTorch, time it
    e3d export spec.json --onnx net.onnx --program net.pt2    # also a torch.export program
    e3d export runs/demo/candidates/RUN --onnx trained.onnx   # a trained candidate (its final checkpoint)
    e3d export runs/demo/candidates/RUN --folder model/       # a model folder: config.json, model.safetensors, card
    e3d latency --zoo E3D-S --zoo X3D-S --measure             # predicted (and measured) latency, ms
    e3d latency spec.json --budget-latency 25ms --latency-resource edge_cpu

Each prints one JSON object per network on stdout. Bad input exits with status 2 and a one-line message
naming the option; an ONNX file whose output differs from PyTorch's by more than ``--tolerance`` exits 1.

``add_export_parser(subparsers)`` / ``add_latency_parser(subparsers)`` register the subcommands (e3d/cli.py
wires them); ``python -m e3d.export_cli export ...`` runs them standalone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .options import positive_float, positive_int
from .spec import ArchSpec, SpecError


class UsageError(ValueError):
    """Bad command-line input: the message starts with the option it is about."""


def _add_input_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=positive_int, help="override the clip's frames")
    p.add_argument("--size", type=positive_int, help="override the clip's crop size")


# -- e3d export -------------------------------------------------------------------------------------------
def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="write a spec or a trained candidate as ONNX (checked, timed)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", help="a spec JSON file, or a trained run folder (candidate folder with "
                                             "result.json, Ray Train run folder, checkpoint folder or state.pt)")
    p.add_argument("--zoo", metavar="NAME", help="export a zoo entry instead of SOURCE")
    p.add_argument("--onnx", metavar="PATH", help="ONNX file to write (give --onnx, --folder or both)")
    p.add_argument("--folder", metavar="DIR", help="also (or only) write a model folder: config.json, "
                                                   "model.safetensors and a model card README.md (e3d.load(DIR))")
    p.add_argument("--labels", metavar="FILE", help="class names for --folder (label_map.json or one name a line; "
                                                    "default: what the run recorded, else 0..N-1)")
    p.add_argument("--program", metavar="PATH", help="also write a torch.export program (.pt2)")
    _add_input_arguments(p)
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--weights", choices=("init", "random"), default="init",
                   help="weights of a spec (not a trained run): the builder's initial weights (default) or random "
                        "trained-like ones, which let the check see every op (init zeroes each residual branch)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare onnxruntime's output with PyTorch's on a random clip (default on)")
    p.add_argument("--tolerance", type=positive_float, default=1e-4, help="max abs difference (default 1e-4)")
    p.add_argument("--latency", action=argparse.BooleanOptionalAction, default=True,
                   help="time onnxruntime and PyTorch on one clip (default on)")
    p.add_argument("--threads", type=positive_int, default=1, help="threads for the timings (default 1)")
    p.add_argument("--runs", type=positive_int, default=10, help="timed runs, median (default 10)")
    p.set_defaults(func=run_export_command)
    return p


def _export_source(args: argparse.Namespace) -> tuple[Any, ArchSpec, bool]:
    """``(model, spec, trained)`` for the command's source; :class:`UsageError` naming the option."""
    from . import zoo
    from .export import ExportError, load_network, randomize_weights
    from .model import build_model

    if args.zoo and args.source:
        raise UsageError(f"--zoo: give either a SOURCE ({args.source}) or --zoo {args.zoo}, not both")
    if not args.zoo and not args.source:
        raise UsageError("SOURCE: nothing to export: give a spec JSON, a run folder or --zoo NAME")
    try:
        if args.zoo:
            spec = zoo.get(args.zoo)
            trained = False
        else:
            path = Path(args.source)
            trained = path.is_dir() or path.name == "state.pt"
            model, spec = load_network(path, frames=args.frames, size=args.size)
    except KeyError as exc:
        raise UsageError(f"--zoo: {exc.args[0]}") from None
    except (ExportError, SpecError) as exc:
        raise UsageError(f"SOURCE: {exc}") from None
    try:
        if not trained:
            spec = spec.with_input(args.frames, args.size) if (args.frames or args.size) else spec
            model = build_model(spec).eval()
    except SpecError as exc:
        raise UsageError(f"--frames/--size: {exc}") from None
    if args.weights == "random":
        if trained:
            raise UsageError("--weights: a trained run is exported with its own weights; drop --weights random")
        randomize_weights(model)
    return model, spec, trained


def _export_folder(args: argparse.Namespace, model: Any, spec: ArchSpec, trained: bool) -> dict[str, Any]:
    """Write ``--folder``: a trained run with its preprocessing and card (e3d.model_source), a spec with 1 view."""
    from dataclasses import replace

    from .model_folder import CardInfo, ModelFolderError, Preprocessing, labels_or_indices, write_model_folder
    from .model_source import candidate_model, read_labels

    folder = Path(args.folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--folder: {folder} exists and is not a folder")
    try:
        labels = read_labels(args.labels) if args.labels else None
    except ModelFolderError as exc:
        raise UsageError(f"--labels: {exc}") from None
    if labels is not None and len(labels) != spec.num_classes:
        raise UsageError(f"--labels: {len(labels)} names for a network with {spec.num_classes} outputs")
    if trained:
        try:
            found = candidate_model(Path(args.source), labels=labels)
        except (ModelFolderError, SpecError) as exc:
            raise UsageError(f"SOURCE: {exc}") from None
        pre = replace(found.preprocessing, frames=spec.frames, size=spec.size)
        card = found.card
    else:
        pre = Preprocessing(frames=spec.frames, size=spec.size, sampling_rate=spec.sampling_rate or 1,
                            labels=labels_or_indices(labels, spec.num_classes))
        card = CardInfo(name=spec.name, weights=args.weights)
    write_model_folder(folder, model, pre, card=card)
    return {"folder": str(folder)}


def run_export_command(args: argparse.Namespace) -> int:
    from .export import export_onnx, export_program, onnx_latency
    from .latency import Measurer

    try:
        if not args.onnx and not args.folder:
            raise UsageError("--onnx/--folder: nothing to write: give --onnx FILE, --folder DIR or both")
        model, spec, trained = _export_source(args)
        onnx_path = Path(args.onnx) if args.onnx else None
        if onnx_path is not None and onnx_path.is_dir():
            raise UsageError(f"--onnx: {onnx_path} is a folder; give a file path like {onnx_path / 'net.onnx'}")
        model.spec = spec
        folder = _export_folder(args, model, spec, trained) if args.folder else {}
    except UsageError as exc:
        print(f"e3d export: error: {exc}", file=sys.stderr)
        return 2
    if onnx_path is None:
        print(json.dumps(folder | {"trained": trained, "weights": "trained" if trained else args.weights}))
        return 0
    report = export_onnx(model, onnx_path, opset=args.opset, check=args.check, tolerance=args.tolerance,
                         threads=args.threads)
    out: dict[str, Any] = report.to_dict() | {"trained": trained, "weights": "trained" if trained else args.weights}
    out |= folder
    if args.program:
        path, diff = export_program(model, args.program)
        out |= {"program": str(path), "program_max_abs_diff": diff}
    if args.latency:
        out["onnx_ms"] = onnx_latency(onnx_path, threads=args.threads, runs=args.runs)
        out["torch_ms"] = Measurer(threads=args.threads, runs=args.runs).network_ms(spec, model)
    print(json.dumps(out))
    if not report.ok:
        print(f"e3d export: error: ONNX output differs from PyTorch by {report.max_abs_diff:.3g} > --tolerance "
              f"{args.tolerance:g}", file=sys.stderr)
        return 1
    return 0


# -- e3d latency ------------------------------------------------------------------------------------------
def add_latency_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .latency_options import add_latency_arguments  # no torch to build the parser

    p = subparsers.add_parser("latency", help="predicted latency of specs from the per-block table (ms)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", help="JSON spec files (an object or a list of objects)")
    p.add_argument("--zoo", action="append", metavar="NAME", help="a zoo entry (repeatable)")
    _add_input_arguments(p)
    p.add_argument("--measure", action="store_true", help="also measure each network end to end")
    p.add_argument("--calibrate", action="store_true",
                   help="fit the table's per-network overhead on these specs (measures them) and save it")
    add_latency_arguments(p)
    p.set_defaults(func=run_latency_command)
    return p


def _latency_specs(args: argparse.Namespace) -> list[ArchSpec]:
    from . import zoo
    from .spec import load_specs

    specs: list[ArchSpec] = []
    for name in args.zoo or []:
        try:
            specs.append(zoo.get(name))
        except KeyError as exc:
            raise UsageError(f"--zoo: {exc.args[0]}") from None
    for path in args.files:
        try:
            specs.extend(load_specs(path))
        except SpecError as exc:
            raise UsageError(f"FILES: {exc}") from None
    if not specs:
        raise UsageError("FILES: nothing to time: give spec files or --zoo NAME")
    try:
        return [s.with_input(args.frames, args.size) if (args.frames or args.size) else s for s in specs]
    except SpecError as exc:
        raise UsageError(f"--frames/--size: {exc}") from None


def run_latency_command(args: argparse.Namespace) -> int:
    from .latency import open_table
    from .latency_options import LatencySettings

    settings = LatencySettings.from_args(args)

    try:
        specs = _latency_specs(args)
        if args.latency_threads < 1 or args.latency_runs < 1:
            raise UsageError("--latency-threads/--latency-runs: must be >= 1")
        groups: dict[tuple[int, int], list[ArchSpec]] = {}
        for s in specs:
            groups.setdefault((s.frames, s.size), []).append(s)
        tables = {}
        for (frames, size), group in groups.items():
            try:
                tables[(frames, size)] = open_table(settings, frames, size, seed_specs=group)
            except ValueError as exc:
                msg = str(exc)
                raise UsageError(msg if msg.startswith("--") else f"--latency-device: {msg}") from None
    except UsageError as exc:
        print(f"e3d latency: error: {exc}", file=sys.stderr)
        return 2
    for (frames, size), group in groups.items():
        table = tables[(frames, size)]
        if args.calibrate:
            table.calibrate(group)
        for s in group:
            row: dict[str, Any] = {"name": s.name, "input": f"{s.frames}x{s.size}x{s.size}",
                                   "predicted_ms": round(table.predict(s), 3),
                                   "overhead_ms": round(table.overhead_ms, 3),
                                   "device": table.device_name, "backend": table.backend_name,
                                   "threads": table.measurer.threads}
            if args.measure:
                row["measured_ms"] = round(table.measure(s), 3)
                row["error"] = round(row["predicted_ms"] / row["measured_ms"] - 1, 4)
            if args.budget_latency is not None:
                row["budget_ms"] = args.budget_latency
                row["within_budget"] = row["predicted_ms"] <= args.budget_latency
            print(json.dumps(row), flush=True)
        if table.path is not None:
            print(f"table: {table.path} ({len(table.entries)} blocks, {table.measured} measured now in "
                  f"{table.measure_s:.1f} s)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e3d.export_cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_export_parser(sub)
    add_latency_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
