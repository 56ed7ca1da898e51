"""Spatiotemporal fusion learned in probability space (Zhou et al., CVPR 2020), the science: the template network
with its drop-path gates (:mod:`.template`, torch), reading fusion strategies off the learnt probabilities
(:mod:`.analysis`) and mapping them onto a backbone (:mod:`.backbone`). The strategy is
:mod:`e3d.strategies.fusion`; the Ray Train run, :mod:`pipeline.fusion`."""
