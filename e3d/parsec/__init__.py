"""PARSEC (Auto-TSNet supplement §1), the science: the two-stream search space (:mod:`.space`), the
architecture distribution with Eq. 1-3's gradient estimators and Eq. 2's penalty (:mod:`.distribution`), the
weight-sharing supernet (:mod:`.supernet`) and the random search in the FLOPs band (:mod:`.band`). The strategy
is :mod:`e3d.strategies.parsec`; the Ray Train search, :mod:`pipeline.parsec`."""
