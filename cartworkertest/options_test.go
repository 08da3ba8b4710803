package cartworkertest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/require"
)

// Bad option values are refused by Run before it touches Docker, each
// with an error naming the option.
func TestBadOptionsAreNamed(t *testing.T) {
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{WithWorkers(-1), "WithWorkers(-1)"},
		{WithWorkerBinary(""), `WithWorkerBinary("")`},
		{WithWorkerImage(""), `WithWorkerImage("")`},
		{WithDaprToken(""), `WithDaprToken("")`},
		{WithStartupTimeout(0), "WithStartupTimeout(0s)"},
		{WithWorkerEnv(map[string]string{"": "x"}), "WithWorkerEnv"},
		{nil, "nil Option"},
	} {
		_, err := Run(context.Background(), WithWorkers(1), tc.opt)
		require.ErrorContains(t, err, tc.want)
		require.ErrorContains(t, err, "cartworkertest")
	}
}

func TestOptionsSetWhatTheySay(t *testing.T) {
	s, err := newSettings(nil)
	require.NoError(t, err)
	require.Equal(t, DefaultWorkers, s.workers)
	require.Equal(t, inProcess, s.worker.kind)
	require.Equal(t, DefaultStartupTimeout, s.startupTimeout)

	s, err = newSettings([]Option{
		WithWorkers(3), WithWorkerBinary("/bin/worker"), WithDaprToken("t"), WithStartupTimeout(time.Second),
		WithWorkerEnv(map[string]string{"A": "1", "B": "1"}), WithWorkerEnv(map[string]string{"B": "2"}),
	})
	require.NoError(t, err)
	require.Equal(t, 3, s.workers)
	require.Equal(t, workerSpec{kind: hostProcess, binary: "/bin/worker", env: map[string]string{"A": "1", "B": "2"}}, s.worker)
	require.Equal(t, "t", s.daprToken)

	// The later kind wins, and AddWorker's options apply over Run's
	// without changing them.
	s, err = newSettings([]Option{WithWorkerBinary("/bin/worker"), WithWorkerImage("img")})
	require.NoError(t, err)
	require.Equal(t, workerSpec{kind: container, image: "img"}, s.worker)
	spec := s.worker
	require.NoError(t, WorkerInProcess()(&spec))
	require.NoError(t, WorkerEnv(map[string]string{"X": "1"})(&spec))
	require.Equal(t, workerSpec{kind: container, image: "img"}, s.worker)
	require.Equal(t, inProcess, spec.kind)
}

// With Docker out of reach, the error names Docker and the script that
// starts it.
func TestDockerDownIsNamed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sock := filepath.Join(t.TempDir(), "no-docker.sock")
	_, err := dockerClient(ctx, client.WithHost("unix://"+sock))
	require.Error(t, err)
	require.Contains(t, err.Error(), "Docker is not reachable")
	require.Contains(t, err.Error(), "scripts/ensure-docker.sh")
}

func TestImageFromEnvironmentOrImagesEnv(t *testing.T) {
	t.Setenv(NATSImageVar, "")
	img, err := Image(NATSImageVar)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(img, "nats:"), img)
	t.Setenv(NATSImageVar, "my/nats:1")
	img, err = Image(NATSImageVar)
	require.NoError(t, err)
	require.Equal(t, "my/nats:1", img)
	_, err = Image("NO_SUCH_IMAGE")
	require.ErrorContains(t, err, "NO_SUCH_IMAGE")
}

func TestCheckBinary(t *testing.T) {
	dir := t.TempDir()
	require.ErrorContains(t, checkBinary(filepath.Join(dir, "none")), "WithWorkerBinary")
	require.ErrorContains(t, checkBinary(dir), "not an executable file")
	exe := filepath.Join(dir, "worker")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	require.NoError(t, checkBinary(exe))
}

func TestLoopbackURL(t *testing.T) {
	for addr, want := range map[string]string{
		":8080": "http://127.0.0.1:8080", "0.0.0.0:1": "http://127.0.0.1:1", "127.0.0.2:3": "http://127.0.0.2:3",
	} {
		got, err := loopbackURL(addr)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := loopbackURL("8080")
	require.ErrorContains(t, err, "WORKER_HTTP_ADDR")
}

// A worker that cannot start is no worker of the stack, and Terminate
// has nothing of it to stop.
func TestWorkerThatNeverStartedStops(t *testing.T) {
	st := &Stack{set: defaultSettings(), natsURL: "nats://127.0.0.1:1"}
	_, err := st.AddWorker(context.Background(), WorkerEnv(map[string]string{"WORKER_CONCURRENCY": "many"}))
	require.ErrorContains(t, err, "WORKER_CONCURRENCY")
	require.Nil(t, st.Worker(0))
	require.Empty(t, st.Workers())
	require.NoError(t, st.Terminate(context.Background()))
	_, err = st.AddWorker(context.Background(), WorkerBinary(""))
	require.ErrorContains(t, err, "WithWorkerBinary")
}
