#!/usr/bin/env bash
# make bench: cartworker's load benchmark. Writes bench/REPORT.md,
# bench/results.json and bench/latency.svg; raw runs and logs stay in
# bench/.work/<run>/ (git-ignored).
#
# Side by side, in one run, against one daprd and one Redis:
#   pooled       the worker as shipped
#   per-request  the same binary with WORKER_STATE_CLIENT=per-request
#   ceiling      the scenario's state calls straight to daprd through the
#                worker's pooled HTTP client (loadgen ceiling), no NATS/worker
#   go-sdk       the same calls through the Dapr Go SDK over gRPC
#                (bench/sdkpeer, a separate module)
#
# Layout: Redis, daprd and two NATS servers (one per worker mode) are
# containers on the host network, listening on random 127.0.0.1 ports, so
# that no docker-proxy sits between the worker and its sidecar (as in a pod,
# where they share localhost). Both workers, the load generator and the peer
# are host processes, so the workers' RSS and CPU are read from /proc. Both
# workers run for the whole benchmark; the modes of each point are
# interleaved round by round. Everything is removed on exit, and every step
# is bounded in time. Images are never pulled: missing ones are built
# locally by scripts/build-images.sh.
#
# Settings (environment):
#   BENCH_DURATION   measured time per point and mode, split over the rounds (9s)
#   BENCH_WARMUP     warm-up before each round, not counted (1s)
#   BENCH_ROUNDS     rounds per point; modes alternate between rounds, and
#                    the report quotes medians over rounds (3)
#   BENCH_THINK      think time of the paced scenario (100ms)
#   BENCH_USERS      user counts ("1 3 5 10 15")
#   BENCH_SAT_USERS  closed-loop saturation users (64)
#   BENCH_TIMEOUT    bound on one command (10s)
#   BENCH_PEER       1 to run the go-sdk peer, 0 to skip it (1)
#   BENCH_PROFILE    1 to save a CPU profile of the pooled worker at saturation (0)
#   BENCH_OUT        where REPORT.md, results.json, latency.svg go (bench/)
#   NATS_IMAGE, REDIS_IMAGE, DAPRD_IMAGE   images (deployments/images.env)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BENCH_DURATION=${BENCH_DURATION:-9s}
BENCH_WARMUP=${BENCH_WARMUP:-1s}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_THINK=${BENCH_THINK:-100ms}
BENCH_USERS=${BENCH_USERS:-1 3 5 10 15}
BENCH_SAT_USERS=${BENCH_SAT_USERS:-64}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-10s}
BENCH_PEER=${BENCH_PEER:-1}
BENCH_PROFILE=${BENCH_PROFILE:-0}
BENCH_OUT=${BENCH_OUT:-$ROOT/bench}

# NATS_IMAGE, REDIS_IMAGE, DAPRD_IMAGE: deployments/images.env unless set.
# shellcheck source=images.sh
. "$ROOT/scripts/images.sh"

log() { echo "bench: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# to_ms DURATION: Go-style duration (500ms, 8s, 1.5s, 2m) in milliseconds.
to_ms() {
	awk -v d="$1" 'BEGIN {
		if (d ~ /^[0-9.]+ms$/) { sub(/ms$/, "", d); printf "%d\n", d; exit }
		if (d ~ /^[0-9.]+s$/)  { sub(/s$/, "", d);  printf "%d\n", d * 1000; exit }
		if (d ~ /^[0-9.]+m$/)  { sub(/m$/, "", d);  printf "%d\n", d * 60000; exit }
		exit 1 }' || die "bad duration '$1' (want e.g. 500ms, 8s, 2m)"
}

DUR_MS=$(to_ms "$BENCH_DURATION")
WARM_MS=$(to_ms "$BENCH_WARMUP")
THINK_MS=$(to_ms "$BENCH_THINK")
TIMEOUT_MS=$(to_ms "$BENCH_TIMEOUT")
[[ "$BENCH_ROUNDS" =~ ^[1-9][0-9]?$ ]] || die "BENCH_ROUNDS=$BENCH_ROUNDS: want 1..99"
[[ "$BENCH_SAT_USERS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SAT_USERS=$BENCH_SAT_USERS: want a positive number"
for u in $BENCH_USERS; do [[ "$u" =~ ^[1-9][0-9]*$ ]] || die "BENCH_USERS: '$u' is not a user count"; done
[ "$THINK_MS" -gt 0 ] || die "BENCH_THINK must be positive"
ROUND_MS=$((DUR_MS / BENCH_ROUNDS))
[ "$ROUND_MS" -ge 200 ] || die "BENCH_DURATION/BENCH_ROUNDS is under 200ms"
ROUND_DUR=${ROUND_MS}ms
# A run's hard bound: warm-up + window + two command timeouts + margin.
RUN_LIMIT_S=$(((WARM_MS + ROUND_MS + 2 * TIMEOUT_MS) / 1000 + 30))

command -v go >/dev/null 2>&1 || die "go is not on PATH"
"$ROOT/scripts/ensure-docker.sh"

NAME=cwbench-$(date +%H%M%S)-$$
WORK=$ROOT/bench/.work/$NAME
BIN=$WORK/bin
RAW=$WORK/raw
mkdir -p "$BIN" "$RAW" "$WORK/components"
ln -sfn "$NAME" "$ROOT/bench/.work/latest"
# Keep the last five runs' raw data.
# shellcheck disable=SC2012 # our own names, no odd characters
ls -1dt "$ROOT"/bench/.work/cwbench-* 2>/dev/null | tail -n +6 | xargs -r rm -rf

WORKER_PIDS=()
cleanup() {
	local rc=$? pid c
	set +e
	trap - EXIT INT TERM
	for pid in "${PROFILE_PID:-}" "${WORKER_PIDS[@]}"; do
		[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${WORKER_PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	for c in $(docker ps -aq --filter "label=cartworker.bench=$NAME" 2>/dev/null); do
		docker logs "$c" >"$WORK/container-$(docker inspect -f '{{.Name}}' "$c" | tr -d /).log" 2>&1
		docker rm -f "$c" >/dev/null 2>&1
	done
	if [ "$rc" -ne 0 ]; then
		log "failed (exit $rc); logs in $WORK"
	else
		rm -rf "$BIN" # CPU profiles from pprof carry their symbols
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

START=$SECONDS
for img in "$NATS_IMAGE" "$REDIS_IMAGE" "$DAPRD_IMAGE"; do
	if ! docker image inspect "$img" >/dev/null 2>&1; then
		log "image $img is missing; building the images locally"
		"$ROOT/scripts/build-images.sh"
		break
	fi
done

log "building worker, loadgen and the go-sdk peer"
CGO_ENABLED=0 go build -o "$BIN/worker" ./cmd/worker
CGO_ENABLED=0 go build -o "$BIN/loadgen" ./bench/loadgen
LOADGEN=$BIN/loadgen
PEER_STATUS="not available: disabled (BENCH_PEER=0)"
SDK_VERSION=
if [ "$BENCH_PEER" = 1 ]; then
	if (cd bench/sdkpeer && CGO_ENABLED=0 go build -o "$BIN/sdkpeer" .) >"$WORK/sdkpeer-build.log" 2>&1; then
		SDK_VERSION=$(cd bench/sdkpeer && go list -m -f '{{.Version}}' github.com/dapr/go-sdk)
		PEER_STATUS="ok: github.com/dapr/go-sdk $SDK_VERSION"
	else
		PEER_STATUS="not available: bench/sdkpeer did not build: $(tail -n 1 "$WORK/sdkpeer-build.log")"
		log "$PEER_STATUS"
	fi
fi

PORTS=$("$LOADGEN" free-ports -n 8 | tr '\n' ' ')
read -r P_REDIS P_HTTP P_GRPC P_INT P_NATS_A P_NATS_B P_WA P_WB <<<"$PORTS"

# The component of `make run` and compose, pointed at this run's Redis;
# world-readable for daprd's non-root user.
COMPONENT=deployments/dapr/components/cartstore.yaml
sed "s|value: redis:6379|value: 127.0.0.1:$P_REDIS|" "$COMPONENT" >"$WORK/components/cartstore.yaml"
grep -q "value: 127.0.0.1:$P_REDIS" "$WORK/components/cartstore.yaml" ||
	die "$COMPONENT has no 'value: redis:6379' line to point at this run's Redis"
chmod 755 "$WORK/components"
chmod 644 "$WORK/components/cartstore.yaml"

OTHER_CONTAINERS=$(docker ps -q | wc -l)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

drun() { # NAME IMAGE ARGS...: a container of this run on the host network
	local name=$1
	shift
	docker run -d --name "$NAME-$name" --label "cartworker.bench=$NAME" --network host "$@" >/dev/null
}
log "starting Redis, daprd and two NATS servers ($NAME)"
drun redis "$REDIS_IMAGE" redis-server --save "" --appendonly no --bind 127.0.0.1 --port "$P_REDIS"
drun nats-pooled "$NATS_IMAGE" -js -sd /data -a 127.0.0.1 -p "$P_NATS_A"
drun nats-per-request "$NATS_IMAGE" -js -sd /data -a 127.0.0.1 -p "$P_NATS_B"
"$LOADGEN" wait -tcp "127.0.0.1:$P_REDIS" -timeout 30s
drun daprd -v "$WORK/components:/components:ro" "$DAPRD_IMAGE" ./daprd \
	--app-id cartworker --dapr-http-port "$P_HTTP" --dapr-grpc-port "$P_GRPC" \
	--dapr-listen-addresses 127.0.0.1 --dapr-internal-grpc-port "$P_INT" \
	--dapr-internal-grpc-listen-address 127.0.0.1 --enable-metrics=false \
	--resources-path /components --log-level warn
"$LOADGEN" wait -http "http://127.0.0.1:$P_HTTP/v1.0/healthz" -timeout 60s ||
	{ docker logs "$NAME-daprd" 2>&1 | tail -20 >&2; die "daprd did not become healthy"; }
"$LOADGEN" wait -tcp "127.0.0.1:$P_NATS_A" -timeout 30s
"$LOADGEN" wait -tcp "127.0.0.1:$P_NATS_B" -timeout 30s

PPROF=false
[ "$BENCH_PROFILE" = 1 ] && PPROF=true
start_worker() { # MODE NATS_PORT HTTP_PORT: starts it in the background
	env -i PATH="$PATH" HOME="${HOME:-/root}" \
		NATS_URL="nats://127.0.0.1:$2" DAPR_HTTP_ENDPOINT="http://127.0.0.1:$P_HTTP" \
		WORKER_STATE_CLIENT="$1" WORKER_HTTP_ADDR="127.0.0.1:$3" WORKER_PPROF=$PPROF LOG_LEVEL=warn \
		"$BIN/worker" >"$WORK/worker-$1.log" 2>&1 &
	WORKER_PIDS+=("$!")
}
start_worker pooled "$P_NATS_A" "$P_WA"
PID_A=$!
start_worker per-request "$P_NATS_B" "$P_WB"
PID_B=$!
"$LOADGEN" wait -http "http://127.0.0.1:$P_WA/readyz" -timeout 60s || die "pooled worker not ready; see $WORK/worker-pooled.log"
"$LOADGEN" wait -http "http://127.0.0.1:$P_WB/readyz" -timeout 60s || die "per-request worker not ready; see $WORK/worker-per-request.log"

# Every process of the stack, so that each run can say where the CPU went.
cpid() { docker inspect -f '{{.State.Pid}}' "$NAME-$1"; }
WATCH=(-watch "worker-pooled=$PID_A" -watch "worker-per-request=$PID_B" -watch "daprd=$(cpid daprd)"
	-watch "redis=$(cpid redis)" -watch "nats-pooled=$(cpid nats-pooled)" -watch "nats-per-request=$(cpid nats-per-request)")

DOCS=$WORK/docs.json
if ! "$LOADGEN" capture -nats "nats://127.0.0.1:$P_NATS_A" -dapr "http://127.0.0.1:$P_HTTP" -out "$DOCS" -timeout 60s; then
	log "warning: could not capture the worker's documents; the ceiling and the peer use synthetic ones"
	"$LOADGEN" capture -synthetic -out "$DOCS"
fi

# Plan and time estimate. The paced points also run the ceiling: at that
# light load the bare state calls' own tail is what the worker's p99 is
# measured against.
read -r -a USERS <<<"$BENCH_USERS"
PACED_MODES=(pooled per-request ceiling)
ALL_MODES=(pooled per-request ceiling)
if [ -n "$SDK_VERSION" ]; then ALL_MODES+=(go-sdk); fi
NRUNS=$(((${#USERS[@]} * (${#PACED_MODES[@]} + ${#ALL_MODES[@]}) + ${#ALL_MODES[@]}) * BENCH_ROUNDS))
EST=$((NRUNS * (WARM_MS + ROUND_MS) / 1000 + NRUNS / 2))
log "$NRUNS runs of ${BENCH_WARMUP} warm-up + $ROUND_DUR; about $((EST / 60))m$((EST % 60))s (raw data: $WORK)"

SEQ=0
FAILED=0
run_point() { # MODE SCENARIO USERS ROUND [sat]
	local mode=$1 sc=$2 users=$3 round=$4 sat=${5:-} out rc=0
	SEQ=$((SEQ + 1))
	out=$(printf '%s/%03d-%s-%s-%du-r%d.json' "$RAW" "$SEQ" "$mode" "$sc" "$users" "$round")
	local args=(-scenario "$sc" -users "$users" -warmup "$BENCH_WARMUP" -duration "$ROUND_DUR"
		-think "$BENCH_THINK" -timeout "$BENCH_TIMEOUT" -round "$round" -out "$out" "${WATCH[@]}")
	[ -n "$sat" ] && args+=(-saturation)
	case $mode in
	pooled)
		timeout --foreground -k 5 "$RUN_LIMIT_S" "$LOADGEN" run -mode pooled -nats "nats://127.0.0.1:$P_NATS_A" \
			-worker-metrics "http://127.0.0.1:$P_WA/metrics" -worker-pid "$PID_A" "${args[@]}" || rc=$?
		;;
	per-request)
		timeout --foreground -k 5 "$RUN_LIMIT_S" "$LOADGEN" run -mode per-request -nats "nats://127.0.0.1:$P_NATS_B" \
			-worker-metrics "http://127.0.0.1:$P_WB/metrics" -worker-pid "$PID_B" "${args[@]}" || rc=$?
		;;
	ceiling)
		timeout --foreground -k 5 "$RUN_LIMIT_S" "$LOADGEN" ceiling -dapr "http://127.0.0.1:$P_HTTP" -docs "$DOCS" "${args[@]}" || rc=$?
		;;
	go-sdk)
		timeout --foreground -k 5 "$RUN_LIMIT_S" "$BIN/sdkpeer" -grpc "127.0.0.1:$P_GRPC" -docs "$DOCS" "${args[@]}" || rc=$?
		;;
	esac
	# 130/143: the run was interrupted (Ctrl-C, SIGTERM): stop here. bash
	# itself would carry on, since the child handled the signal.
	if [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; then
		log "interrupted"
		exit 130
	fi
	if [ "$rc" -ne 0 ]; then
		log "warning: $mode $sc ${users}u round $round failed (exit $rc)"
		FAILED=$((FAILED + 1))
		rm -f "$out"
	fi
	kill -0 "$PID_A" 2>/dev/null || die "the pooled worker died; see $WORK/worker-pooled.log"
	kill -0 "$PID_B" 2>/dev/null || die "the per-request worker died; see $WORK/worker-per-request.log"
}

# run_modes SCENARIO USERS ROUND SHIFT [sat] MODES...: the modes in an order
# rotated by SHIFT, so no mode always goes first.
run_modes() {
	local sc=$1 users=$2 round=$3 shift=$4 sat=$5
	shift 5
	local modes=("$@") n=$# i
	for ((i = 0; i < n; i++)); do
		run_point "${modes[$(((i + shift) % n))]}" "$sc" "$users" "$round" "$sat"
	done
}

idx=0
for sc in paced closed-loop; do
	modes=("${PACED_MODES[@]}")
	[ "$sc" = closed-loop ] && modes=("${ALL_MODES[@]}")
	for users in "${USERS[@]}"; do
		for ((round = 1; round <= BENCH_ROUNDS; round++)); do
			run_modes "$sc" "$users" "$round" $((idx + round - 1)) "" "${modes[@]}"
		done
		idx=$((idx + 1))
	done
done
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
	if [ "$BENCH_PROFILE" = 1 ] && [ "$round" = 1 ]; then
		# Profile the pooled worker over its saturation window.
		# (whole seconds: a longer BENCH_DURATION gives a better profile).
		(sleep "$(awk -v m="$WARM_MS" 'BEGIN { printf "%.1f", m / 1000 + 0.2 }')" && "$LOADGEN" fetch -timeout 120s \
			-url "http://127.0.0.1:$P_WA/debug/pprof/profile?seconds=$((ROUND_MS / 1000 > 1 ? ROUND_MS / 1000 : 1))" \
			-out "$WORK/pooled-saturation-cpu.pprof") &
		PROFILE_PID=$!
		run_point pooled closed-loop "$BENCH_SAT_USERS" "$round" sat
		wait "$PROFILE_PID" || log "warning: profile not captured"
		PROFILE_PID=
		run_modes closed-loop "$BENCH_SAT_USERS" "$round" 0 sat "${ALL_MODES[@]:1}"
	else
		run_modes closed-loop "$BENCH_SAT_USERS" "$round" $((round - 1)) sat "${ALL_MODES[@]}"
	fi
done

# Connections each worker holds to daprd now, to set against what it opened.
conns_to_daprd() { # PID
	ss -Htnp state established "( dport = :$P_HTTP )" 2>/dev/null | grep -c "pid=$1," || true
}
OPEN_A=$(conns_to_daprd "$PID_A")
OPEN_B=$(conns_to_daprd "$PID_B")

# Versions and notes for the report.
ver() { "$@" 2>/dev/null | head -n 1 || true; }
NATS_VER=$(ver docker exec "$NAME-nats-pooled" /nats-server --version | awk '{print $NF}')
REDIS_VER=$(ver docker exec "$NAME-redis" redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
DAPR_VER=$(ver docker exec "$NAME-daprd" ./daprd --version)
DOCKER_VER=$(ver docker version --format '{{.Server.Version}}')
GIT_VER=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The previous run's report files are this run's outputs, not changes to
# what is measured.
[ -n "$(git status --porcelain -- . ':!bench/REPORT.md' ':!bench/results.json' ':!bench/latency.svg' 2>/dev/null)" ] &&
	GIT_VER="$GIT_VER (uncommitted changes)"
NOTES=$WORK/notes.md
{
	echo "- Before the run: load average $LOADAVG, $OTHER_CONTAINERS other container(s) running on this machine; their CPU use shows in *host busy*."
	echo "- Raw runs, worker and container logs: \`bench/.work/$NAME/\` (not committed)."
	echo "- TCP connections to daprd still open at the end of the run: pooled worker $OPEN_A, per-request worker $OPEN_B."
	[ "$FAILED" -gt 0 ] && echo "- **$FAILED run(s) failed** and are missing from the tables; see the bench log."
	if [ -s "$WORK/pooled-saturation-cpu.pprof" ]; then
		go tool pprof -top -nodecount=25 "$BIN/worker" "$WORK/pooled-saturation-cpu.pprof" >"$WORK/pooled-saturation-cpu.top" 2>/dev/null || true
		echo "- CPU profile of the pooled worker at saturation: \`bench/.work/$NAME/pooled-saturation-cpu.pprof\` (top functions in \`pooled-saturation-cpu.top\`)."
	fi
	true
} >"$NOTES"

SETTINGS="BENCH_DURATION=$BENCH_DURATION BENCH_WARMUP=$BENCH_WARMUP BENCH_ROUNDS=$BENCH_ROUNDS BENCH_THINK=$BENCH_THINK BENCH_USERS='$BENCH_USERS' BENCH_SAT_USERS=$BENCH_SAT_USERS BENCH_TIMEOUT=$BENCH_TIMEOUT"
TOPOLOGY="one host, loopback only: Redis, daprd and one NATS server per worker mode in containers on the host network (no docker-proxy between worker and daprd, as in a pod); both workers, the load generator and the go-sdk peer as host processes; all share the machine's cores."
"$LOADGEN" report -raw "$RAW" -docs "$DOCS" -out "$BENCH_OUT" -peer "$PEER_STATUS" \
	-settings "$SETTINGS" -topology "$TOPOLOGY" -notes "$NOTES" \
	-version "cartworker=$GIT_VER" -version "nats-server=${NATS_VER:-unknown} ($NATS_IMAGE)" \
	-version "daprd=${DAPR_VER:-unknown} ($DAPRD_IMAGE, state.redis)" -version "redis=${REDIS_VER:-unknown} ($REDIS_IMAGE)" \
	-version "docker=${DOCKER_VER:-unknown}"
log "done in $((SECONDS - START))s: $BENCH_OUT/REPORT.md"
