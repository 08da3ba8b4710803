#!/usr/bin/env bash
# Build the four container images FROM scratch, with no registry access.
#
#   scripts/build-images.sh            # build what is missing (+ worker)
#   FORCE=1 scripts/build-images.sh    # rebuild everything
#   scripts/build-images.sh --daprd-binary   # print the path of the daprd
#                                      # binary the image holds (built if
#                                      # missing), and build no image
#
# Images (override by env; the defaults, in deployments/images.env, are the
# official names, so a machine with a registry can `docker pull` them
# instead):
#   NATS_IMAGE    nats-server from the main go.mod
#   REDIS_IMAGE   Debian's redis-server + its libs
#   DAPRD_IMAGE   daprd from tools/daprd (dapr's + pubsub.jetstream)
#   WORKER_IMAGE  ./cmd/worker (always rebuilt)
#
# An image that already exists is skipped unless FORCE=1. Built binaries are
# cached in ${CARTWORKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cartworker}/bin
# (daprd-<version>-<hash of tools/daprd>, nats-server-<version>) so that
# rebuilding the images after `docker system prune` takes seconds. The first
# daprd build takes minutes and fills ~5 GB of Go module cache.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGES_DIR=$ROOT/deployments/images

# shellcheck source=images.sh
. "$ROOT/scripts/images.sh"
FORCE=${FORCE:-0}
CACHE_DIR=${CARTWORKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cartworker}
BIN_DIR=$CACHE_DIR/bin

# The docker.io client may lack buildx; the classic builder is enough for
# COPY-only Dockerfiles and works with every client/daemon pair.
export DOCKER_BUILDKIT=0
export CGO_ENABLED=0

log() { echo "build-images: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
APT_UPDATED=
apt_install() {
	if [ -z "$APT_UPDATED" ]; then
		"${SUDO[@]}" apt-get update
		APT_UPDATED=1
	fi
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

command -v go >/dev/null 2>&1 || die "go is not on PATH"
"$ROOT/scripts/ensure-docker.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cartworker-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# base_rootfs DIR: what every image gets: /tmp, CA bundle, passwd, group and
# nsswitch.conf (as in distroless/static, which the official daprd uses).
base_rootfs() {
	local r=$1
	mkdir -p "$r/tmp" "$r/etc/ssl/certs"
	chmod 1777 "$r/tmp"
	if [ ! -s "$CA_BUNDLE" ]; then apt_install ca-certificates; fi
	cp "$CA_BUNDLE" "$r/etc/ssl/certs/ca-certificates.crt"
	# Same accounts as distroless (what the official daprd image uses).
	cat >"$r/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
	cat >"$r/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
	# Go's resolver otherwise tries DNS before /etc/hosts.
	echo 'hosts: files dns' >"$r/etc/nsswitch.conf"
	chmod 644 "$r/etc/passwd" "$r/etc/group" "$r/etc/nsswitch.conf"
}

# new_context NAME: a fresh build context holding deployments/images/NAME/*
# and a base rootfs/; prints its path.
new_context() {
	local ctx=$WORK/$1
	mkdir -p "$ctx"
	cp -a "$IMAGES_DIR/$1/." "$ctx/"
	base_rootfs "$ctx/rootfs"
	echo "$ctx"
}

# copy_with_libs ROOTFS SRC DEST: copy binary SRC to ROOTFS/DEST plus every
# shared library ldd reports and the dynamic loader, at their host paths.
copy_with_libs() {
	local r=$1 src=$2 dest=$3 lib
	mkdir -p "$r/$(dirname "$dest")"
	cp -L "$src" "$r/$dest"
	while read -r lib; do
		[ -n "$lib" ] || continue
		mkdir -p "$r/$(dirname "$lib")"
		cp -L "$lib" "$r/$lib"
	done < <(ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}

# docker_build IMAGE CONTEXT: build quietly, show the log on failure.
docker_build() {
	local image=$1 ctx=$2
	if ! docker build --label "org.opencontainers.image.source=cartworker scripts/build-images.sh" \
		-t "$image" "$ctx" >"$ctx.log" 2>&1; then
		cat "$ctx.log" >&2
		die "docker build of $image failed"
	fi
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# module_version DIR MODULE: the version of MODULE selected in DIR's go.mod.
module_version() {
	(cd "$1" && go list -m -f '{{.Version}}' "$2")
}

# cached_go_build NAME VERSION DIR PKG [build flags...]: build PKG from
# module DIR into $BIN_DIR/NAME-VERSION unless it is already there; prints
# the path.
cached_go_build() {
	local name=$1 version=$2 dir=$3 pkg=$4
	shift 4
	local out=$BIN_DIR/$name-$version
	if [ ! -x "$out" ] || [ "$FORCE" = 1 ]; then
		mkdir -p "$BIN_DIR"
		log "compiling $name $version (cached as $out)"
		(cd "$dir" && go build "$@" -o "$out.tmp.$$" "$pkg")
		mv -f "$out.tmp.$$" "$out"
	fi
	echo "$out"
}

build_nats() {
	local version bin ctx
	version=$(module_version "$ROOT" github.com/nats-io/nats-server/v2) ||
		die "the main go.mod must require github.com/nats-io/nats-server/v2"
	bin=$(cached_go_build nats-server "$version" "$ROOT" github.com/nats-io/nats-server/v2 \
		-ldflags "-s -w")
	ctx=$(new_context nats)
	mkdir -p "$ctx/rootfs/data"
	cp "$bin" "$ctx/nats-server"
	docker_build "$NATS_IMAGE" "$ctx"
}

build_redis() {
	local ctx r
	if [ ! -x /usr/bin/redis-server ] || [ ! -x /usr/bin/redis-cli ]; then
		log "installing redis-server with apt-get"
		apt_install redis-server
	fi
	ctx=$(new_context redis)
	r=$ctx/rootfs
	# /usr/bin/redis-server is a symlink to redis-check-rdb; redis picks its
	# mode from argv[0], so the copy must be named redis-server.
	copy_with_libs "$r" /usr/bin/redis-server /usr/local/bin/redis-server
	copy_with_libs "$r" /usr/bin/redis-cli /usr/local/bin/redis-cli
	# /bin/sh runs docker-entrypoint.sh; dash only needs libc.
	copy_with_libs "$r" "$(readlink -f /bin/sh)" /bin/sh
	mkdir -p "$r/data"
	docker_build "$REDIS_IMAGE" "$ctx"
}

# daprd_binary: tools/daprd's main package, which is dapr's cmd/daprd plus
# pubsub.jetstream (for the bench's Dapr pub/sub peer), compiled or taken
# from the cache; prints its path. The cache key holds a hash of that
# module's sources (go.mod, go.sum and every Go file) besides dapr's
# version, so that a binary cached before a change to them is not reused.
daprd_binary() {
	local dir=$ROOT/tools/daprd version src
	version=$(module_version "$dir" github.com/dapr/dapr)
	local v=${version#v}
	src=$(cd "$dir" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)
	cached_go_build daprd "$version-$src" "$dir" . \
		-tags stablecomponents \
		-ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$v -X github.com/dapr/kit/logger.DaprVersion=$v"
}

build_daprd() {
	local bin ctx
	bin=$(daprd_binary)
	ctx=$(new_context daprd)
	mkdir -p "$ctx/home"
	chmod 700 "$ctx/home"
	cp "$bin" "$ctx/daprd"
	docker_build "$DAPRD_IMAGE" "$ctx"
}

build_worker() {
	local ctx
	ctx=$(new_context worker)
	log "compiling ./cmd/worker"
	(cd "$ROOT" && go build -buildvcs=auto -o "$ctx/worker" ./cmd/worker)
	docker_build "$WORKER_IMAGE" "$ctx"
}

# run_step NAME IMAGE ALWAYS: build IMAGE with build_NAME unless present.
run_step() {
	local name=$1 image=$2 always=$3 start=$SECONDS
	if [ "$always" != 1 ] && [ "$FORCE" != 1 ] && image_exists "$image"; then
		printf '%-7s %-28s skipped %3ds\n' "$name" "$image" $((SECONDS - start))
		return
	fi
	local old
	old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
	"build_$name"
	# Drop the image this one replaced (a dangling <none> otherwise); this
	# fails harmlessly while a container or another tag still uses it.
	if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
		docker image rm "$old" >/dev/null 2>&1 || true
	fi
	printf '%-7s %-28s built   %3ds\n' "$name" "$image" $((SECONDS - start))
}

# The daprd binary alone, for scripts/bench.sh's Dapr pub/sub peer, which
# runs it on the host: the same build as the image's.
if [ "${1:-}" = --daprd-binary ]; then
	daprd_binary
	exit 0
fi

run_step nats "$NATS_IMAGE" 0
run_step redis "$REDIS_IMAGE" 0
run_step daprd "$DAPRD_IMAGE" 0
run_step worker "$WORKER_IMAGE" 1
