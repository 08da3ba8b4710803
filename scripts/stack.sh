#!/usr/bin/env bash
# The whole cartworker stack on this machine, as containers from the local
# images: NATS (JetStream), Redis, daprd (state store "cartstore" on Redis)
# and the worker. It mirrors deployments/compose.yaml with plain `docker run`,
# because Docker Compose is not part of Debian's docker.io.
#
#   scripts/stack.sh up      build the images (the worker's always), start what is
#                            not running or runs an older image or other
#                            settings, wait until ready
#   scripts/stack.sh down    remove the containers and the network
#   scripts/stack.sh logs    follow the worker's logs
#   scripts/stack.sh status  show the containers
#
# Images default to deployments/images.env; override any of them with
# NATS_IMAGE, REDIS_IMAGE, DAPRD_IMAGE and WORKER_IMAGE.
# Host ports (loopback only) can be changed with NATS_PORT (4222),
# NATS_MONITOR_PORT (8222), DAPR_PORT (3500) and WORKER_PORT (8080).
# DAPR_API_TOKEN, when set, is enforced by daprd and sent by the worker.
# WORKER_STATE_PROTOCOL=grpc makes the worker call daprd's gRPC API
# (daprd:50001 on the stack's network) instead of its HTTP API.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=images.sh
. "$ROOT/scripts/images.sh"
NATS_PORT=${NATS_PORT:-4222}
NATS_MONITOR_PORT=${NATS_MONITOR_PORT:-8222}
DAPR_PORT=${DAPR_PORT:-3500}
WORKER_PORT=${WORKER_PORT:-8080}
NET=cartworker
P=cartworker-
SPEC_LABEL=cartworker.stack.spec

log() { echo "stack: $*" >&2; }

# wait_http NAME URL SECONDS: poll until URL answers 2xx.
wait_http() {
	local name=$1 url=$2 deadline=$((SECONDS + $3))
	until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "$name did not become ready at $url; its last logs:"
			docker logs --tail 30 "$P$name" >&2 || true
			exit 1
		fi
		sleep 0.5
	done
}

# start NAME IMAGE [DOCKER_RUN_OPTIONS...] [-- COMMAND...]: make container
# NAME run IMAGE as asked. A running container is kept only when it runs
# the image IMAGE names now (its ID: build-images.sh rebuilds the worker
# image after every code change) with the same options and command; any
# other is replaced, so `make run` after a change never leaves the old
# worker running. The ID and arguments are kept, hashed, in a label.
start() {
	local name=$1 image=$2
	shift 2
	local opts=() cmd=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		opts+=("$1")
		shift
	done
	if [ $# -gt 0 ]; then
		shift
		cmd=("$@")
	fi
	local id spec running have
	id=$(docker image inspect -f '{{.Id}}' "$image") || {
		log "image $image is missing (scripts/build-images.sh builds it)"
		exit 1
	}
	spec=$(printf '%s\0' "$id" "${opts[@]}" -- "${cmd[@]}" | sha256sum | cut -c1-32)
	running=$(docker container inspect -f '{{.State.Running}}' "$P$name" 2>/dev/null || true)
	if [ "$running" = true ]; then
		have=$(docker container inspect -f '{{index .Config.Labels "'"$SPEC_LABEL"'"}}' "$P$name" 2>/dev/null || true)
		if [ "$have" = "$spec" ]; then
			log "$name already running"
			return
		fi
		log "$name runs another image or settings: replacing it"
		# A graceful stop first: the worker drains its in-flight commands.
		docker stop -t 30 "$P$name" >/dev/null 2>&1 || true
	fi
	if [ -n "$running" ]; then
		docker rm -f "$P$name" >/dev/null 2>&1 || true
	fi
	docker run -d --name "$P$name" --network "$NET" --network-alias "$name" \
		--restart unless-stopped --label "$SPEC_LABEL=$spec" "${opts[@]}" "$image" "${cmd[@]}" >/dev/null
	log "$name started"
}

up() {
	command -v curl >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y curl; }
	"$ROOT/scripts/ensure-docker.sh"
	"$ROOT/scripts/build-images.sh"
	docker network inspect "$NET" >/dev/null 2>&1 || docker network create "$NET" >/dev/null

	start nats "$NATS_IMAGE" -p "127.0.0.1:$NATS_PORT:4222" -p "127.0.0.1:$NATS_MONITOR_PORT:8222" \
		-- -js -sd /data -m 8222
	start redis "$REDIS_IMAGE" -- redis-server --save "" --appendonly no
	# daprd runs as uid 65532: it reads the components through a world-readable copy.
	local comp
	comp=${CARTWORKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cartworker}/components
	mkdir -p "$comp"
	cp "$ROOT"/deployments/dapr/components/*.yaml "$comp/"
	chmod 755 "$comp" && chmod 644 "$comp"/*.yaml
	# The tracing Configuration: daprd continues the trace each state call
	# carries (and exports it once a collector is named in it).
	local conf=${comp%/components}/config
	mkdir -p "$conf"
	cp "$ROOT/deployments/dapr/config.yaml" "$conf/"
	chmod 755 "$conf" && chmod 644 "$conf/config.yaml"
	# daprd reads its components only when it starts: a label with their
	# hash makes an edited component replace it.
	local comp_sum
	comp_sum=$(cat "$comp"/*.yaml "$conf/config.yaml" | sha256sum | cut -c1-16)
	start daprd "$DAPRD_IMAGE" -p "127.0.0.1:$DAPR_PORT:3500" -e "DAPR_API_TOKEN=${DAPR_API_TOKEN:-}" \
		-v "$comp:/components:ro" -v "$conf:/config:ro" --label "cartworker.stack.components=$comp_sum" \
		-- ./daprd --app-id cartworker --dapr-http-port 3500 --dapr-grpc-port 50001 \
		--resources-path /components --config /config/config.yaml --log-level warn
	wait_http nats "http://127.0.0.1:$NATS_MONITOR_PORT/healthz?js-enabled-only=true" 30
	wait_http daprd "http://127.0.0.1:$DAPR_PORT/v1.0/healthz" 60
	start worker "$WORKER_IMAGE" -p "127.0.0.1:$WORKER_PORT:8080" \
		-e NATS_URL=nats://nats:4222 -e DAPR_HTTP_ENDPOINT=http://daprd:3500 \
		-e DAPR_GRPC_ENDPOINT=http://daprd:50001 -e "WORKER_STATE_PROTOCOL=${WORKER_STATE_PROTOCOL:-grpc}" \
		-e "DAPR_API_TOKEN=${DAPR_API_TOKEN:-}" -e WORKER_HTTP_ADDR=:8080 \
		-e "OTEL_EXPORTER_OTLP_ENDPOINT=${OTEL_EXPORTER_OTLP_ENDPOINT:-}" \
		-e "OTEL_EXPORTER_OTLP_PROTOCOL=${OTEL_EXPORTER_OTLP_PROTOCOL:-}" \
		--stop-timeout 30
	wait_http worker "http://127.0.0.1:$WORKER_PORT/readyz" 60

	cat <<MSG

cartworker is running.
  NATS        nats://127.0.0.1:$NATS_PORT   (monitoring http://127.0.0.1:$NATS_MONITOR_PORT)
  Dapr        http://127.0.0.1:$DAPR_PORT/v1.0/state/cartstore/<cart_id>
  health      http://127.0.0.1:$WORKER_PORT/healthz   http://127.0.0.1:$WORKER_PORT/readyz
  metrics     http://127.0.0.1:$WORKER_PORT/metrics

Try:  make demo      (publishes a cart's commands and prints the cart read back through Dapr)
      make logs      (follow the worker)      make stop   (remove the stack)
MSG
}

down() {
	for name in worker daprd redis nats; do
		docker rm -f "$P$name" >/dev/null 2>&1 && log "$name removed" || true
	done
	docker network rm "$NET" >/dev/null 2>&1 || true
}

main() {
	case "${1:-}" in
	up) up ;;
	down) down ;;
	logs) docker logs -f "${P}worker" ;;
	status) docker ps -a --filter "name=$P" ;;
	*)
		echo "usage: $0 up|down|logs|status" >&2
		exit 2
		;;
	esac
}

# Sourced (by deployments/stack_test.go, to test start), it only defines.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
