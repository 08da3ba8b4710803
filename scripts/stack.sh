#!/usr/bin/env bash
# The whole cartworker stack on this machine, as containers from the local
# images: NATS (JetStream), Redis, daprd (state store "cartstore" on Redis)
# and the worker. It mirrors deployments/compose.yaml with plain `docker run`,
# because Docker Compose is not part of Debian's docker.io.
#
#   scripts/stack.sh up      build missing images, start everything, wait until ready
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

# start NAME DOCKER_RUN_ARGS...: (re)create the container unless it already runs.
start() {
	local name=$1
	shift
	if [ "$(docker inspect -f '{{.State.Running}}' "$P$name" 2>/dev/null)" = "true" ]; then
		log "$name already running"
		return
	fi
	docker rm -f "$P$name" >/dev/null 2>&1 || true
	docker run -d --name "$P$name" --network "$NET" --network-alias "$name" \
		--restart unless-stopped "$@" >/dev/null
	log "$name started"
}

up() {
	command -v curl >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y curl; }
	"$ROOT/scripts/ensure-docker.sh"
	"$ROOT/scripts/build-images.sh"
	docker network inspect "$NET" >/dev/null 2>&1 || docker network create "$NET" >/dev/null

	start nats -p "127.0.0.1:$NATS_PORT:4222" -p "127.0.0.1:$NATS_MONITOR_PORT:8222" \
		"$NATS_IMAGE" -js -sd /data -m 8222
	start redis "$REDIS_IMAGE" redis-server --save "" --appendonly no
	# daprd runs as uid 65532: it reads the components through a world-readable copy.
	local comp
	comp=${CARTWORKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cartworker}/components
	mkdir -p "$comp"
	cp "$ROOT"/deployments/dapr/components/*.yaml "$comp/"
	chmod 755 "$comp" && chmod 644 "$comp"/*.yaml
	start daprd -p "127.0.0.1:$DAPR_PORT:3500" -e "DAPR_API_TOKEN=${DAPR_API_TOKEN:-}" \
		-v "$comp:/components:ro" "$DAPRD_IMAGE" \
		./daprd --app-id cartworker --dapr-http-port 3500 --dapr-grpc-port 50001 \
		--resources-path /components --log-level warn
	wait_http nats "http://127.0.0.1:$NATS_MONITOR_PORT/healthz?js-enabled-only=true" 30
	wait_http daprd "http://127.0.0.1:$DAPR_PORT/v1.0/healthz" 60
	start worker -p "127.0.0.1:$WORKER_PORT:8080" \
		-e NATS_URL=nats://nats:4222 -e DAPR_HTTP_ENDPOINT=http://daprd:3500 \
		-e DAPR_GRPC_ENDPOINT=http://daprd:50001 -e "WORKER_STATE_PROTOCOL=${WORKER_STATE_PROTOCOL:-grpc}" \
		-e "DAPR_API_TOKEN=${DAPR_API_TOKEN:-}" -e WORKER_HTTP_ADDR=:8080 \
		--stop-timeout 30 "$WORKER_IMAGE"
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
