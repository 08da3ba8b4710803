//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"

	"github.com/cartworker/cartworker/cartworkertest"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/testkit"
)

// clearWithin is how long a worker may take to report a NATS it cannot use.
const clearWithin = 15 * time.Second

// TestNATSAuthErrorsAreClear runs the worker binary against a NATS server
// that requires a password. With a wrong password, and with a NATS_URL where
// nothing listens, it must exit non-zero within 15s, saying why and naming
// NATS_URL, and never print the password; with the right one it runs.
func TestNATSAuthErrorsAreClear(t *testing.T) {
	ctx := testkit.Context(t, 3*time.Minute)
	const user = "cw"
	password := "right-" + randomHex(8)
	wrong := "wrong-" + randomHex(8)

	// A stack of its own whose NATS requires a password: the stack's own
	// connection has it, its workers get it only from the test.
	natsAuth := newTestStack(t,
		cartworkertest.WithNATS(testcontainers.WithCmdArgs("--user", user, "--pass", password)),
		cartworkertest.WithNATSOptions(nats.UserInfo(user, password)))
	hostPort := strings.TrimPrefix(natsAuth.NATSURL(), "nats://")
	env := func(extra map[string]string) map[string]string {
		env := natsAuth.WorkerEnv()
		env["WORKER_HTTP_ADDR"] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		maps.Copy(env, extra)
		return env
	}

	t.Run("wrong password", func(t *testing.T) {
		out := runUntilExit(t, env(map[string]string{"NATS_USER": user, "NATS_PASSWORD": wrong}), clearWithin)
		require.Contains(t, out, "NATS_URL "+natsAuth.NATSURL()+": authorization failed")
		require.Contains(t, out, "check NATS_USER/NATS_PASSWORD")
		require.NotContains(t, out, wrong)
		require.NotContains(t, out, password)
	})

	t.Run("wrong password in the URL", func(t *testing.T) {
		out := runUntilExit(t, env(map[string]string{"NATS_URL": "nats://" + user + ":" + wrong + "@" + hostPort}), clearWithin)
		require.Contains(t, out, "NATS_URL nats://"+user+":xxxxx@"+hostPort+": authorization failed")
		require.NotContains(t, out, wrong)
	})

	t.Run("nothing listening", func(t *testing.T) {
		url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
		out := runUntilExit(t, env(map[string]string{"NATS_URL": url, "NATS_USER": user, "NATS_PASSWORD": password}), clearWithin)
		require.Contains(t, out, "NATS_URL "+url+": not reachable after 10s")
		require.Contains(t, out, "connection refused")
		require.NotContains(t, out, password)
	})

	t.Run("right password", func(t *testing.T) {
		w := startProcess(t, natsAuth, "natsauth-right", map[string]string{"NATS_USER": user, "NATS_PASSWORD": password})
		// Stop it once it consumes, not while it is still setting up.
		nc, err := nats.Connect(natsAuth.NATSURL(), nats.UserInfo(user, password))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		waitConsumers(ctx, t, js, command.DefaultPartitions)
		poll(ctx, t, 30*time.Second, "the worker's readiness", func() error {
			code, err := w.readyz()
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("readyz %d", code)
			}
			return err
		})
		poll(ctx, t, 10*time.Second, "the worker's connect log line", func() error {
			if !strings.Contains(w.logs.String(), `msg="connected to NATS"`) {
				return fmt.Errorf("not logged yet")
			}
			return nil
		})
		w.signal(t, syscall.SIGTERM)
		code, _ := w.waitExit(t, 30*time.Second)
		require.Zero(t, code)
		require.NotContains(t, w.logs.String(), password)
	})
}

// runUntilExit runs the worker binary with exactly env, requires it to exit
// non-zero within limit, and returns its output.
func runUntilExit(t *testing.T, env map[string]string, limit time.Duration) string {
	t.Helper()
	cmd := exec.Command(workerBin)
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if env[k] != "" {
			cmd.Env = append(cmd.Env, k+"="+env[k])
		}
	}
	var out bytes.Buffer // written by cmd.Wait's copying, read after it
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the worker still ran after %s; output:\n%s", limit, lastLines(out.String(), 40))
	}
	took := time.Since(start)
	require.NotZero(t, cmd.ProcessState.ExitCode(), "exit code; output:\n%s", lastLines(out.String(), 40))
	last := strings.TrimSpace(lastLines(out.String(), 1))
	require.True(t, strings.HasPrefix(last, "cartworker: "), "the last line is the reason: %q", last)
	t.Logf("exited with %d after %s: %s", cmd.ProcessState.ExitCode(), took.Round(time.Millisecond), last)
	return out.String()
}
