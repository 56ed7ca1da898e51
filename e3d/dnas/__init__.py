"""Differentiable video NAS (Zhou et al., ACML 2021), the science: the search space, Eq. 4, Viterbi and the
derivation (:mod:`.space`, torch-free) and the supernet with its architecture parameters (:mod:`.supernet`,
torch). The strategy is :mod:`e3d.strategies.dnas`; the Ray Train search, :mod:`pipeline.dnas`."""
