#!/usr/bin/env bash
# Look at a job's MLflow store the way a user does: start the MLflow UI on 127.0.0.1, open the experiment
# and the comparison of its candidate runs in headless Chromium, and save screenshots.
#
#   scripts/mlflow_ui_check.sh TRACKING_URI [OUT_DIR] [EXPERIMENT]
#
# TRACKING_URI: what the job printed, e.g. sqlite:////abs/path/outputs/search_and_train/mlruns/mlflow.db.
# EXPERIMENT: the experiment's name (default: the one with the most runs). Writes OUT_DIR/experiment.png
# (the page the jobs print: the experiment on its runs), OUT_DIR/experiment-default.png (the bare link) and
# OUT_DIR/compare.png (the candidate runs side by side:
# parameters, metrics, parallel coordinates). Needs Debian's chromium (`apt-get install chromium`).
set -euo pipefail

URI="${1:?usage: $0 TRACKING_URI [OUT_DIR] [EXPERIMENT]}"
OUT="${2:-mlflow-ui-check}"
EXPERIMENT="${3:-}"
PORT="${MLFLOW_UI_PORT:-5077}"
REPO="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
[ -n "$CHROMIUM" ] || { echo "$0: no chromium on PATH (apt-get install chromium)" >&2; exit 2; }
mkdir -p "$OUT"

# the experiment and its candidate runs (children of the job's parent run that trained a network)
read -r EXP_ID RUNS < <("$PY" - "$URI" "$EXPERIMENT" <<'EOF'
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
experiments = client.search_experiments()
if sys.argv[2]:
    exp = next((e for e in experiments if e.name == sys.argv[2]), None)
    if exp is None:
        sys.exit(f"no experiment {sys.argv[2]!r} in {sys.argv[1]}")
else:
    exp = max(experiments, key=lambda e: len(client.search_runs([e.experiment_id], max_results=1000)))
runs = client.search_runs([exp.experiment_id], "metrics.mv_top1 >= 0", max_results=50)
print(exp.experiment_id, json.dumps([r.info.run_id for r in runs], separators=(",", ":")))
EOF
)

"$PY" -m mlflow server --backend-store-uri "$URI" --host 127.0.0.1 --port "$PORT" --workers 1 \
    > "$OUT/mlflow-server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; pkill -P $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
    sleep 1
done
curl -sf "http://127.0.0.1:$PORT/health" > /dev/null || { echo "$0: the MLflow server did not start" >&2; exit 1; }

shot() {  # shot NAME URL
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1000 \
        --virtual-time-budget=20000 --screenshot="$OUT/$1.png" "$2" > "$OUT/$1.chromium.log" 2>&1
    echo "$OUT/$1.png  <- $2"
}
BASE="http://127.0.0.1:$PORT"
shot experiment "$BASE/#/experiments/$EXP_ID?workflowType=machine_learning"   # the page the jobs print
shot experiment-default "$BASE/#/experiments/$EXP_ID"   # the bare link, in a browser that never chose a mode
ENC_RUNS="$("$PY" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$RUNS")"
ENC_EXP="$("$PY" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "[\"$EXP_ID\"]")"
shot compare "$BASE/#/compare-runs?runs=$ENC_RUNS&experiments=$ENC_EXP"
