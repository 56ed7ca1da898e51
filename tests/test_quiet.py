"""The quiet console: only the project's own lines come through from Ray workers."""
from pipeline.quiet import own_lines_only


def test_only_the_projects_own_lines_pass():
    lines = ["[train] cand1 epoch 1/15: train_loss=0.7 val_top1=50", "Checkpoint successfully created at: x",
             "Reporting training result 1: TrainingReport(...)", "[search] best 89.7", "Traceback (most recent call",
             "✔️  Dataset train execution finished", "[2026-12-01 09:19:27,897 E 14862] core_worker.cc: Actor",
             "[autoscale] asked for 1 x train_gpu"]
    assert own_lines_only(lines) == [lines[0], lines[3], lines[7]]
