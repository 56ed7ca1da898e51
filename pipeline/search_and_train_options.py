"""The main job's command line (``jobs/search_and_train.py``): its options and the :class:`JobConfig` they make.

Here, in the installed package, so that another job that runs the main job with its own twist
(``jobs/fusion_variants.py``) takes the same options and checks, and so that ``ray submit``, which uploads the
job file alone, finds them.
"""
from __future__ import annotations

import argparse

from e3d.options import Parser, add_search_options, latency_settings, resolve_clip, search_request
from pipeline.options import (DEMO, add_data_options, add_island_options, add_ray_options, add_selection_options,
                              add_tracking_options, add_training_options, check_clip, check_data, check_out,
                              check_recipe, check_specs, islands_from_args, train_resources_from_args)


def main_job_parser(doc: str, *, out: str = "outputs/search_and_train") -> argparse.ArgumentParser:
    """Every option of the main job; ``doc``: the job's docstring (first line: description, all: epilog)."""
    p = Parser(description=doc.split("\n")[0], epilog=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("job")
    g.add_argument("--out", default=out, help="output folder (resumes when it exists)")
    g.add_argument("--quick", action="store_true", help="a tiny end-to-end run (smoke test, cluster check)")
    add_search_options(p, DEMO)
    add_data_options(p, DEMO)
    add_selection_options(p)
    add_training_options(p)
    add_island_options(p)
    add_tracking_options(p, experiment="e3d-search-and-train")
    add_ray_options(p)
    return p


def job_config(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The main job's :class:`pipeline.search_and_train.JobConfig`; every input checked (exits 2 naming the
    option), nothing written."""
    from pipeline.search_and_train import DataConfig, JobConfig, Selection, quick  # noqa: PLC0415

    check_out(parser, args.out)
    demo = not args.data
    dataset = check_data(parser, args)
    clip_shape = resolve_clip(args, DEMO)
    clip = check_clip(parser, args, clip_shape, demo=demo)
    num_classes = len(dataset.classes) if dataset is not None else None
    strategy, request = search_request(parser, args, defaults=DEMO, clip=clip_shape, num_classes=num_classes)
    extras = check_specs(parser, args.also, "--also")
    for spec in extras:
        try:
            spec.with_input(clip.frames, clip.size)
        except ValueError as exc:
            parser.error(f"argument --also: {spec.name} cannot run at {clip.frames}x{clip.size}^2: {exc}")
    config = JobConfig(out_dir=args.out, data=DataConfig(path=args.data, format=args.data_format), clip=clip,
                       strategy=strategy.name, request=request, islands=islands_from_args(args),
                       selection=Selection(top_k=args.top_k, distinct_by=args.distinct_by, extra=tuple(args.also),
                                           select=args.select),
                       recipe=check_recipe(parser, args, demo=demo), eval_clips=args.eval_clips or 2,
                       eval_crops=args.eval_crops, resources=train_resources_from_args(args),
                       tracking_uri=args.tracking_uri, experiment=args.experiment, log_model=not args.no_log_model,
                       latency=latency_settings(args))
    return quick(config) if args.quick else config
