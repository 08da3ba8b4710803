#!/usr/bin/env bash
# make bench: cartworker's load benchmark. Writes bench/REPORT.md,
# bench/results.json and bench/latency.svg; raw runs and logs stay in
# bench/.work/<run>/ (git-ignored).
#
# Side by side, in one run, against one daprd and one Redis:
#   pooled       the worker as shipped (its default state transport)
#   per-request  the same binary with WORKER_STATE_CLIENT=per-request (HTTP)
#   worker-grpc  the same binary with WORKER_STATE_PROTOCOL=grpc
#   worker-http  the same binary with WORKER_STATE_PROTOCOL=http
#   watermill    bench/watermillpeer (a separate module): a Watermill router
#                instead of the worker, on the transport BENCH_PEER_PROTOCOL
#   dapr-pubsub  bench/daprpeer (a separate module): a Dapr Go SDK app that
#                its own daprd (tools/daprd's, run on the host) feeds from
#                the command stream through pubsub.jetstream, one ordered
#                subscription per partition; state through the SDK over gRPC
#   dapr-pubsub-bulk  the same with Dapr's bulk subscribe (emulated by daprd)
#   ceiling      the scenario's state calls straight to daprd through the
#                worker's pooled HTTP client (loadgen ceiling), no NATS/worker
#   go-sdk       the same calls through the Dapr Go SDK over gRPC
#                (bench/sdkpeer, a separate module)
#   traced       the pooled worker with its OTLP span export on, to
#                `loadgen otlp-sink`, which counts the spans: at saturation
#                only, interleaved with pooled, for the cost of tracing
# Before any command, the idle cost: with every consumer started and ready,
# the pooled worker's CPU and its NATS server's while nothing is sent
# (loadgen idle: a settle for the worker to park its partitions, then
# windows of /proc readings).
# After the closed-loop points, the backlog drains: with the consumer stopped, a backlog of hot carts
# (50 x 100 add-items) and of many carts (1,000 x 20) is published, the
# consumer is started and the drain timed; every cart is then read back
# through Dapr and checked (loadgen backlog).
#
# Layout: Redis, daprd and one NATS server per consumer (each worker mode,
# each peer) are containers on the host network, listening on random
# 127.0.0.1 ports, so that no docker-proxy sits between the worker and its
# sidecar (as in a pod, where they share localhost). The workers, the peers
# and the load generator are host processes, so their RSS and CPU are read
# from /proc. Each Dapr pub/sub peer runs a daprd of its own as its child
# (the binary of the daprd image, from scripts/build-images.sh
# --daprd-binary), against the same Redis. The consumers run for the whole
# benchmark (until the backlog phase restarts them one drain at a time); the
# modes of each point are interleaved round by round. Everything is removed
# on exit, and every step is bounded in time. Images are never pulled:
# missing ones are built locally by scripts/build-images.sh.
#
# Settings (environment):
#   BENCH_DURATION   closed-loop measured time per point and mode, split over
#                    the rounds (9s); also the least paced window
#   BENCH_WARMUP     warm-up before each round, not counted (1s)
#   BENCH_ROUNDS     rounds per point; modes alternate between rounds, and
#                    the report quotes medians over rounds (3)
#   BENCH_THINK      think time of the paced scenario (100ms)
#   BENCH_USERS      closed-loop user counts ("1 3 5 10 15")
#   BENCH_PACED_USERS  paced user counts ("5 10 15"; each paced window grows
#                    as users shrink: 1 user would take ~10 min per mode)
#   BENCH_PACED_SAMPLES  add-item samples each paced point and mode is sized
#                    for, over its rounds (5000)
#   BENCH_SAT_USERS  closed-loop saturation users (64)
#   BENCH_TIMEOUT    bound on one command (10s)
#   BENCH_PEER       1 to run the go-sdk peer, 0 to skip it (1)
#   BENCH_WATERMILL  1 to run the Watermill peer, 0 to skip it (1)
#   BENCH_PEER_PROTOCOL  the Watermill peer's state transport, grpc or http;
#                    it is compared with the worker on the same one (grpc)
#   BENCH_DAPR_PUBSUB 1 to run the Dapr pub/sub peer without and with bulk
#                    subscribe, 0 to skip it (1; with BENCH_CLOSED=0, only
#                    when BENCH_BACKLOG_MODES names one of its modes)
#   BENCH_TRANSPORTS 1 to run worker-grpc and worker-http, 0 to skip (1)
#   BENCH_CLOSED     1 to run the paced and closed-loop points and write the
#                    report, 0 for the backlog drains alone, summed up by
#                    `loadgen memory` against BENCH_MEMORY_MIB (1)
#   BENCH_MEMORY_MIB the peak RSS every drain must stay at or under when
#                    BENCH_CLOSED=0 (48, the report's floor)
#   BENCH_BACKLOG    backlog scenarios of hot, wide, many and huge, or "" to
#                    skip ("hot wide")
#   BENCH_BACKLOG_MODES  consumers that drain them (pooled and every peer
#                    that runs: "pooled watermill dapr-pubsub dapr-pubsub-bulk")
#   BENCH_BACKLOG_ROUNDS drains per scenario and consumer (BENCH_ROUNDS)
#   BENCH_BACKLOG_TIMEOUT bound on one drain (5m)
#   BENCH_PROFILE    1 to save a CPU profile of the pooled worker at saturation,
#                    and each worker's heap profile during its first round
#                    of each drain (0)
#   BENCH_IDLE       1 to measure the idle pooled worker's and its NATS
#                    server's CPU before the first command (loadgen idle,
#                    about 75 s), 0 to skip it (1; never with BENCH_CLOSED=0)
#   BENCH_TRACING    1 to measure the cost of span export (pooled at saturation,
#                    export off and on, BENCH_ROUNDS each), 0 to skip it (1)
#   BENCH_WORKER_ENV extra VAR=value settings of every worker, space
#                    separated, such as "GOMEMLIMIT=48MiB WORKER_MAX_HELD_BYTES=8388608"
#                    (none: the worker as shipped)
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
BENCH_PACED_USERS=${BENCH_PACED_USERS-5 10 15}
BENCH_PACED_SAMPLES=${BENCH_PACED_SAMPLES:-5000}
BENCH_SAT_USERS=${BENCH_SAT_USERS:-64}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-10s}
BENCH_PEER=${BENCH_PEER:-1}
BENCH_WATERMILL=${BENCH_WATERMILL:-1}
BENCH_PEER_PROTOCOL=${BENCH_PEER_PROTOCOL:-grpc}
BENCH_DAPR_PUBSUB=${BENCH_DAPR_PUBSUB:-1}
BENCH_TRANSPORTS=${BENCH_TRANSPORTS:-1}
BENCH_CLOSED=${BENCH_CLOSED:-1}
BENCH_MEMORY_MIB=${BENCH_MEMORY_MIB:-48}
BENCH_BACKLOG=${BENCH_BACKLOG-hot wide}
# Unset: pooled and every peer that runs (set once the peers are built).
BENCH_BACKLOG_MODES=${BENCH_BACKLOG_MODES:-}
BENCH_BACKLOG_ROUNDS=${BENCH_BACKLOG_ROUNDS:-$BENCH_ROUNDS}
BENCH_BACKLOG_TIMEOUT=${BENCH_BACKLOG_TIMEOUT:-5m}
BENCH_PROFILE=${BENCH_PROFILE:-0}
BENCH_TRACING=${BENCH_TRACING:-1}
BENCH_IDLE=${BENCH_IDLE:-1}
BENCH_WORKER_ENV=${BENCH_WORKER_ENV:-}
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
for u in $BENCH_USERS $BENCH_PACED_USERS; do [[ "$u" =~ ^[1-9][0-9]*$ ]] || die "BENCH_USERS/BENCH_PACED_USERS: '$u' is not a user count"; done
[[ "$BENCH_PACED_SAMPLES" =~ ^[1-9][0-9]*$ ]] || die "BENCH_PACED_SAMPLES=$BENCH_PACED_SAMPLES: want a positive number"
[[ "$BENCH_BACKLOG_ROUNDS" =~ ^[1-9][0-9]?$ ]] || die "BENCH_BACKLOG_ROUNDS=$BENCH_BACKLOG_ROUNDS: want 1..99"
for b in $BENCH_BACKLOG; do [[ "$b" =~ ^(hot|wide|many|huge)$ ]] || die "BENCH_BACKLOG: '$b' is not hot, wide, many or huge"; done
[[ "$BENCH_CLOSED" =~ ^[01]$ ]] || die "BENCH_CLOSED=$BENCH_CLOSED: want 0 or 1"
[[ "$BENCH_MEMORY_MIB" =~ ^[1-9][0-9]*$ ]] || die "BENCH_MEMORY_MIB=$BENCH_MEMORY_MIB: want a positive number of MiB"
[[ "$BENCH_IDLE" =~ ^[01]$ ]] || die "BENCH_IDLE=$BENCH_IDLE: want 0 or 1"
# The drains alone: no traced worker, nothing closed-loop to compare, no
# report for the idle figures.
if [ "$BENCH_CLOSED" = 0 ]; then
	BENCH_TRACING=0
	BENCH_IDLE=0
fi
for m in $BENCH_BACKLOG_MODES; do
	[[ "$m" =~ ^(pooled|per-request|worker-grpc|worker-http|watermill|dapr-pubsub|dapr-pubsub-bulk)$ ]] || die "BENCH_BACKLOG_MODES: '$m' is not a consumer mode"
done
[[ "$BENCH_DAPR_PUBSUB" =~ ^[01]$ ]] || die "BENCH_DAPR_PUBSUB=$BENCH_DAPR_PUBSUB: want 0 or 1"
# The drains alone run the Dapr pub/sub peer only when told to drain with it
# (make bench-memory, which drains with pooled alone, has no use for it).
if [ "$BENCH_CLOSED" = 0 ] && [[ " $BENCH_BACKLOG_MODES " != *" dapr-pubsub"* ]]; then BENCH_DAPR_PUBSUB=0; fi
[[ "$BENCH_PEER_PROTOCOL" =~ ^(grpc|http)$ ]] || die "BENCH_PEER_PROTOCOL=$BENCH_PEER_PROTOCOL: want grpc or http"
[[ "$BENCH_TRACING" =~ ^[01]$ ]] || die "BENCH_TRACING=$BENCH_TRACING: want 0 or 1"
for kv in $BENCH_WORKER_ENV; do [[ "$kv" =~ ^[A-Z_][A-Z0-9_]*=[^[:space:]]*$ ]] || die "BENCH_WORKER_ENV: '$kv' is not VAR=value"; done
[ "$THINK_MS" -gt 0 ] || die "BENCH_THINK must be positive"
ROUND_MS=$((DUR_MS / BENCH_ROUNDS))
[ "$ROUND_MS" -ge 200 ] || die "BENCH_DURATION/BENCH_ROUNDS is under 200ms"
ROUND_DUR=${ROUND_MS}ms
BACKLOG_TIMEOUT_MS=$(to_ms "$BENCH_BACKLOG_TIMEOUT")

# paced_round_ms USERS: one paced round's window, long enough for
# BENCH_PACED_SAMPLES add-items over the rounds. A paced user sends one
# command per think time plus its latency (15 ms assumed: per-request on a
# busy machine), 20 of every 22 an add-item; 15 % margin. Never shorter
# than a closed-loop round. The report flags a point that fell short.
paced_round_ms() {
	awk -v u="$1" -v n="$BENCH_PACED_SAMPLES" -v t="$THINK_MS" -v r="$BENCH_ROUNDS" -v least="$ROUND_MS" 'BEGIN {
		rate = 1000 / (t + 15) * 20 / 22 / 1.15
		ms = n / (u * rate) / r * 1000
		ms = int((ms + 99) / 100) * 100
		if (ms < least) ms = least
		printf "%d\n", ms }'
}

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

# Long-lived consumers (workers, the Watermill peer) by mode.
declare -A PID=()
cleanup() {
	local rc=$? pid c
	set +e
	trap - EXIT INT TERM
	for pid in "${PROFILE_PID:-}" "${PID[@]}"; do
		[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${PID[@]}"; do
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

log "building worker, loadgen and the peers"
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
WM_STATUS="not available: disabled (BENCH_WATERMILL=0)"
WM_CLIENT=
if [ "$BENCH_WATERMILL" = 1 ]; then
	if (cd bench/watermillpeer && CGO_ENABLED=0 go build -o "$BIN/watermillpeer" .) >"$WORK/watermillpeer-build.log" 2>&1; then
		wm_ver() { (cd bench/watermillpeer && go list -m -f '{{.Version}}' "$1"); }
		transport="the worker's pooled HTTP client"
		[ "$BENCH_PEER_PROTOCOL" = grpc ] && transport="github.com/dapr/go-sdk $(wm_ver github.com/dapr/go-sdk) over gRPC"
		WM_CLIENT="bench/watermillpeer: watermill $(wm_ver github.com/ThreeDotsLabs/watermill), watermill-nats $(wm_ver github.com/ThreeDotsLabs/watermill-nats/v2) JetStream subscriber, one durable per partition; state through $transport"
		WM_STATUS="ok: $WM_CLIENT"
	else
		WM_STATUS="not available: bench/watermillpeer did not build: $(tail -n 1 "$WORK/watermillpeer-build.log")"
		log "$WM_STATUS"
	fi
fi

DP_STATUS="not available: disabled (BENCH_DAPR_PUBSUB=0)"
DP_CLIENT=
if [ "$BENCH_DAPR_PUBSUB" = 1 ]; then
	# The daprd binary of the daprd image, with pubsub.jetstream (compiled
	# if missing: minutes, the first time).
	if ! DAPRD_BIN=$("$ROOT/scripts/build-images.sh" --daprd-binary); then
		DP_STATUS="not available: tools/daprd did not build (scripts/build-images.sh --daprd-binary failed)"
		log "$DP_STATUS"
	elif ! (cd bench/daprpeer && CGO_ENABLED=0 go build -o "$BIN/daprpeer" .) >"$WORK/daprpeer-build.log" 2>&1; then
		DP_STATUS="not available: bench/daprpeer did not build: $(tail -n 1 "$WORK/daprpeer-build.log")"
		log "$DP_STATUS"
	else
		# Named daprd, as it shows in ps.
		ln -sfn "$DAPRD_BIN" "$BIN/daprd"
		dp_ver() { (cd "$1" && go list -m -f '{{.Version}}' "$2"); }
		DP_CLIENT="bench/daprpeer: go-sdk $(dp_ver bench/daprpeer github.com/dapr/go-sdk) gRPC service and state client, fed by a daprd of its own ($(dp_ver tools/daprd github.com/dapr/dapr), pubsub.jetstream of components-contrib $(dp_ver tools/daprd github.com/dapr/components-contrib)): one durable push consumer per partition, single delivery"
		DP_STATUS="ok: $DP_CLIENT; without and with bulk subscribe"
	fi
fi
# dp_client MODE: the Dapr pub/sub peer of MODE, as the runs record it.
dp_client() {
	if [ "$1" = dapr-pubsub-bulk ]; then
		echo "$DP_CLIENT; bulk subscribe (daprd's emulation: up to 100 messages, 1 ms await)"
	else
		echo "$DP_CLIENT; no bulk subscribe"
	fi
}

# The consumers: workers (one per state client or transport) and the
# peers, each with a NATS server of its own.
CONSUMERS=(pooled per-request)
[ "$BENCH_TRANSPORTS" = 1 ] && CONSUMERS+=(worker-grpc worker-http)
[ -n "$WM_CLIENT" ] && CONSUMERS+=(watermill)
[ -n "$DP_CLIENT" ] && CONSUMERS+=(dapr-pubsub dapr-pubsub-bulk)
[ "$BENCH_TRACING" = 1 ] && CONSUMERS+=(traced)
if [ -z "$BENCH_BACKLOG_MODES" ]; then
	BENCH_BACKLOG_MODES=pooled
	for m in watermill dapr-pubsub dapr-pubsub-bulk; do
		[[ " ${CONSUMERS[*]} " == *" $m "* ]] && BENCH_BACKLOG_MODES+=" $m"
	done
fi
for m in $BENCH_BACKLOG_MODES; do
	[[ " ${CONSUMERS[*]} " == *" $m "* ]] || die "BENCH_BACKLOG_MODES: $m is not running in this benchmark"
done
is_dapr_peer() { [[ "$1" == dapr-pubsub || "$1" == dapr-pubsub-bulk ]]; }

# Ports: five of the stack's, two per consumer (NATS, readiness) and four
# more per Dapr pub/sub peer (its daprd's HTTP, gRPC and internal gRPC, its
# app's gRPC service).
NPORTS=$((5 + 2 * ${#CONSUMERS[@]}))
for m in "${CONSUMERS[@]}"; do is_dapr_peer "$m" && NPORTS=$((NPORTS + 4)); done
PORTS=$("$LOADGEN" free-ports -n "$NPORTS" | tr '\n' ' ')
read -r P_REDIS P_HTTP P_GRPC P_INT P_SINK REST <<<"$PORTS"
declare -A NATS_PORT=() HTTP_PORT=() DP_PORTS=()
for m in "${CONSUMERS[@]}"; do
	read -r NATS_PORT[$m] HTTP_PORT[$m] REST <<<"$REST"
	if is_dapr_peer "$m"; then
		read -r dh dg di da REST <<<"$REST"
		DP_PORTS[$m]="$dh $dg $di $da"
	fi
done

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
log "starting Redis, daprd and ${#CONSUMERS[@]} NATS servers ($NAME)"
drun redis "$REDIS_IMAGE" redis-server --save "" --appendonly no --bind 127.0.0.1 --port "$P_REDIS"
for m in "${CONSUMERS[@]}"; do
	drun "nats-$m" "$NATS_IMAGE" -js -sd /data -a 127.0.0.1 -p "${NATS_PORT[$m]}"
done
"$LOADGEN" wait -tcp "127.0.0.1:$P_REDIS" -timeout 30s
drun daprd -v "$WORK/components:/components:ro" "$DAPRD_IMAGE" ./daprd \
	--app-id cartworker --dapr-http-port "$P_HTTP" --dapr-grpc-port "$P_GRPC" \
	--dapr-listen-addresses 127.0.0.1 --dapr-internal-grpc-port "$P_INT" \
	--dapr-internal-grpc-listen-address 127.0.0.1 --enable-metrics=false \
	--resources-path /components --log-level warn
"$LOADGEN" wait -http "http://127.0.0.1:$P_HTTP/v1.0/healthz" -timeout 60s ||
	{ docker logs "$NAME-daprd" 2>&1 | tail -20 >&2; die "daprd did not become healthy"; }
for m in "${CONSUMERS[@]}"; do
	"$LOADGEN" wait -tcp "127.0.0.1:${NATS_PORT[$m]}" -timeout 30s
done

# Every consumer is started by a launcher script that execs it (so that its
# pid is the consumer's): here for the whole benchmark, and by
# `loadgen backlog` for each drain.
PPROF=false
[ "$BENCH_PROFILE" = 1 ] && PPROF=true
write_launcher() { # MODE
	local m=$1 f=$WORK/launch-$1.sh
	local -a cmd
	if [ "$m" = watermill ]; then
		cmd=("$BIN/watermillpeer" -nats "nats://127.0.0.1:${NATS_PORT[$m]}" -protocol "$BENCH_PEER_PROTOCOL"
			-dapr-http "http://127.0.0.1:$P_HTTP" -dapr-grpc "127.0.0.1:$P_GRPC" -http-addr "127.0.0.1:${HTTP_PORT[$m]}")
	elif is_dapr_peer "$m"; then
		local dh dg di da
		read -r dh dg di da <<<"${DP_PORTS[$m]}"
		# Its daprd gets the state store component of the shared one and
		# the pubsub.jetstream components the peer writes in -work-dir.
		cmd=("$BIN/daprpeer" -nats "nats://127.0.0.1:${NATS_PORT[$m]}" -daprd "$BIN/daprd" -resources "$WORK/components"
			-work-dir "$WORK/components-$m" -dapr-http-port "$dh" -dapr-grpc-port "$dg" -dapr-internal-grpc-port "$di"
			-app-port "$da" -http-addr "127.0.0.1:${HTTP_PORT[$m]}")
		[ "$m" = dapr-pubsub-bulk ] && cmd+=(-bulk)
	else
		# Every worker is told where both of daprd's APIs are, so that the
		# as-shipped one works whichever its default transport.
		# WORKER_STATE_PROTOCOL is ignored by a worker that predates it.
		cmd=(env -i "PATH=$PATH" "HOME=${HOME:-/root}" "NATS_URL=nats://127.0.0.1:${NATS_PORT[$m]}"
			"DAPR_HTTP_ENDPOINT=http://127.0.0.1:$P_HTTP" "DAPR_GRPC_ENDPOINT=127.0.0.1:$P_GRPC" "DAPR_GRPC_PORT=$P_GRPC"
			"WORKER_HTTP_ADDR=127.0.0.1:${HTTP_PORT[$m]}" "WORKER_PPROF=$PPROF" LOG_LEVEL=warn)
		case $m in
		pooled) cmd+=(WORKER_STATE_CLIENT=pooled) ;;
		per-request) cmd+=(WORKER_STATE_CLIENT=per-request WORKER_STATE_PROTOCOL=http) ;;
		worker-grpc) cmd+=(WORKER_STATE_CLIENT=pooled WORKER_STATE_PROTOCOL=grpc) ;;
		worker-http) cmd+=(WORKER_STATE_CLIENT=pooled WORKER_STATE_PROTOCOL=http) ;;
		traced) cmd+=(WORKER_STATE_CLIENT=pooled "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$P_SINK") ;;
		esac
		# shellcheck disable=SC2206 # checked above: VAR=value words
		cmd+=($BENCH_WORKER_ENV "$BIN/worker")
	fi
	{
		echo '#!/usr/bin/env bash'
		printf 'exec'
		printf ' %q' "${cmd[@]}"
		echo
	} >"$f"
	chmod +x "$f"
}
start_consumer() { # MODE: starts it in the background and waits until it is ready
	write_launcher "$1"
	"$WORK/launch-$1.sh" >>"$WORK/$1.log" 2>&1 &
	PID[$1]=$!
	"$LOADGEN" wait -http "http://127.0.0.1:${HTTP_PORT[$1]}/readyz" -timeout 60s || die "$1 not ready; see $WORK/$1.log"
}
stop_consumer() { # MODE
	local pid=${PID[$1]:-}
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "PID[$1]"
}
if [ "$BENCH_TRACING" = 1 ]; then
	# The traced worker's collector: it counts spans and keeps none. In
	# PID, so that it is checked and stopped with the consumers.
	"$LOADGEN" otlp-sink -addr "127.0.0.1:$P_SINK" >"$WORK/otlp-sink.log" 2>&1 &
	PID[otlp-sink]=$!
	"$LOADGEN" wait -tcp "127.0.0.1:$P_SINK" -timeout 30s || die "otlp-sink did not start; see $WORK/otlp-sink.log"
fi
log "starting ${CONSUMERS[*]}"
for m in "${CONSUMERS[@]}"; do start_consumer "$m"; done

# Every process of the stack, so that each run can say where the CPU went.
cpid() { docker inspect -f '{{.State.Pid}}' "$NAME-$1"; }
WATCH=(-watch "daprd=$(cpid daprd)" -watch "redis=$(cpid redis)")
BACKLOG_WATCH=("${WATCH[@]}")
for m in "${CONSUMERS[@]}"; do
	name=worker-$m
	case $m in worker-* | watermill | dapr-pubsub*) name=$m ;; esac
	WATCH+=(-watch "$name=${PID[$m]}" -watch "nats-$m=$(cpid "nats-$m")")
	BACKLOG_WATCH+=(-watch "nats-$m=$(cpid "nats-$m")")
	# A Dapr pub/sub peer's daprd is its one child.
	is_dapr_peer "$m" && WATCH+=(-watch "daprd-$m=$(pgrep -P "${PID[$m]}" | head -n 1)")
done
[ -n "${PID[otlp-sink]:-}" ] && WATCH+=(-watch "otlp-sink=${PID[otlp-sink]}")

stopped_by_signal() { # RC: 130/143 means the run was interrupted (Ctrl-C, SIGTERM): stop here.
	# bash itself would carry on, since the child handled the signal.
	if [ "$1" -eq 130 ] || [ "$1" -eq 143 ]; then
		log "interrupted"
		exit 130
	fi
}

# The idle cost, before the first command of the run: the pooled worker and
# its NATS server (a container on the host network: cpid is its host pid).
# The other consumers are idle too, each with a NATS server of its own.
# loadgen idle's own defaults set the settle, the windows and the rounds;
# its timeout is a bound well past them. Without the file the report shows
# the idle figures as not measured.
IDLE=$WORK/idle.json
if [ "$BENCH_IDLE" = 1 ]; then
	log "idle: the pooled worker and its NATS server with no commands sent"
	rc=0
	timeout --foreground -k 5 300 "$LOADGEN" idle -watch "worker=${PID[pooled]}" -watch "nats=$(cpid nats-pooled)" -out "$IDLE" || rc=$?
	stopped_by_signal "$rc"
	[ "$rc" -eq 0 ] || log "warning: loadgen idle failed (exit $rc); the idle figures will be missing"
fi

DOCS=$WORK/docs.json
if [ "$BENCH_CLOSED" = 0 ]; then
	: # no ceiling runs, no documents to capture
elif ! "$LOADGEN" capture -nats "nats://127.0.0.1:${NATS_PORT[pooled]}" -dapr "http://127.0.0.1:$P_HTTP" -out "$DOCS" -timeout 60s; then
	log "warning: could not capture the worker's documents; the ceiling and the peer use synthetic ones"
	"$LOADGEN" capture -synthetic -out "$DOCS"
fi

# Plan and time estimate. The paced points also run the ceiling: at that
# light load the bare state calls' own tail is what the worker's p99 is
# measured against.
read -r -a USERS <<<"$BENCH_USERS"
read -r -a PACED_USERS <<<"$BENCH_PACED_USERS"
read -r -a BACKLOGS <<<"$BENCH_BACKLOG"
read -r -a BACKLOG_MODES <<<"$BENCH_BACKLOG_MODES"
if [ "$BENCH_CLOSED" = 0 ]; then
	USERS=()
	PACED_USERS=()
fi
PACED_MODES=(pooled per-request ceiling)
# Every consumer but traced, which runs only in the tracing rounds.
ALL_MODES=()
for m in "${CONSUMERS[@]}"; do [ "$m" = traced ] || ALL_MODES+=("$m"); done
ALL_MODES+=(ceiling)
if [ -n "$SDK_VERSION" ]; then ALL_MODES+=(go-sdk); fi
declare -A PACED_MS=()
PACED_S=0
for u in "${PACED_USERS[@]}"; do
	PACED_MS[$u]=$(paced_round_ms "$u")
	PACED_S=$((PACED_S + (PACED_MS[$u] + WARM_MS) * BENCH_ROUNDS * ${#PACED_MODES[@]} / 1000))
done
NCLOSED=$((((${#USERS[@]} + BENCH_CLOSED) * ${#ALL_MODES[@]}) * BENCH_ROUNDS))
NPACED=$((${#PACED_USERS[@]} * ${#PACED_MODES[@]} * BENCH_ROUNDS))
NDRAINS=$((${#BACKLOGS[@]} * ${#BACKLOG_MODES[@]} * BENCH_BACKLOG_ROUNDS))
NTRACE=0
[ "$BENCH_TRACING" = 1 ] && NTRACE=$((2 * BENCH_ROUNDS))
NCLOSED=$((NCLOSED + NTRACE))
EST=$((PACED_S + NCLOSED * (WARM_MS + ROUND_MS) / 1000 + (NPACED + NCLOSED) * 7 / 10 + NDRAINS * 35 + NTRACE * 3 + BENCH_IDLE * 75))
log "$NPACED paced runs (windows: $(for u in "${PACED_USERS[@]}"; do printf '%su %sms ' "$u" "${PACED_MS[$u]}"; done)), $NCLOSED closed-loop runs of ${BENCH_WARMUP} warm-up + $ROUND_DUR, $NDRAINS backlog drains; about $((EST / 60))m$((EST % 60))s (raw data: $WORK)"

SEQ=0
FAILED=0
alive() { # every long-lived consumer is still running
	local m
	for m in "${!PID[@]}"; do
		kill -0 "${PID[$m]}" 2>/dev/null || die "the $m consumer died; see $WORK/$m.log"
	done
}
run_point() { # MODE SCENARIO USERS ROUND [sat]
	local mode=$1 sc=$2 users=$3 round=$4 sat=${5:-} out rc=0 window=$ROUND_MS limit
	SEQ=$((SEQ + 1))
	[ "$sc" = paced ] && window=${PACED_MS[$users]}
	# A run's hard bound: warm-up + window + two command timeouts + margin.
	limit=$(((WARM_MS + window + 2 * TIMEOUT_MS) / 1000 + 30))
	out=$(printf '%s/%03d-%s-%s-%du-r%d.json' "${RUN_DIR:-$RAW}" "$SEQ" "$mode" "$sc" "$users" "$round")
	local args=(-scenario "$sc" -users "$users" -warmup "$BENCH_WARMUP" -duration "${window}ms"
		-think "$BENCH_THINK" -timeout "$BENCH_TIMEOUT" -round "$round" -out "$out" "${WATCH[@]}")
	[ -n "$sat" ] && args+=(-saturation)
	# The spans the traced worker exported in the run (and its tail).
	[ "$mode" = traced ] && args+=(-spans "http://127.0.0.1:$P_SINK/count")
	case $mode in
	ceiling)
		timeout --foreground -k 5 "$limit" "$LOADGEN" ceiling -dapr "http://127.0.0.1:$P_HTTP" -docs "$DOCS" "${args[@]}" || rc=$?
		;;
	go-sdk)
		timeout --foreground -k 5 "$limit" "$BIN/sdkpeer" -grpc "127.0.0.1:$P_GRPC" -docs "$DOCS" "${args[@]}" || rc=$?
		;;
	watermill)
		timeout --foreground -k 5 "$limit" "$LOADGEN" run -mode watermill -nats "nats://127.0.0.1:${NATS_PORT[$mode]}" \
			-client "publisher.PublishAndWait over NATS JetStream; $WM_CLIENT" -worker-pid "${PID[$mode]}" "${args[@]}" || rc=$?
		;;
	dapr-pubsub | dapr-pubsub-bulk)
		timeout --foreground -k 5 "$limit" "$LOADGEN" run -mode "$mode" -nats "nats://127.0.0.1:${NATS_PORT[$mode]}" \
			-client "publisher.PublishAndWait over NATS JetStream; $(dp_client "$mode")" -worker-pid "${PID[$mode]}" "${args[@]}" || rc=$?
		;;
	*)
		timeout --foreground -k 5 "$limit" "$LOADGEN" run -mode "$mode" -nats "nats://127.0.0.1:${NATS_PORT[$mode]}" \
			-worker-metrics "http://127.0.0.1:${HTTP_PORT[$mode]}/metrics" -worker-pid "${PID[$mode]}" "${args[@]}" || rc=$?
		;;
	esac
	stopped_by_signal "$rc"
	if [ "$rc" -ne 0 ]; then
		log "warning: $mode $sc ${users}u round $round failed (exit $rc)"
		FAILED=$((FAILED + 1))
		rm -f "$out"
	fi
	alive
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
	us=("${PACED_USERS[@]}")
	if [ "$sc" = closed-loop ]; then
		modes=("${ALL_MODES[@]}")
		us=("${USERS[@]}")
	fi
	for users in "${us[@]}"; do
		for ((round = 1; round <= BENCH_ROUNDS; round++)); do
			run_modes "$sc" "$users" "$round" $((idx + round - 1)) "" "${modes[@]}"
		done
		idx=$((idx + 1))
	done
done
for ((round = 1; round <= BENCH_ROUNDS * BENCH_CLOSED; round++)); do
	if [ "$BENCH_PROFILE" = 1 ] && [ "$round" = 1 ]; then
		# Profile the pooled worker over its saturation window.
		# (whole seconds: a longer BENCH_DURATION gives a better profile).
		(sleep "$(awk -v m="$WARM_MS" 'BEGIN { printf "%.1f", m / 1000 + 0.2 }')" && "$LOADGEN" fetch -timeout 120s \
			-url "http://127.0.0.1:${HTTP_PORT[pooled]}/debug/pprof/profile?seconds=$((ROUND_MS / 1000 > 1 ? ROUND_MS / 1000 : 1))" \
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

# Tracing cost: the pooled worker at saturation with its span export off (as
# shipped) and on (traced), alternating, into a directory of their own so
# that the points above are left as they are.
RAW_TR=$WORK/raw-tracing
mkdir -p "$RAW_TR"
if [ "$BENCH_TRACING" = 1 ]; then
	RUN_DIR=$RAW_TR
	for ((round = 1; round <= BENCH_ROUNDS; round++)); do
		run_modes closed-loop "$BENCH_SAT_USERS" "$round" $((round - 1)) sat pooled traced
	done
	RUN_DIR=
fi

# Connections each consumer holds to daprd's HTTP and gRPC ports now: what
# the workers opened, and which transport each really used.
conns_to() { # PID PORT
	ss -Htnp state established "( dport = :$2 )" 2>/dev/null | grep -c "pid=$1," || true
}
declare -A OPEN_HTTP=() OPEN_GRPC=()
for m in "${CONSUMERS[@]}"; do
	if is_dapr_peer "$m"; then
		# A Dapr pub/sub peer talks to its own daprd.
		read -r dh dg _ _ <<<"${DP_PORTS[$m]}"
		OPEN_HTTP[$m]=$(conns_to "${PID[$m]}" "$dh")
		OPEN_GRPC[$m]="$(conns_to "${PID[$m]}" "$dg") (its own daprd)"
	else
		OPEN_HTTP[$m]=$(conns_to "${PID[$m]}" "$P_HTTP")
		OPEN_GRPC[$m]=$(conns_to "${PID[$m]}" "$P_GRPC")
	fi
done

# Backlog drains: each consumer of BENCH_BACKLOG_MODES is stopped for good;
# `loadgen backlog` publishes a backlog, starts a fresh one from its
# launcher, times the drain, stops it and checks every cart.
RAW_BL=$WORK/raw-backlog
mkdir -p "$RAW_BL"
BACKLOG_FAILED=0
BL_LIMIT_S=$((BACKLOG_TIMEOUT_MS / 1000 + 120))
run_backlog() { # MODE SCENARIO ROUND
	local mode=$1 sc=$2 round=$3 out rc=0
	SEQ=$((SEQ + 1))
	out=$(printf '%s/%03d-%s-%s-r%d.json' "$RAW_BL" "$SEQ" "$mode" "$sc" "$round")
	local args=(-mode "$mode" -scenario "$sc" -round "$round" -nats "nats://127.0.0.1:${NATS_PORT[$mode]}"
		-dapr "http://127.0.0.1:$P_HTTP" -launch "$WORK/launch-$mode.sh" -launch-log "$WORK/backlog-$mode-$sc-r$round.log"
		-ready "http://127.0.0.1:${HTTP_PORT[$mode]}/readyz" -timeout "$BENCH_BACKLOG_TIMEOUT" -out "$out" "${BACKLOG_WATCH[@]}")
	if [ "$mode" = watermill ]; then
		args+=(-client "$WM_CLIENT")
	elif is_dapr_peer "$mode"; then
		args+=(-client "$(dp_client "$mode")")
	else
		args+=(-metrics "http://127.0.0.1:${HTTP_PORT[$mode]}/metrics" -client "cartworker ($mode)")
		[ "$BENCH_PROFILE" = 1 ] && [ "$round" = 1 ] &&
			args+=(-heap-url "http://127.0.0.1:${HTTP_PORT[$mode]}/debug/pprof/heap" -heap-profile "$WORK/heap-$mode-$sc.pprof")
	fi
	timeout --foreground -k 40 "$BL_LIMIT_S" "$LOADGEN" backlog "${args[@]}" || rc=$?
	stopped_by_signal "$rc"
	if [ "$rc" -ne 0 ]; then
		BACKLOG_FAILED=$((BACKLOG_FAILED + 1))
		if [ -s "$out" ]; then
			log "ERROR: BACKLOG $mode $sc round $round FAILED (exit $rc): wrong totals or an unfinished drain; kept in the report"
		else
			log "ERROR: BACKLOG $mode $sc round $round FAILED (exit $rc) before it could be measured; see the log above"
		fi
	fi
}
if [ "${#BACKLOGS[@]}" -gt 0 ]; then
	for m in "${BACKLOG_MODES[@]}"; do stop_consumer "$m"; done
	for ((round = 1; round <= BENCH_BACKLOG_ROUNDS; round++)); do
		for sc in "${BACKLOGS[@]}"; do
			n=${#BACKLOG_MODES[@]}
			for ((i = 0; i < n; i++)); do
				run_backlog "${BACKLOG_MODES[$(((i + round - 1) % n))]}" "$sc" "$round"
			done
		done
	done
fi

if [ "$BENCH_CLOSED" = 0 ]; then
	# The drains alone: their peak RSS against the budget, and the top of
	# each heap profile, instead of the report.
	for f in "$WORK"/heap-*.pprof; do
		[ -s "$f" ] || continue
		log "heap in use at the largest RSS, $(basename "$f" .pprof):"
		go tool pprof -sample_index=inuse_space -top -nodecount=12 "$BIN/worker" "$f" 2>/dev/null | sed -n '/^Showing\|flat%/,$p' >&2 || true
	done
	rc=0
	"$LOADGEN" memory -backlog "$RAW_BL" -budget-mib "$BENCH_MEMORY_MIB" || rc=$?
	[ "$BACKLOG_FAILED" -gt 0 ] && log "ERROR: $BACKLOG_FAILED backlog drain(s) FAILED" && rc=3
	log "done in $((SECONDS - START))s (raw data: $WORK)"
	exit "$rc"
fi

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
	printf -- "- TCP connections to daprd still open after the closed-loop runs (HTTP port / gRPC port), which also shows the transport each consumer really used:"
	for m in "${CONSUMERS[@]}"; do printf ' %s %s / %s;' "$m" "${OPEN_HTTP[$m]}" "${OPEN_GRPC[$m]}"; done
	echo " a worker that predates WORKER_STATE_PROTOCOL ignores it and uses its default."
	[ "$FAILED" -gt 0 ] && echo "- **$FAILED run(s) failed** and are missing from the tables; see the bench log."
	[ "$BACKLOG_FAILED" -gt 0 ] && echo "- **$BACKLOG_FAILED backlog drain(s) FAILED** (wrong totals, rejected commands or an unfinished drain); see the backlog table and the bench log."
	if [ -s "$WORK/pooled-saturation-cpu.pprof" ]; then
		go tool pprof -top -nodecount=25 "$BIN/worker" "$WORK/pooled-saturation-cpu.pprof" >"$WORK/pooled-saturation-cpu.top" 2>/dev/null || true
		echo "- CPU profile of the pooled worker at saturation: \`bench/.work/$NAME/pooled-saturation-cpu.pprof\` (top functions in \`pooled-saturation-cpu.top\`)."
	fi
	true
} >"$NOTES"

SETTINGS="BENCH_DURATION=$BENCH_DURATION BENCH_WARMUP=$BENCH_WARMUP BENCH_ROUNDS=$BENCH_ROUNDS BENCH_THINK=$BENCH_THINK BENCH_USERS='$BENCH_USERS' BENCH_PACED_USERS='$BENCH_PACED_USERS' BENCH_PACED_SAMPLES=$BENCH_PACED_SAMPLES BENCH_SAT_USERS=$BENCH_SAT_USERS BENCH_TIMEOUT=$BENCH_TIMEOUT BENCH_PEER_PROTOCOL=$BENCH_PEER_PROTOCOL BENCH_DAPR_PUBSUB=$BENCH_DAPR_PUBSUB BENCH_BACKLOG='$BENCH_BACKLOG' BENCH_BACKLOG_MODES='$BENCH_BACKLOG_MODES' BENCH_BACKLOG_ROUNDS=$BENCH_BACKLOG_ROUNDS BENCH_TRACING=$BENCH_TRACING BENCH_IDLE=$BENCH_IDLE"
TOPOLOGY="one host, loopback only: Redis, daprd and one NATS server per consumer (${CONSUMERS[*]}) in containers on the host network (no docker-proxy between worker and daprd, as in a pod); the workers, the Watermill peer, the Dapr pub/sub peers with their own daprd each (same Redis), the load generator and the go-sdk peer as host processes; all share the machine's cores."
"$LOADGEN" report -raw "$RAW" -backlog "$RAW_BL" -tracing "$RAW_TR" -idle "$IDLE" -docs "$DOCS" -out "$BENCH_OUT" -peer "$PEER_STATUS" \
	-watermill "$WM_STATUS" -watermill-protocol "$BENCH_PEER_PROTOCOL" -dapr-pubsub "$DP_STATUS" -paced-samples "$BENCH_PACED_SAMPLES" \
	-settings "$SETTINGS" -topology "$TOPOLOGY" -notes "$NOTES" \
	-version "cartworker=$GIT_VER" -version "nats-server=${NATS_VER:-unknown} ($NATS_IMAGE)" \
	-version "daprd=${DAPR_VER:-unknown} ($DAPRD_IMAGE, state.redis)" -version "redis=${REDIS_VER:-unknown} ($REDIS_IMAGE)" \
	-version "docker=${DOCKER_VER:-unknown}"
log "done in $((SECONDS - START))s: $BENCH_OUT/REPORT.md"
if [ "$BACKLOG_FAILED" -gt 0 ]; then
	log "ERROR: $BACKLOG_FAILED backlog drain(s) FAILED (see REPORT.md, 'Backlog drain')"
	exit 3
fi
