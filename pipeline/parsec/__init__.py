"""PARSEC (Auto-TSNet supplement §1) on Ray: the two-stream supernet, the architecture distribution and its
gradient estimators, the search loop (Ray Train), the driver behind the ``parsec`` strategy, and the random
search in the same FLOPs band it is compared with. ``docs/parsec.md`` has the whole story.

    supernet      TwoStreamSupernet: every architecture of a TwoStreamSpace, weights shared by slicing
    distribution  ArchDistribution (P(A | alpha)), surrogate (Eq. 1-3's gradient estimates)
    engine        ParsecEngine: one worker's search state and epoch loop, no Ray
    loop          parsec_loop_per_worker: the engine inside Ray Train (checkpoints, MLflow)
    search        run_parsec: the strategy's search (trainer, candidates, outcome)
    band          random search in the FLOPs band, trained like the main job's candidates
    experiments   Table 1 on synthetic data; the UCF101 comparison (python -m pipeline.parsec.experiments)
"""
