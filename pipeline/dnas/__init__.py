"""Differentiable video NAS (Zhou et al., ACML 2021) on Ray Train: the ``dnas`` strategy's pipeline side.

- :mod:`.loop`: the Train worker loop (warm-up, then alternating architecture and weight steps; checkpoint
  and resume every epoch);
- :mod:`.data`: the training videos split into weight / architecture / monitoring parts;
- :mod:`.report`: the architecture-weight heatmap and the per-epoch MLflow logging;
- :mod:`.search`: the runner (:func:`run_dnas_search`) the strategy reaches through its ``SearchContext``.

The space, Eq. 4 in plain Python, Viterbi and the derivation (:mod:`e3d.dnas.space`, torch-free) and the
supernet (:mod:`e3d.dnas.supernet`) live in ``e3d``; the network family in :mod:`e3d.families.r2plus1d`.
See ``docs/dnas.md``.
"""
