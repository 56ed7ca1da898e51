"""Latency as a budget: a per-block latency table measured on the target device, and a predictor.

    table = LatencyTable.open(13, 160, device="cpu", threads=1)      # cached under ~/.cache/e3d/latency/
    table.predict(spec)          # ms: sum of the blocks' measured latencies + a per-network overhead
    table.measure(spec)          # ms: the whole network, end to end, on the same device
    table.calibrate(specs)       # fit the overhead term from end-to-end measurements
    filter_by_latency(specs, table, 25.0)

A network is decomposed into *blocks* (:func:`network_blocks`): the stem, every inverted-bottleneck block
(keyed by family, cin, bottleneck, cout, kernel, stride, frames, input size and whether it has SE), the head
conv and the classifier. Inside a stage, blocks 1.. share their key (two keys: with and without SE), so a
stage costs at most three measurements whatever its depth. (That is the ``e3d`` and ``x3d`` families; other
families are keyed per stage, or as a whole network when they build another shape.) Each block is measured in
isolation on the target (batch 1, ``warmup`` calls, then the median, or ``stat="min"`` the fastest, of
``runs`` timed calls; ``clock="cpu"`` times this thread's CPU time) by a :class:`Measurer`:

- ``device="cpu", backend="torch"``: PyTorch eager in this process, ``torch.set_num_threads(threads)``
  while measuring (restored afterwards);
- ``device="cpu", backend="onnxruntime"``: the block exported to ONNX and run by an onnxruntime session with
  ``intra_op_num_threads=threads``;
- ``device="cuda"``: PyTorch on the GPU; each sample is a loop of ``inner`` calls between CUDA events
  (launches pipeline in a network, so per-call synchronisation would over-count), divided by ``inner``.

The table is a JSON file per (device name, backend, threads, input clip, torch version) in ``cache_dir``
(``$E3D_LATENCY_CACHE`` or ``~/.cache/e3d/latency``). A search reaches block configurations no table holds
yet; what :meth:`LatencyTable.predict` does with them is ``on_missing``:

- ``"measure"`` (default): build the spec once, measure its missing blocks, memoise them (and save the file):
  exact, a few hundred ms per new spec on this CPU, free for every later spec that reuses the blocks;
- ``"estimate"``: a per-op linear model (:class:`OpModel`: MACs per kind of conv, elements written, those in
  tensors over 32 MiB again, constants per block kind; :data:`FEATURES`) fitted by non-negative least squares
  on the relative error of the measured entries: microseconds per spec, never measures e3d/x3d blocks (what a
  500k-iteration search needs); ``benchmarks/latency_bench.py`` reports its error;
- ``"error"``: raise :class:`KeyError`.

The per-network overhead (``overhead_ms``: what the end-to-end call costs beyond its blocks: the top-level
module calls, cache effects between blocks) is fitted by :meth:`LatencyTable.calibrate` as the median of
``measured - sum of blocks`` over a few specs. ``--latency-resource NAME``: :func:`build_on_resource` runs
the table build on a node offering the custom resource ``NAME`` and caches the result under that node's device
name; the pipeline runs it there as a Ray task (:mod:`pipeline.latency`, found through the entry-point group
``e3d.remote_measure``: this package never imports Ray).

One concept a module: :mod:`.blocks` (the blocks of a network and their keys), :mod:`.measure` (the
:class:`Measurer`, :func:`measure_blocks`), :mod:`.opmodel` (the per-op model), :mod:`.table` (the
:class:`LatencyTable`) and :mod:`.remote` (a node picked by a resource, and :func:`open_table`). The
options are :mod:`e3d.latency_options` (without torch); this package re-exports them and every name above.

``docs/latency-and-export.md`` has the design choices and the numbers measured on this machine.
"""
from __future__ import annotations

from ..latency_options import (BACKENDS, CLOCKS, DEVICES, STATS, add_latency_arguments,  # noqa: F401 - re-exported
                               default_cache_dir, parse_latency)
from .blocks import (BLOCKWISE, FORMAT, KINDS, Key, block_modules, key_from_str, key_layout,  # noqa: F401
                     key_to_str, network_blocks)
from .measure import Measurer, cpu_name, measure_blocks, torch_threads  # noqa: F401
from .opmodel import FEATURES, LARGE_TENSOR_BYTES, OpModel, estimable  # noqa: F401
from .remote import build_on_resource, open_table, remote_task  # noqa: F401
from .table import ON_MISSING, LatencyTable, cache_file_name, filter_by_latency  # noqa: F401

__all__ = ["LatencyTable", "Measurer", "OpModel", "network_blocks", "measure_blocks", "filter_by_latency",
           "build_on_resource", "parse_latency", "default_cache_dir", "cache_file_name", "key_to_str", "key_from_str",
           "add_latency_arguments", "open_table"]
