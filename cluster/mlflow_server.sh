#!/usr/bin/env bash
# The cluster's MLflow tracking server, behind MLflow's basic-auth app (docs/cluster.md "MLflow on the cluster").
#
#   cluster/mlflow_server.sh credentials        create the credentials once (kept on later calls)
#   cluster/mlflow_server.sh start HOST [PORT]   (re)start the server on HOST:PORT (default 5000), wait until it answers
#   cluster/mlflow_server.sh stop                stop it (by its pid file)
#
# cluster.yaml runs `credentials` in the head's setup commands (before Ray starts, so before the autoscaler
# launches a worker) and `start <head private IP>` after `ray start`. Files (0600, in 0700 folders):
#   $E3D_SECRETS/mlflow.env   MLFLOW_TRACKING_USERNAME/PASSWORD, the client side: copied to every worker
#                             (cluster.yaml's cluster_synced_files) and sourced by every node's ~/.bashrc, so
#                             the jobs and their Ray workers log with it (MLflow's client reads both variables)
#   $E3D_MLFLOW_HOME/server.env   the server's Flask secret key (CSRF), the head only
#   $E3D_MLFLOW_HOME/auth.ini     the auth app's settings: its user store, the admin user's name
# The password travels in environment variables only: never on a command line (ps), never in a log.
# Settings (environment): E3D_SECRETS (~/.e3d-ray-secrets), E3D_MLFLOW_HOME (~/mlflow), E3D_MLFLOW_ARTIFACTS
# (default $E3D_MLFLOW_HOME/artifacts), E3D_MLFLOW_WORKERS (the server's worker processes, default 4),
# MLFLOW (the mlflow command, default: mlflow on PATH).
set -euo pipefail

SECRETS="${E3D_SECRETS:-$HOME/.e3d-ray-secrets}"
HOME_ML="${E3D_MLFLOW_HOME:-$HOME/mlflow}"
MLFLOW="${MLFLOW:-mlflow}"
USER_NAME=e3d

die() { echo "mlflow_server.sh: $*" >&2; exit 1; }
token() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }   # 64 hex digits, no tool beyond coreutils

credentials() {
  umask 077
  mkdir -p "$SECRETS" "$HOME_ML"
  chmod 700 "$SECRETS" "$HOME_ML"
  if [ ! -s "$SECRETS/mlflow.env" ]; then
    printf 'export MLFLOW_TRACKING_USERNAME=%s\nexport MLFLOW_TRACKING_PASSWORD=%s\n' "$USER_NAME" "$(token)" \
      > "$SECRETS/mlflow.env.tmp"
    mv "$SECRETS/mlflow.env.tmp" "$SECRETS/mlflow.env"
    rm -f "$HOME_ML/basic_auth.db"   # a user store from older credentials: the admin is made anew at start
  fi
  if [ ! -s "$HOME_ML/server.env" ]; then
    printf 'export MLFLOW_FLASK_SERVER_SECRET_KEY=%s\n' "$(token)" > "$HOME_ML/server.env.tmp"
    mv "$HOME_ML/server.env.tmp" "$HOME_ML/server.env"
  fi
  chmod 600 "$SECRETS/mlflow.env" "$HOME_ML/server.env"
  echo "mlflow_server.sh: credentials in $SECRETS/mlflow.env (mode 600)"
}

stop() {
  if [ -f "$HOME_ML/server.pid" ]; then
    local pid; pid="$(cat "$HOME_ML/server.pid")"   # the leader of the server's own process group (setsid)
    if kill -- "-$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$HOME_ML/server.pid"
  fi
}

start() {
  local host="${1:?usage: mlflow_server.sh start HOST [PORT]}" port="${2:-5000}"
  case "$host" in 0.0.0.0|::|"*") die "refusing to listen on every address ($host): give the head's private address";; esac
  [ -s "$SECRETS/mlflow.env" ] && [ -s "$HOME_ML/server.env" ] || die "no credentials: run '$0 credentials' first"
  stop
  umask 077
  # The admin user is created from MLFLOW_AUTH_ADMIN_PASSWORD when the user store is empty (first start).
  printf '%s\n' '[mlflow]' 'default_permission = NO_PERMISSIONS' \
    "database_uri = sqlite:///$HOME_ML/basic_auth.db" "admin_username = $USER_NAME" \
    'authorization_function = mlflow.server.auth:authenticate_request_basic_auth' > "$HOME_ML/auth.ini"
  (
    # shellcheck disable=SC1091
    . "$SECRETS/mlflow.env"; . "$HOME_ML/server.env"
    export MLFLOW_AUTH_CONFIG_PATH="$HOME_ML/auth.ini" MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD"
    unset MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false   # no GenAI job runner (a dozen idle consumer processes)
    exec setsid nohup "$MLFLOW" server --app-name basic-auth --host "$host" --port "$port" \
      --workers "${E3D_MLFLOW_WORKERS:-4}" \
      --backend-store-uri "sqlite:///$HOME_ML/mlflow.db" \
      --artifacts-destination "${E3D_MLFLOW_ARTIFACTS:-$HOME_ML/artifacts}" \
      > "$HOME_ML/server.log" 2>&1 < /dev/null
  ) &
  echo $! > "$HOME_ML/server.pid"
  # up when an unauthenticated request is refused (401): the auth app answers, and it does not let us in
  local code=000
  for _ in $(seq 120); do
    kill -0 "$(cat "$HOME_ML/server.pid")" 2>/dev/null || { tail -20 "$HOME_ML/server.log" >&2; die "the server exited"; }
    code="$(python3 - "$host" "$port" <<'EOF'
import sys, urllib.error, urllib.request
host, port = sys.argv[1], sys.argv[2]
host = f"[{host}]" if ":" in host else host
try:
    print(urllib.request.urlopen(f"http://{host}:{port}/api/2.0/mlflow/experiments/search?max_results=1", timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
)"
    [ "$code" = 401 ] && { echo "mlflow_server.sh: MLflow on http://$host:$port (basic auth), log $HOME_ML/server.log"; return 0; }
    [ "$code" = 000 ] || { stop; die "the server answered $code to a request without credentials (expected 401)"; }
    sleep 1
  done
  stop
  die "no answer from http://$host:$port within 120 s (see $HOME_ML/server.log)"
}

case "${1:-}" in
  credentials) credentials ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  *) die "usage: $0 credentials | start HOST [PORT] | stop" ;;
esac
