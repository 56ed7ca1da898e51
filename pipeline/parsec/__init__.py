"""PARSEC (Auto-TSNet supplement §1) on Ray: the search loop (Ray Train) and the runner behind the ``parsec``
strategy. The space, the distribution with its gradient estimators, the supernet and the FLOPs band are in
:mod:`e3d.parsec`. ``docs/parsec.md`` has the whole story.

    engine        ParsecEngine: one worker's search state and epoch loop, no Ray
    loop          parsec_loop_per_worker: the engine inside Ray Train (checkpoints, MLflow)
    search        run_parsec: the strategy's search (trainer, candidates, outcome)
    experiments   Table 1 on synthetic data; the comparison on a dataset (jobs/parsec_experiments.py)
"""
