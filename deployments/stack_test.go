package deployments_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeDocker answers the docker commands scripts/stack.sh's start uses
// from files in $FAKE_DOCKER, and logs every call to $FAKE_DOCKER/calls:
// image (the image's ID), and for the one container: running (true or
// false; absent when there is no container) and label (its spec label).
const fakeDocker = `#!/usr/bin/env bash
set -eu
d=$FAKE_DOCKER
echo "$*" >>"$d/calls"
case "$1 $2" in
"image inspect") cat "$d/image" ;;
"container inspect")
	[ -f "$d/running" ] || exit 1
	case "$4" in *Running*) cat "$d/running" ;; *Labels*) cat "$d/label" ;; esac
	;;
"stop -t") echo false >"$d/running" ;;
"rm -f") rm -f "$d/running" "$d/label" ;;
"run -d")
	for a in "$@"; do
		case "$a" in cartworker.stack.spec=*) echo "${a#*=}" >"$d/label" ;; esac
	done
	echo true >"$d/running"
	;;
*) echo "fake docker: unexpected $*" >&2; exit 1 ;;
esac
`

// stackStart runs stack.sh's start with the fake docker and returns the
// docker calls it made and what it logged.
func stackStart(t *testing.T, dir string, args ...string) (calls []string, log string) {
	t.Helper()
	_ = os.Remove(filepath.Join(dir, "calls"))
	script := `. "$1"; shift; start "$@"`
	cmd := exec.Command("bash", append([]string{"-c", script, "stack", "../scripts/stack.sh"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(dir, "bin")+":"+os.Getenv("PATH"), "FAKE_DOCKER="+dir)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	b, err := os.ReadFile(filepath.Join(dir, "calls"))
	require.NoError(t, err)
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		calls = append(calls, strings.Fields(l)[0]+" "+strings.Fields(l)[1])
	}
	return calls, string(out)
}

// TestStackReplacesStaleContainers: `make run` after a change of the
// worker (a rebuilt image, so a new image ID) or of its settings replaces
// the running container; with nothing changed it is left alone.
func TestStackReplacesStaleContainers(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "bin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bin", "docker"), []byte(fakeDocker), 0o755))
	setImage := func(id string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "image"), []byte(id+"\n"), 0o644))
	}
	worker := []string{"worker", "cartworker/worker:dev", "-e", "WORKER_STATE_PROTOCOL=grpc", "--stop-timeout", "30"}

	setImage("sha256:aaa")
	calls, log := stackStart(t, dir, worker...)
	require.Equal(t, []string{"image inspect", "container inspect", "run -d"}, calls, "no container yet: started")
	require.Contains(t, log, "worker started")

	calls, log = stackStart(t, dir, worker...)
	require.NotContains(t, calls, "run -d", "same image, same settings: kept")
	require.Contains(t, log, "worker already running")

	setImage("sha256:bbb")
	calls, log = stackStart(t, dir, worker...)
	require.Equal(t, []string{"image inspect", "container inspect", "container inspect", "stop -t", "rm -f", "run -d"}, calls,
		"a rebuilt image: stopped gracefully, replaced")
	require.Contains(t, log, "replacing")

	calls, _ = stackStart(t, dir, worker...)
	require.NotContains(t, calls, "run -d", "the replacement is current")

	other := append(worker[:len(worker):len(worker)], "-e", "LOG_LEVEL=debug")
	calls, _ = stackStart(t, dir, other...)
	require.Contains(t, calls, "run -d", "other settings: replaced")

	withCmd := append(other[:len(other):len(other)], "--", "./worker", "-pprof")
	calls, _ = stackStart(t, dir, withCmd...)
	require.Contains(t, calls, "run -d", "another command: replaced")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "running"), []byte("false\n"), 0o644))
	calls, _ = stackStart(t, dir, withCmd...)
	require.Equal(t, []string{"image inspect", "container inspect", "rm -f", "run -d"}, calls, "a stopped container: removed, started")
}
