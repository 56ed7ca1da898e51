"""Which strategy, which score: one comparison of search arms with confidence intervals (docs/compare.md).

An *arm* is a strategy with its score (``evolution:stentr``, ``random``, ``dnas``) or a zoo network; each
arm searches at every seed under one budget, its winner is trained with one recipe, every network is
evaluated on the same validation videos, and arms are compared paired with the ``random`` baseline.
"""
from .arms import Arm, ArmError, SearchSettings, arm_request, parse_arm, zoo_arm
from .report import summarize, verdict
from .run import CompareConfig, CompareResult, Network, Plan, make_plan, run_comparison

__all__ = ["Arm", "ArmError", "CompareConfig", "CompareResult", "Network", "Plan", "SearchSettings", "arm_request",
           "make_plan", "parse_arm", "run_comparison", "summarize", "verdict", "zoo_arm"]
