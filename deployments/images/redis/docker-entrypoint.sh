#!/bin/sh
# Stand-in for the official redis image's docker-entrypoint.sh (no gosu,
# no chown: this image runs as root).
set -e

# first arg is `-f` or `--some-option`, or `something.conf`
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

# The official image compiles redis with protected-mode defaulting to "no".
# Debian's redis-server defaults to "yes", which refuses password-less
# clients coming from other containers or from published ports. Restore the
# official default unless the command line or the config file (first
# argument not starting with "--") says otherwise.
if [ "$1" = redis-server ]; then
	add=yes
	case "${2:-}" in
	-v | --version | -h | --help | --test-memory | --check-system) add= ;;
	--*) ;;
	?*)
		if [ -f "$2" ]; then
			while IFS= read -r line || [ -n "$line" ]; do
				case "$line" in
				protected-mode* | *[[:space:]]protected-mode*) add= ;;
				esac
			done <"$2"
		fi
		;;
	esac
	for a in "$@"; do
		[ "$a" = --protected-mode ] && add=
	done
	if [ -n "$add" ]; then
		set -- "$@" --protected-mode no
	fi
fi

exec "$@"
