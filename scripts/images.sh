# shellcheck shell=bash
# Sourced by the other scripts, not run: sets NATS_IMAGE, REDIS_IMAGE,
# DAPRD_IMAGE and WORKER_IMAGE to the defaults in deployments/images.env,
# unless the environment sets them (e.g. DAPRD_IMAGE=... scripts/stack.sh up).
# Needs ROOT, the repository root.

while IFS='=' read -r _name _value || [ -n "$_name" ]; do
	case $_name in
	[A-Z]*_IMAGE)
		if [ -z "${!_name:-}" ]; then printf -v "$_name" '%s' "$_value"; fi
		;;
	esac
done <"$ROOT/deployments/images.env"
unset _name _value
