#!/usr/bin/env bash
# Build the Kubernetes packaging tools that deployments/ is tested with, helm
# and kustomize, from tools/helm/go.mod, and print the path of each binary.
#
#   scripts/k8s-tools.sh               # build both if missing, print both paths
#   scripts/k8s-tools.sh helm          # only helm: prints its path
#   scripts/k8s-tools.sh kustomize     # only kustomize
#   CACHED_ONLY=1 scripts/k8s-tools.sh helm   # print the path if built, else exit 3
#
# Neither is on a fresh machine, and no download of a release binary is
# possible here; both are Go programs the module proxy serves. The binaries
# are cached as ${CARTWORKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cartworker}/bin/
# helm-<version> and kustomize-<version> (as build-images.sh caches daprd), so
# only the first run compiles (a few minutes on 2 cores); the version is the
# one tools/helm/go.mod selects, so bumping it there rebuilds.
# HELM or KUSTOMIZE set to an executable skips the build of that tool.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$ROOT/tools/helm
CACHE_DIR=${CARTWORKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cartworker}
BIN_DIR=$CACHE_DIR/bin

log() { echo "k8s-tools: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# tool NAME: print the path of NAME's binary, building it when missing.
tool() {
	local name=$1 module pkg override version out
	case $name in
	helm)
		module=helm.sh/helm/v3 pkg=helm.sh/helm/v3/cmd/helm override=${HELM:-}
		;;
	kustomize)
		module=sigs.k8s.io/kustomize/kustomize/v5 pkg=$module override=${KUSTOMIZE:-}
		;;
	*) die "unknown tool $name (helm or kustomize)" ;;
	esac
	if [ -n "$override" ]; then
		[ -x "$override" ] || die "$override is not executable"
		echo "$override"
		return
	fi
	command -v go >/dev/null 2>&1 || die "go is not on PATH"
	version=$(cd "$DIR" && go list -m -f '{{.Version}}' "$module") ||
		die "tools/helm/go.mod must require $module"
	out=$BIN_DIR/$name-$version
	if [ ! -x "$out" ]; then
		[ "${CACHED_ONLY:-0}" = 1 ] && exit 3
		mkdir -p "$BIN_DIR"
		log "compiling $name $version (cached as $out)"
		# helm prints its version from these; an unstamped build says v3.x-dev
		# in `helm version` and in rendered charts' .Capabilities.HelmVersion.
		local ldflags="-s -w"
		if [ "$name" = helm ]; then
			ldflags+=" -X helm.sh/helm/v3/internal/version.version=$version"
		fi
		(cd "$DIR" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp.$$" "$pkg")
		mv -f "$out.tmp.$$" "$out"
	fi
	echo "$out"
}

if [ $# -eq 0 ]; then set -- helm kustomize; fi
for name in "$@"; do tool "$name"; done
