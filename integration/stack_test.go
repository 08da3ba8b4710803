//go:build integration

package integration

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	tcexec "github.com/testcontainers/testcontainers-go/exec"

	"github.com/cartworker/cartworker/cartworkertest"
)

const (
	// appID is daprd's --app-id: Redis keys are "<appID>||<key>".
	appID = "cartworker"
	// redisDB is the component's redisDB, as upstream.
	redisDB = "2"
)

// stack is a cartworkertest stack as the tests name it.
type stack struct {
	*cartworkertest.Stack
	name string
}

// newTestStack starts a stack of t's own, with no worker unless opts add
// some: it is terminated in t's cleanup, and its containers' last log lines
// are logged first if t failed.
func newTestStack(t *testing.T, opts ...cartworkertest.Option) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	st, err := cartworkertest.Run(ctx, append([]cartworkertest.Option{cartworkertest.WithWorkers(0)}, opts...)...)
	require.NoError(t, err, "start the test's own stack")
	s := &stack{Stack: st, name: t.Name()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := st.Terminate(ctx); err != nil {
			t.Errorf("terminate the stack of %s: %v", s.name, err)
		}
	})
	s.logOnFailure(t)
	return s
}

// logOnFailure logs the last lines of every container of st when t fails.
func (st *stack) logOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- stack %s ---\n%s", st.name, st.Logs(40))
		}
	})
}

// redisCLI runs redis-cli in the stack's Redis container against the
// component's database and returns its trimmed output.
func (st *stack) redisCLI(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	cmd := append([]string{"redis-cli", "-n", redisDB, "--raw"}, args...)
	code, out, err := st.RedisContainer().Exec(ctx, cmd, tcexec.Multiplexed())
	require.NoError(t, err, "redis-cli %v", args)
	b, err := io.ReadAll(out)
	require.NoError(t, err)
	require.Zero(t, code, "redis-cli %v: %s", args, b)
	return strings.TrimSpace(string(b))
}

// redisKey is the Redis key Dapr stores a state key under.
func redisKey(key string) string { return appID + "||" + key }

// freePort is cartworkertest.FreePort for a test.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := cartworkertest.FreePort()
	require.NoError(t, err)
	return port
}
