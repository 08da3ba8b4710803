package consumer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/internal/testkit"
	"github.com/cartworker/cartworker/money"
)

// TestMain fails the package if any goroutine outlives the tests. Nothing is
// ignored: every test shuts its embedded server down and waits for it
// (Shutdown + WaitForShutdown), closes its connections, stops its workers and
// closes the Dapr fake in t.Cleanup, and goleak retries long enough for the
// stragglers of those shutdowns to exit.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	// waitFor bounds every poll. Healthy runs finish far sooner; the margin
	// is for -race on a loaded machine.
	waitFor = 15 * time.Second
	tick    = 5 * time.Millisecond
	// maxPayload is the embedded server's max_payload, raised above the
	// 1 MiB default so that an oversized command body can be published.
	maxPayload = 2 << 20
)

var subjects command.Subjects

// env is one embedded JetStream server, the Dapr fake and the real state
// stack (statepool client behind the breaker, cartcache service) on top of
// it, plus a test connection that publishes commands, records events and
// inspects streams.
type env struct {
	client *statepool.Client
	srv    *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	fake   *daprfake.Fake
	store  *breaker.Breaker
	// sidecar is set by withSidecarDown.
	sidecar *testkit.Proxy
	svc     *cartcache.Carts
	events  *eventLog
	log     *slog.Logger
}

type envOptions struct {
	breaker breaker.Settings
	token   string
	// sidecarDown puts a proxy between the state client and the fake,
	// down at first: the sidecar is absent until the test brings it up.
	sidecarDown bool
}

// withToken makes the worker's state client send token as dapr-api-token.
func withToken(token string) envOption {
	return func(o *envOptions) { o.token = token }
}

// withSidecarDown starts the env with its sidecar absent: connections to
// it are refused until the test calls e.sidecar.Up.
func withSidecarDown() envOption {
	return func(o *envOptions) { o.sidecarDown = true }
}

type envOption func(*envOptions)

func withBreaker(s breaker.Settings) envOption {
	return func(o *envOptions) { o.breaker = s }
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	var o envOptions
	for _, opt := range opts {
		opt(&o)
	}
	e := &env{log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))}

	e.srv = testkit.StartJetStream(t, func(o *server.Options) {
		o.ServerName = "cartworker-test"
		o.MaxPayload = maxPayload
	})

	e.fake = daprfake.New()
	t.Cleanup(e.fake.Close)
	scfg := statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: e.fake.URL(), APIToken: o.token}
	if o.sidecarDown {
		e.sidecar = testkit.StartProxy(t, strings.TrimPrefix(e.fake.URL(), "http://"))
		scfg.Endpoint = "http://" + e.sidecar.Addr()
	}
	var err error
	e.client, err = statepool.New(scfg)
	require.NoError(t, err)
	t.Cleanup(e.client.Close)
	e.store, err = breaker.New(e.client, o.breaker)
	require.NoError(t, err)
	e.svc = cartcache.New(e.store, cartcache.Config{})

	e.nc = e.connect(t, "test")
	e.js, err = jetstream.New(e.nc)
	require.NoError(t, err)
	e.events = newEventLog(t, e.nc)
	return e
}

// connect opens a client connection to the embedded server, closed on
// cleanup. Cleanups run last-in first-out, so a worker started after its
// connection is stopped before the connection closes.
func (e *env) connect(t *testing.T, name string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(e.srv.ClientURL(), nats.Name(name))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// config fills the zero fields of cfg with delays short enough for tests.
func (e *env) config(cfg consumer.Config) consumer.Config {
	dur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	dur(&cfg.RetryBaseDelay, 20*time.Millisecond)
	dur(&cfg.RetryMaxDelay, 200*time.Millisecond)
	dur(&cfg.ProbeInterval, 50*time.Millisecond)
	dur(&cfg.AckWait, 2*time.Second)
	dur(&cfg.ShutdownTimeout, 5*time.Second)
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 4
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = e.log
	}
	return cfg
}

// newWorker builds a worker on its own connection, as a separate instance
// would be, and returns both. A nil app means the real cartcache service.
func (e *env) newWorker(t *testing.T, cfg consumer.Config, app consumer.Applier) (*consumer.Worker, *nats.Conn) {
	t.Helper()
	nc := e.connect(t, "worker")
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	if app == nil {
		app = e.svc
	}
	w, err := consumer.New(js, nc, app, e.config(cfg))
	require.NoError(t, err)
	return w, nc
}

// running is a Worker.Run goroutine owned by a test.
type running struct {
	w      *consumer.Worker
	nc     *nats.Conn
	cancel context.CancelFunc
	exited chan struct{} // closed when Run has returned
	err    error         // Run's result, readable once exited is closed

	once    sync.Once
	elapsed time.Duration
}

// startWorker creates the streams and the consumer (so the test can publish
// at once), then runs a worker until stop or cleanup.
func (e *env) startWorker(t *testing.T, cfg consumer.Config, app consumer.Applier) *running {
	t.Helper()
	w, nc := e.newWorker(t, cfg, app)
	return runWorker(t, w, nc)
}

// runWorker sets w up and runs it until the test ends.
func runWorker(t *testing.T, w *consumer.Worker, nc *nats.Conn) *running {
	t.Helper()
	setupCtx, cancelSetup := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelSetup()
	_, err := w.Setup(setupCtx)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, nc: nc, cancel: cancel, exited: make(chan struct{})}
	go func() {
		defer close(r.exited)
		r.err = w.Run(ctx)
	}()
	t.Cleanup(func() {
		r.cancel()
		if !r.wait(30 * time.Second) {
			t.Errorf("worker Run did not return within 30s of cancel")
		}
	})
	return r
}

// wait waits up to limit for Run to return and reports whether it did.
func (r *running) wait(limit time.Duration) bool {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-r.exited:
		return true
	case <-t.C:
		return false
	}
}

// stop cancels Run's context and waits up to limit for it to return. It
// reports Run's error and whether it returned, and records in elapsed how
// long that took; later calls only wait again.
func (r *running) stop(limit time.Duration) (error, bool) {
	r.once.Do(func() {
		start := time.Now()
		r.cancel()
		r.wait(limit)
		r.elapsed = time.Since(start)
	})
	select {
	case <-r.exited:
		return r.err, true
	default:
		return nil, false
	}
}

// publish sends a raw command body on subject with an optional Nats-Msg-Id.
func (e *env) publish(t *testing.T, subject string, body []byte, msgID string) *jetstream.PubAck {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = body
	if msgID != "" {
		m.Header.Set(command.HeaderMsgID, msgID)
	}
	return e.publishMsg(t, m)
}

// publishMsg sends m to JetStream as is.
func (e *env) publishMsg(t *testing.T, m *nats.Msg) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, m)
	require.NoError(t, err, "publish on %s", m.Subject)
	return ack
}

// publishCmd marshals cmd and publishes it on its own subject with
// Nats-Msg-Id set to its id.
func (e *env) publishCmd(t *testing.T, cmd command.Command) *jetstream.PubAck {
	t.Helper()
	return e.publishCmdAs(t, cmd, cmd.ID)
}

// publishCmdAs publishes cmd with an explicit Nats-Msg-Id.
func (e *env) publishCmdAs(t *testing.T, cmd command.Command, msgID string) *jetstream.PubAck {
	t.Helper()
	body, err := command.Marshal(cmd)
	require.NoError(t, err)
	return e.publish(t, subjects.Command(cmd.CartID, cmd.Type), body, msgID)
}

// cart reads a stored cart back as generic JSON.
func (e *env) cart(t *testing.T, id string) map[string]any {
	t.Helper()
	raw, ok := e.fake.Get(id)
	require.True(t, ok, "cart %s not stored", id)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

// lineCodes returns the item codes of a stored cart's lines, in line order,
// and checks that line_no runs 1..n.
func (e *env) lineCodes(t *testing.T, id string) []string {
	t.Helper()
	lines, _ := e.cart(t, id)["line_items"].([]any)
	codes := make([]string, 0, len(lines))
	for i, l := range lines {
		m := l.(map[string]any)
		require.EqualValues(t, i+1, m["line_no"], "cart %s line %d", id, i)
		codes = append(codes, m["item_code"].(string))
	}
	return codes
}

func (e *env) stream(t *testing.T, name string) jetstream.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, name)
	require.NoError(t, err)
	return s
}

func (e *env) streamInfo(t *testing.T, name string) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := e.stream(t, name).Info(ctx)
	require.NoError(t, err)
	return info
}

// deadLetters returns every message in the dead-letter stream.
func (e *env) deadLetters(t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	s := e.stream(t, command.StreamDeadLetters)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	if info.State.Msgs == 0 {
		return out
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

// consumerInfo sums the state of every consumer of the command stream (the
// strays consumer and one per partition): pending, in flight, redelivered.
func (e *env) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, command.StreamCommands)
	require.NoError(t, err)
	sum := &jetstream.ConsumerInfo{Name: "all"}
	n := 0
	lister := st.ListConsumers(ctx)
	for info := range lister.Info() {
		n++
		sum.NumPending += info.NumPending
		sum.NumAckPending += info.NumAckPending
		sum.NumRedelivered += info.NumRedelivered
		sum.NumWaiting += info.NumWaiting
	}
	require.NoError(t, lister.Err())
	require.Positive(t, n, "no consumer on %s", command.StreamCommands)
	return sum
}

// waitLeases waits until at least n different instances hold partition
// leases: the partitions have spread over them.
func (e *env) waitLeases(t *testing.T, n int) {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), command.LeasesBucket)
	require.NoError(t, err)
	eventually(t, func() bool {
		keys, err := kv.ListKeys(context.Background())
		if err != nil {
			return false
		}
		holders := map[string]bool{}
		for k := range keys.Keys() {
			if e, err := kv.Get(context.Background(), k); err == nil {
				holders[string(e.Value())] = true
			}
		}
		return len(holders) >= n
	}, waitFor, tick, "partitions held by %d instances", n)
}

// waitSettled waits until the durable consumer has nothing pending and
// nothing unacknowledged: every command was acked or terminated.
func (e *env) waitSettled(t *testing.T) {
	t.Helper()
	var last string
	eventually(t, func() bool {
		info := e.consumerInfo(t)
		last = fmt.Sprintf("pending %d, ack pending %d, redelivered %d", info.NumPending, info.NumAckPending, info.NumRedelivered)
		return info.NumPending == 0 && info.NumAckPending == 0
	}, waitFor, 10*time.Millisecond, "consumer never settled")
	t.Logf("consumer settled: %s", last)
}

// eventLog records the outcome events published on core NATS.
type eventLog struct {
	mu     sync.Mutex
	events []command.Event
	bad    []string // events on a subject that does not match their body
}

func newEventLog(t *testing.T, nc *nats.Conn) *eventLog {
	t.Helper()
	l := &eventLog{}
	sub, err := nc.Subscribe(subjects.Events(), func(m *nats.Msg) {
		var ev command.Event
		err := json.Unmarshal(m.Data, &ev)
		l.mu.Lock()
		defer l.mu.Unlock()
		if err != nil {
			l.bad = append(l.bad, fmt.Sprintf("%s: undecodable %q: %v", m.Subject, m.Data, err))
			return
		}
		if want := subjects.Event(ev.CartID, ev.Outcome); m.Subject != want {
			l.bad = append(l.bad, fmt.Sprintf("event on %s, want %s: %+v", m.Subject, want, ev))
		}
		l.events = append(l.events, ev)
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush(), "the event subscription must be in place before anything is published")
	t.Cleanup(func() {
		_ = sub.Unsubscribe()
		l.mu.Lock()
		defer l.mu.Unlock()
		require.Empty(t, l.bad, "malformed events")
	})
	return l
}

func (l *eventLog) all() []command.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]command.Event(nil), l.events...)
}

func (l *eventLog) filter(keep func(command.Event) bool) []command.Event {
	var out []command.Event
	for _, ev := range l.all() {
		if keep(ev) {
			out = append(out, ev)
		}
	}
	return out
}

func (l *eventLog) forCommand(id string) []command.Event {
	return l.filter(func(ev command.Event) bool { return ev.CommandID == id })
}

func (l *eventLog) forCart(cartID string) []command.Event {
	return l.filter(func(ev command.Event) bool { return ev.CartID == cartID })
}

// waitCommand waits for the first event of command id and returns it.
func (l *eventLog) waitCommand(t *testing.T, id string) command.Event {
	t.Helper()
	var ev command.Event
	eventually(t, func() bool {
		evs := l.forCommand(id)
		if len(evs) == 0 {
			return false
		}
		ev = evs[0]
		return true
	}, waitFor, tick, "no event for command %s", id)
	return ev
}

// waitApplied waits until each id has an applied event and checks that each
// has exactly one applied event that is not a duplicate and no rejection.
func (l *eventLog) waitApplied(t *testing.T, ids ...string) {
	t.Helper()
	eventually(t, func() bool {
		for _, id := range ids {
			if len(l.forCommand(id)) == 0 {
				return false
			}
		}
		return true
	}, waitFor, tick, "not every command was applied")
	for _, id := range ids {
		fresh := 0
		for _, ev := range l.forCommand(id) {
			require.Equal(t, command.OutcomeApplied, ev.Outcome, "command %s: %+v", id, ev)
			if !ev.Duplicate {
				fresh++
			}
		}
		require.Equal(t, 1, fresh, "command %s must be applied exactly once", id)
	}
}

// recObserver is a consumer.Observer that counts what it is told.
type recObserver struct {
	mu           sync.Mutex
	done         map[[2]string]int // {type, outcome}
	redelivered  int
	deadLettered int
	applies      []int
	inflight     int
	lag, dlq     uint64
	sampled      bool
	oldest       map[int]time.Duration
	acked        []consumer.Stages
}

func newObserver() *recObserver { return &recObserver{done: map[[2]string]int{}} }

func (o *recObserver) CommandDone(typ, outcome string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.done[[2]string{typ, outcome}]++
}

func (o *recObserver) Acked(s consumer.Stages) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.acked = append(o.acked, s)
}

func (o *recObserver) stages() []consumer.Stages {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.acked)
}

func (o *recObserver) Redelivered() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.redelivered++
}

func (o *recObserver) DeadLettered() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.deadLettered++
}

func (o *recObserver) Batch(int) {}

func (o *recObserver) Apply(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.applies = append(o.applies, n)
}

func (o *recObserver) InFlight(delta int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inflight += delta
}

func (o *recObserver) Lag(n uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lag, o.sampled = n, true
}

func (o *recObserver) DeadLetterDepth(n uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dlq = n
}

func (o *recObserver) OldestUnacked(ages map[int]time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.oldest = ages
}

// oldestHeld returns the age of the oldest command held in any partition,
// as last sampled, and how many partitions the sample covered.
func (o *recObserver) oldestHeld() (time.Duration, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var most time.Duration
	for _, age := range o.oldest {
		most = max(most, age)
	}
	return most, len(o.oldest)
}

// gauges returns the in-flight count and the last lag and dead-letter
// depth sampled, and whether a lag was sampled at all.
func (o *recObserver) gauges() (inflight int, lag, dlq uint64, sampled bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.inflight, o.lag, o.dlq, o.sampled
}

// applySizes returns the carts of every call to the Applier so far.
func (o *recObserver) applySizes() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.applies)
}

// count reports CommandDone calls with outcome, for type typ or any type
// when typ is "".
func (o *recObserver) count(typ, outcome string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for k, v := range o.done {
		if (typ == "" || k[0] == typ) && k[1] == outcome {
			n += v
		}
	}
	return n
}

func (o *recObserver) counts() (redelivered, deadLettered int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.redelivered, o.deadLettered
}

func (o *recObserver) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprintf("done=%v redelivered=%d dead_lettered=%d inflight=%d lag=%d dlq=%d",
		o.done, o.redelivered, o.deadLettered, o.inflight, o.lag, o.dlq)
}

// recApplier is a consumer.Applier that records concurrency and calls, then
// optionally holds the command (hold) and passes it on (next; nil means
// succeed without touching any store).
type recApplier struct {
	next consumer.Applier
	hold func(ctx context.Context, cmd command.Command) error

	mu         sync.Mutex
	cur, max   int
	perCart    map[string]int
	perCartMax int
	calls      []command.Command
	nApplies   int
	started    chan struct{}
	startOnce  sync.Once
}

func newApplier(next consumer.Applier, hold func(context.Context, command.Command) error) *recApplier {
	return &recApplier{next: next, hold: hold, perCart: map[string]int{}, started: make(chan struct{})}
}

// ApplyCarts records the call as in flight and each cart's batch as in
// flight for its cart, holds each cart's commands in order (a hold error
// fails that cart's whole batch), then passes the other carts on.
func (a *recApplier) ApplyCarts(ctx context.Context, batches []cartcache.CartBatch) []cartcache.CartResult {
	a.mu.Lock()
	a.cur++
	a.nApplies++
	a.max = max(a.max, a.cur)
	for _, b := range batches {
		a.perCart[b.CartID]++
		a.perCartMax = max(a.perCartMax, a.perCart[b.CartID])
		a.calls = append(a.calls, b.Cmds...)
	}
	a.mu.Unlock()
	a.startOnce.Do(func() { close(a.started) })
	defer func() {
		a.mu.Lock()
		a.cur--
		for _, b := range batches {
			a.perCart[b.CartID]--
		}
		a.mu.Unlock()
	}()
	res := make([]cartcache.CartResult, len(batches))
	var pass []int
	for i, b := range batches {
		if a.hold != nil {
			for _, cmd := range b.Cmds {
				if err := a.hold(ctx, cmd); err != nil {
					res[i].Err = err
					break
				}
			}
		}
		if res[i].Err == nil {
			pass = append(pass, i)
		}
	}
	if a.next == nil {
		for _, i := range pass {
			res[i].Outcomes = make([]cartcache.Outcome, len(batches[i].Cmds))
		}
		return res
	}
	next := make([]cartcache.CartBatch, len(pass))
	for k, i := range pass {
		next[k] = batches[i]
	}
	for k, r := range a.next.ApplyCarts(ctx, next) {
		res[pass[k]] = r
	}
	return res
}

// applies returns how many calls the applier has had.
func (a *recApplier) applies() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nApplies
}

func (a *recApplier) stats() (maxInFlight, perCartMax int, calls []command.Command) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.max, a.perCartMax, append([]command.Command(nil), a.calls...)
}

// sleep waits d or until ctx ends, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitClosed waits for ch to close.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
	}
}

// requireNoGoroutines waits until no goroutine's stack mentions any of the
// given function prefixes: a targeted leak check usable while the embedded
// server and other connections are still running.
func requireNoGoroutines(t *testing.T, prefixes ...string) {
	t.Helper()
	var found string
	eventually(t, func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		found = ""
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, p := range prefixes {
				if strings.Contains(g, p) {
					found = g
					return false
				}
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "goroutine still running")
	require.Empty(t, found)
}

// Command builders.

func cacheCmd(cartID, cart string) command.Command {
	return command.Command{
		ID: "cache-" + cartID, Type: command.TypeCache, CartID: cartID,
		TenantID: "T1", StoreCode: "S1", TerminalNo: 1, Cart: json.RawMessage(cart),
	}
}

func addCmd(cmdID, cartID string, items ...command.Item) command.Command {
	return command.Command{ID: cmdID, Type: command.TypeAddItem, CartID: cartID, Items: items}
}

func deleteCmd(cmdID, cartID string) command.Command {
	return command.Command{ID: cmdID, Type: command.TypeDelete, CartID: cartID}
}

func item(code string, qty int, price, tax string) command.Item {
	p, err := money.Parse(price)
	if err != nil {
		panic(err) // test data only
	}
	return command.Item{ItemCode: code, Quantity: qty, UnitPrice: p, TaxCode: tax, Description: code}
}

// cartsOnDistinctLanes returns n distinct cart ids. The pool runs distinct
// carts in parallel whatever their ids, so any distinct ids will do; w and
// lanes are kept so that the tests read as before.
func cartsOnDistinctLanes(t *testing.T, _ *consumer.Worker, prefix string, _, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// eventually is require.Eventually polling in the calling goroutine, so the
// condition may itself use require, and nothing of it keeps running once
// the test has given up. It is bounded by timeout.
func eventually(t *testing.T, cond func() bool, timeout, interval time.Duration, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			require.FailNow(t, fmt.Sprintf("condition not satisfied within %s", timeout), msgAndArgs...)
		}
		<-ticker.C
	}
}
