package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/testkit"
)

// TestShutdownAcknowledgesBeforeReturning stops run while commands are in
// flight. main exits right after run returns, and an ack or Nak the process
// has not yet handed to the server is lost with it: the command comes back, a
// duplicate, only after AckWait (1 m here). The worker's NATS connection goes
// through a proxy that the test cuts the moment run returns, dropping
// whatever it has not forwarded yet, as an exiting process does. After that
// every delivery must be acknowledged within a few seconds (the server
// applies acks it has read asynchronously, hence the short poll), or be
// ready for immediate redelivery.
func TestShutdownAcknowledgesBeforeReturning(t *testing.T) {
	const (
		carts    = 8
		perCart  = 25
		commands = carts * perCart
	)
	ns := testkit.StartJetStream(t)
	proxy := startCutProxy(t, ns.Addr().String())
	fake := daprfake.New()
	t.Cleanup(fake.Close)
	// Slow state calls keep every pool slot busy when the stop comes, so
	// the last acks are written just before run returns.
	fake.SetDelay(50 * time.Millisecond)
	env := map[string]string{
		"NATS_URL":           "nats://" + proxy.addr(),
		"DAPR_HTTP_ENDPOINT": fake.URL(),
		"DAPR_GRPC_ENDPOINT": fake.GRPCAddr(),
		"WORKER_CONCURRENCY": "8",
		// One command per partition held, each applied alone: the stop
		// finds most of the load still in the stream.
		"WORKER_BUFFER":           "32",
		"WORKER_BATCH_MAX":        "1",
		"WORKER_HTTP_ADDR":        freeAddr(t),
		"WORKER_ACK_WAIT":         "1m",
		"WORKER_SHUTDOWN_TIMEOUT": "10s",
		"LOG_LEVEL":               "warn",
	}

	nc := testkit.Connect(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var applied atomic.Int64
	sub, err := nc.Subscribe("cart.evt.*.applied", func(*nats.Msg) { applied.Add(1) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &testkit.SyncBuffer{}) }()

	require.Eventually(t, func() bool {
		held, err := holding(js)
		return err == nil && held != nil
	}, 10*time.Second, 10*time.Millisecond, "the worker creates its consumers")

	publish := publishFunc(t, js)
	for c := range carts {
		cartID := fmt.Sprintf("cart-%d", c)
		cmds := []command.Command{{ID: cartID + "-cache", Type: command.TypeCache, CartID: cartID}}
		for i := range perCart - 1 {
			cmds = append(cmds, command.Command{ID: fmt.Sprintf("%s-add-%d", cartID, i), Type: command.TypeAddItem, CartID: cartID,
				Items: []command.Item{{ItemCode: "X", Quantity: 1, UnitPrice: mustAmount(t, "10"), TaxCode: "01"}}})
		}
		for _, cmd := range cmds {
			publish(cmd)
		}
	}
	require.Eventually(t, func() bool { return applied.Load() >= commands/4 }, 30*time.Second, time.Millisecond,
		"a quarter of the commands applied")

	cancel()
	select {
	case err := <-done:
		proxy.cut()
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return within 20s of the stop")
	}
	var held []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		held, err = holding(js)
		require.NoError(t, err)
		if len(held) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The server may hand a partition's next command to the worker's pull
	// request while the worker withdraws it at the stop. It then queues the
	// command for immediate redelivery, yet counts it unacknowledged until
	// that happens. A command the worker took and left unacknowledged waits
	// for AckWait instead, and with one in flight per partition nothing
	// else of its partition is delivered meanwhile: a fetch gets nothing.
	for _, name := range held {
		c, err := js.Consumer(context.Background(), command.StreamCommands, name)
		require.NoError(t, err)
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		require.NoError(t, err)
		got := 0
		for range batch.Messages() {
			got++
		}
		if got == 0 {
			// Or its ack was read by now after all.
			info, err := c.Info(context.Background())
			require.NoError(t, err)
			require.Zero(t, info.NumAckPending, "%s holds a delivery left unacknowledged when run returned (%d applied events seen)", name, applied.Load())
		}
	}
	require.Less(t, applied.Load(), int64(commands), "the stop came mid-load")
}

// holding returns the consumers of the command stream (each partition has
// its own, besides the strays consumer) that hold a delivery not yet
// acknowledged; nil when the stream has no consumer yet.
func holding(js jetstream.JetStream) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, command.StreamCommands)
	if err != nil {
		return nil, err
	}
	l := s.ListConsumers(ctx)
	var consumers int
	held := []string{}
	for ci := range l.Info() {
		consumers++
		if ci.NumAckPending > 0 {
			held = append(held, ci.Name)
		}
	}
	if err := l.Err(); err != nil {
		return nil, err
	}
	if consumers < 1+command.DefaultPartitions {
		return nil, nil
	}
	return held, nil
}

// cutProxy forwards TCP connections to target until cut.
type cutProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
	isCut  bool
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		if !p.track(in, out) {
			return
		}
		p.wg.Go(func() { _, _ = io.Copy(out, in) })
		p.wg.Go(func() { _, _ = io.Copy(in, out) })
	}
}

// track records a connection pair, or closes it when the proxy is cut.
func (p *cutProxy) track(c ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isCut {
		for _, x := range c {
			_ = x.Close()
		}
		return false
	}
	p.conns = append(p.conns, c...)
	return true
}

// cut closes every connection at once, dropping what has not been forwarded
// yet, and waits for the proxy's goroutines. It is safe to call twice.
func (p *cutProxy) cut() {
	p.mu.Lock()
	p.isCut = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}
