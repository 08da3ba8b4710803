#!/usr/bin/env bash
# Make sure a Docker daemon is reachable, installing and starting one if needed.
#
#   scripts/ensure-docker.sh
#
# If `docker info` already works this exits 0 at once. Otherwise it installs
# docker.io from Debian (when dockerd is missing), starts dockerd in the
# background (log: /var/log/cartworker-dockerd.log) and waits up to
# DOCKER_WAIT_SECONDS (default 60) for it.
#
# dockerd needs no special flags here (overlay2 on ext4, iptables nf_tables,
# cgroup v1, managed containerd): user-defined bridge networks resolve
# container names and published ports answer on 127.0.0.1. Extra flags can
# be passed with DOCKERD_FLAGS. If dockerd dies on start, one retry is made
# with --storage-driver=vfs (for hosts without overlayfs).
set -euo pipefail

LOG=${DOCKERD_LOG:-/var/log/cartworker-dockerd.log}
WAIT=${DOCKER_WAIT_SECONDS:-60}
read -r -a EXTRA_FLAGS <<<"${DOCKERD_FLAGS:-}"

log() { echo "ensure-docker: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
fi

docker_ok() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && docker_ok; then
	exit 0
fi

if ! command -v docker >/dev/null 2>&1 ||
	{ ! command -v dockerd >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; }; then
	log "docker or dockerd not found; installing docker.io with apt-get"
	"${SUDO[@]}" apt-get update
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io
fi
DOCKERD=$(command -v dockerd || echo /usr/sbin/dockerd)

# Wait until `docker info` works, dockerd (pid $1) dies, or $WAIT seconds pass.
wait_ready() {
	local pid=$1 deadline=$((SECONDS + WAIT))
	while [ "$SECONDS" -lt "$deadline" ]; do
		if docker_ok; then return 0; fi
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
		sleep 1
	done
	return 1
}

# A daemon may already be starting (e.g. launched by another shell), or
# stopping: then it exits while we wait and a new one is started below.
if pid=$(pgrep -x dockerd | head -n1) && [ -n "$pid" ]; then
	log "dockerd already running (pid $pid); waiting for it"
	if wait_ready "$pid"; then exit 0; fi
	if kill -0 "$pid" 2>/dev/null; then
		log "dockerd (pid $pid) is running but docker info still fails after ${WAIT}s"
		exit 1
	fi
	log "dockerd (pid $pid) exited while we waited; starting a new one"
fi

start_dockerd() {
	log "starting $DOCKERD${*:+ $*} (log: $LOG)"
	# sh -c so that the log is opened with the daemon's privileges under sudo;
	# setsid so that a Ctrl-C in the caller's terminal does not reach dockerd
	# (-w keeps the pid we wait on alive should setsid have to fork).
	local detach=()
	if command -v setsid >/dev/null 2>&1; then detach=(setsid -w); fi
	# shellcheck disable=SC2016 # expanded by the inner sh
	"${SUDO[@]}" sh -c 'log=$1; shift; mkdir -p "$(dirname "$log")" && exec "$@" >>"$log" 2>&1 </dev/null' \
		sh "$LOG" "${detach[@]}" nohup "$DOCKERD" "$@" &
	local pid=$!
	disown "$pid" 2>/dev/null || true
	wait_ready "$pid"
}

if start_dockerd "${EXTRA_FLAGS[@]}"; then
	log "docker is ready"
	exit 0
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
	log "dockerd exited; retrying with --storage-driver=vfs"
	if start_dockerd --storage-driver=vfs "${EXTRA_FLAGS[@]}"; then
		log "docker is ready (vfs storage driver)"
		exit 0
	fi
fi
log "docker did not become ready (waited up to ${WAIT}s per attempt); last lines of $LOG:"
tail -n 30 "$LOG" >&2 || true
exit 1
