#!/usr/bin/env bash
# A real `ray up` / `ray submit` / `ray down` round trip on this machine, over ssh to 127.0.0.1 only.
#
#   scripts/local_cluster.sh run [SCRIPT] [-- SCRIPT ARGS...]   everything below, always cleaned up
#   scripts/local_cluster.sh setup      (root) packages, user, throwaway keys, sshd on 127.0.0.1:2222
#   scripts/local_cluster.sh up         ray up -y cluster/local.yaml
#   scripts/local_cluster.sh submit SCRIPT [ARGS...]   ray submit cluster/local.yaml SCRIPT -- ARGS
#   scripts/local_cluster.sh down       ray down -y cluster/local.yaml
#   scripts/local_cluster.sh teardown   stop the cluster user's Ray and our sshd, delete the keys
#   scripts/local_cluster.sh outdir     make (and print) a fresh output folder the cluster user may write
#
# `run` defaults to jobs/search_and_train.py --quick --out <fresh outdir>.
# The constants below are repeated in cluster/local.yaml (tests/cluster/test_cluster_yaml.py checks
# that they agree). Needs root for setup/teardown (apt-get, useradd, sshd); see docs/cluster.md.
set -euo pipefail

LC_DIR=/tmp/e3d-lc          # keys, sshd config/pid/log, the cluster's Ray temp dir, job outputs
LC_USER=e3dray              # the "node's" login user; its `ray stop` cannot touch anyone else's Ray
LC_PORT=2222                # sshd listens on 127.0.0.1:$LC_PORT only
LC_HOST=127.0.0.1

REPO="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="$REPO/cluster/local.yaml"
RAY_BIN="${RAY_BIN:-$REPO/.venv/bin/ray}"
[ -x "$RAY_BIN" ] || RAY_BIN="$(command -v ray || true)"
# The client side (this shell) keeps its cluster state/lock files apart from the shared /tmp/ray too.
export RAY_TMPDIR="$LC_DIR/client"
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1
UP_TIMEOUT="${E3D_UP_TIMEOUT:-600}"
SUBMIT_TIMEOUT="${E3D_SUBMIT_TIMEOUT:-1800}"
DOWN_TIMEOUT="${E3D_DOWN_TIMEOUT:-300}"

log() { echo "[local_cluster] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "'$1' needs root (apt-get, useradd, sshd)"; }
user_home() { getent passwd "$LC_USER" | cut -d: -f6; }
as_user() { su -s /bin/bash "$LC_USER" -c "$1"; }
ssh_opts() {
  echo -i "$LC_DIR/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \
       -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10
}

ensure_packages() {
  local missing=()
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh >/dev/null || missing+=(openssh-client)
  command -v rsync >/dev/null || missing+=(rsync)     # ray up/submit copy files with rsync
  command -v nc >/dev/null || missing+=(netcat-openbsd)  # the ssh ProxyCommand (custom port)
  command -v setfacl >/dev/null || missing+=(acl)       # see grant_traverse
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing from Debian's packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# The venv's base interpreter may live under a private folder (pyenv under /root, mode 700): give
# the cluster user traverse-only (x) ACLs on exactly the folders it cannot enter, recorded in
# $LC_DIR/acl-granted so that teardown takes them back.
grant_traverse() {
  local target d had
  for target in "$@"; do
    d=/
    for part in $(echo "$target" | tr '/' ' '); do
      d="${d%/}/$part"
      [ -d "$d" ] || break
      if ! as_user "test -x '$d'" 2>/dev/null; then
        command -v setfacl >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends acl >/dev/null; }
        had=0; [ -n "$(getfacl -cps --skip-base "$d" 2>/dev/null)" ] && had=1
        setfacl -m "u:$LC_USER:x" "$d"
        printf '%s\t%s\n' "$d" "$had" >> "$LC_DIR/acl-granted"
        log "granted $LC_USER traverse (x) on $d"
      fi
    done
  done
}

revoke_traverse() {
  [ -f "$LC_DIR/acl-granted" ] || return 0
  local d had
  while IFS=$'\t' read -r d had; do
    [ -d "$d" ] || continue
    if [ "$had" = 1 ]; then setfacl -x "u:$LC_USER" "$d" || true; else setfacl -b "$d" || true; fi
  done < "$LC_DIR/acl-granted"
  rm -f "$LC_DIR/acl-granted"
}

stop_sshd() {
  local pid
  if [ -f "$LC_DIR/sshd.pid" ]; then
    pid="$(cat "$LC_DIR/sshd.pid")"
    # only the sshd we started (its pid file, its config on the command line)
    if [ -n "$pid" ] && grep -qs "$LC_DIR/sshd_config" "/proc/$pid/cmdline"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      log "sshd ($pid) stopped"
    fi
    rm -f "$LC_DIR/sshd.pid"
  fi
}

cmd_setup() {
  need_root setup
  [ -n "$RAY_BIN" ] && [ -x "$RAY_BIN" ] || die "no ray CLI (expected $REPO/.venv/bin/ray; run 'make venv')"
  [ -x "$REPO/.venv/bin/python" ] || die "$REPO/.venv/bin/python missing: the cluster node runs the checkout's venv (run 'make venv')"
  ensure_packages

  if ! id "$LC_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$LC_USER"
    log "created user $LC_USER"
  fi
  usermod -p '*' "$LC_USER"   # no password login, but not "locked" (sshd without PAM refuses locked users)
  local home; home="$(user_home)"

  mkdir -p "$LC_DIR" "$LC_DIR/client"; chmod 755 "$LC_DIR"
  mkdir -p "$LC_DIR/tmp" "$LC_DIR/out"; chown "$LC_USER:" "$LC_DIR/tmp" "$LC_DIR/out"

  # Throwaway keys, new on every setup: the client key and sshd's host key.
  rm -f "$LC_DIR/id_ed25519" "$LC_DIR/id_ed25519.pub" "$LC_DIR/ssh_host_ed25519_key" "$LC_DIR/ssh_host_ed25519_key.pub"
  ssh-keygen -q -t ed25519 -N '' -C e3d-local-cluster -f "$LC_DIR/id_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C e3d-local-cluster-host -f "$LC_DIR/ssh_host_ed25519_key"
  install -d -m 700 -o "$LC_USER" -g "$LC_USER" "$home/.ssh"
  { printf 'from="127.0.0.1" '; cat "$LC_DIR/id_ed25519.pub"; } > "$home/.ssh/authorized_keys"
  chown "$LC_USER:" "$home/.ssh/authorized_keys"; chmod 600 "$home/.ssh/authorized_keys"

  # The node's copy of the project: a link to this checkout (a cloud node git-clones it instead).
  revoke_traverse
  grant_traverse "$REPO" "$(dirname "$(readlink -f "$REPO/.venv/bin/python")")"
  ln -sfn "$REPO" "$home/e3d-ray"; chown -h "$LC_USER:" "$home/e3d-ray"
  as_user "cd ~ && ~/e3d-ray/.venv/bin/python -c 'import e3d, pipeline, ray'" \
    || die "user $LC_USER cannot run $REPO/.venv/bin/python and import the project (unreadable files?)"

  cat > "$LC_DIR/sshd_config" <<EOF
# sshd for the local Ray cluster (scripts/local_cluster.sh): loopback only, key auth only, one user.
Port $LC_PORT
ListenAddress $LC_HOST
HostKey $LC_DIR/ssh_host_ed25519_key
PidFile $LC_DIR/sshd.pid
AllowUsers $LC_USER
PermitRootLogin no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding local
X11Forwarding no
PrintMotd no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
EOF
  mkdir -p /run/sshd; chmod 755 /run/sshd   # sshd's privilege-separation directory
  stop_sshd
  /usr/sbin/sshd -t -f "$LC_DIR/sshd_config"
  /usr/sbin/sshd -f "$LC_DIR/sshd_config" -E "$LC_DIR/sshd.log"
  for _ in $(seq 50); do nc -z "$LC_HOST" "$LC_PORT" 2>/dev/null && break; sleep 0.1; done
  # shellcheck disable=SC2046
  ssh $(ssh_opts) -o "ProxyCommand=nc $LC_HOST $LC_PORT" "$LC_USER@$LC_HOST" true \
    || die "ssh to $LC_USER@$LC_HOST:$LC_PORT failed; see $LC_DIR/sshd.log"
  log "sshd $(cat "$LC_DIR/sshd.pid") on $LC_HOST:$LC_PORT, user $LC_USER, node project -> $REPO"
}

cmd_teardown() {
  need_root teardown
  if id "$LC_USER" >/dev/null 2>&1; then
    # `ray stop` as the cluster user: it can only signal that user's own processes.
    as_user "RAY_TMPDIR=$LC_DIR/tmp $REPO/.venv/bin/ray stop --force >/dev/null 2>&1" || true
    # anything else still running as the cluster user (a job killed half way, an ssh session) was
    # started by this harness: end it by pid.
    local pids; pids="$(ps -o pid= -u "$LC_USER" 2>/dev/null | tr -s ' \n' ' ' || true)"
    if [ -n "${pids// /}" ]; then log "ending leftover $LC_USER processes: $pids"; kill $pids 2>/dev/null || true; sleep 1; kill -9 $pids 2>/dev/null || true; fi
    rm -f "$(user_home)/.ssh/authorized_keys"
  fi
  stop_sshd
  revoke_traverse
  rm -f "$LC_DIR/id_ed25519" "$LC_DIR/id_ed25519.pub" "$LC_DIR/ssh_host_ed25519_key" "$LC_DIR/ssh_host_ed25519_key.pub"
  log "torn down (logs kept in $LC_DIR)"
}

cmd_up() { timeout "$UP_TIMEOUT" "$RAY_BIN" up -y --no-config-cache "$CONFIG"; }
cmd_down() { timeout "$DOWN_TIMEOUT" "$RAY_BIN" down -y "$CONFIG"; }
cmd_submit() {
  [ $# -ge 1 ] || die "usage: submit SCRIPT [ARGS...]"
  local script="$1"; shift
  timeout "$SUBMIT_TIMEOUT" "$RAY_BIN" submit --no-config-cache "$CONFIG" "$script" -- "$@"
}
cmd_outdir() {
  mkdir -p "$LC_DIR/out"; chown "$LC_USER:" "$LC_DIR/out" 2>/dev/null || true
  local d; d="$(mktemp -d "$LC_DIR/out/run-XXXXXX")"; chmod 755 "$d"; chown "$LC_USER:" "$d"; echo "$d"
}

cmd_run() {
  local script="$REPO/jobs/search_and_train.py" args=()
  if [ $# -gt 0 ] && [ "$1" != "--" ]; then script="$1"; shift; fi
  if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; args=("$@"); fi
  [ -f "$script" ] || die "no job script $script"
  trap 'rc=$?; cmd_down || log "ray down failed"; cmd_teardown; exit $rc' EXIT
  cmd_setup
  if [ ${#args[@]} -eq 0 ]; then args=(--quick --out "$(cmd_outdir)"); fi
  cmd_up
  cmd_submit "$script" "${args[@]}"
  log "job finished OK: $script ${args[*]}"
}

case "${1:-}" in
  setup|up|down|teardown|outdir) c="$1"; shift; "cmd_$c" "$@" ;;
  submit) shift; cmd_submit "$@" ;;
  run) shift; cmd_run "$@" ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
