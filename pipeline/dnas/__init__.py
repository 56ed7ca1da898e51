"""Differentiable video NAS (Zhou et al., ACML 2021) on Ray Train: the ``dnas`` strategy's pipeline side.

- :mod:`.supernet`: the supernet (head layers on every width path, stack layers as softmax mixtures of
  {dilation 1, 2, 4, skip}), the architecture parameters and the expected FLOPs (Eq. 1-4);
- :mod:`.loop`: the Train worker loop (warm-up, then alternating architecture and weight steps; checkpoint
  and resume every epoch);
- :mod:`.data`: the training videos split into weight / architecture / monitoring parts;
- :mod:`.report`: the architecture-weight heatmap and the per-epoch MLflow logging;
- :mod:`.search`: the driver (:func:`run_dnas_search`) that :mod:`e3d.strategies.dnas` calls.

The space, Eq. 4 in plain Python, Viterbi and the derivation live in :mod:`e3d.dnas` (torch-free); the
network family in :mod:`e3d.families.r2plus1d`. See ``docs/dnas.md``.
"""
