package consumer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/cart"
	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/daprfake"
	"github.com/cartworker/cartworker/internal/statepool"
)

// TestClusterR3SurvivesLeaderKill runs two workers against a three-node
// JetStream cluster with R3 streams (and so R3 consumers), publishes a
// scan (several carts, each a cache then a run of add-items), and takes
// away the server leading CART_COMMANDS in the middle of it. Every command
// must be applied exactly once and in publish order per cart: nothing lost
// to the failover, nothing applied twice by a redelivery or a publish retry.
//
// Two ways to lose the leader:
//   - shutdown: Server.Shutdown, an orderly stop. It first asks every Raft
//     group the server leads to hand leadership to a peer, so the failover
//     is controlled and fast.
//   - crash: every connection of the server (clients and routes, which all
//     go through loopback proxies) is cut at once, as when its process is
//     killed: the server gets no chance to step down, and the others wait
//     out Raft's election timeout (4 to 9 s) before electing new leaders.
//
// In each, once the stream's leader is back, the leader of the leases
// bucket goes the same way: the partitions' owners renew or retake their
// leases on the new leader, rewinding, with order kept and no cart waiting
// longer than 10 s.
func TestClusterR3SurvivesLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node JetStream cluster")
	}
	t.Run("shutdown", func(t *testing.T) { testLeaderLoss(t, false) })
	t.Run("crash", func(t *testing.T) { testLeaderLoss(t, true) })
}

func testLeaderLoss(t *testing.T, crash bool) {
	const (
		carts      = 6
		perCart    = 40
		partitions = 4
		killAfter  = carts * perCart / 3 // acknowledged publishes before the kill
	)
	total := carts * (perCart + 1) // one cache per cart, then the add-items
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))

	// Cleanups run last-in first-out: workers stop, then connections close,
	// then the fake, the servers and their proxies go.
	cl := startJetStreamCluster(t, 3)
	servers := cl.servers
	fake := daprfake.New()
	t.Cleanup(fake.Close)
	allURLs := cl.urls()

	admin := connectCluster(t, "admin", allURLs, false)
	adminJS, err := jetstream.New(admin)
	require.NoError(t, err)

	cfg := consumer.Config{
		Replicas:        3,
		Partitions:      partitions,
		AckWait:         2 * time.Second,
		Concurrency:     4,
		RetryBaseDelay:  20 * time.Millisecond,
		RetryMaxDelay:   200 * time.Millisecond,
		ProbeInterval:   50 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
		Logger:          logger,
	}

	// Create the streams and consumers up front, as a worker's start-up
	// does, retrying while the new cluster settles its peers.
	{
		w, err := consumer.New(adminJS, admin, newClusterStateStack(t, fake), cfg)
		require.NoError(t, err)
		var lastErr error
		eventually(t, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, lastErr = w.Setup(ctx)
			return lastErr == nil
		}, 20*time.Second, 200*time.Millisecond, "setup on the cluster never succeeded")
	}

	// Both streams and the worker's consumers are R3.
	for _, name := range []string{command.StreamCommands, command.StreamDeadLetters} {
		info := clusterStreamInfo(t, adminJS, name, "")
		require.Equal(t, 3, info.Config.Replicas, "stream %s replicas", name)
		require.NotNil(t, info.Cluster, "stream %s has no cluster info", name)
		require.Len(t, info.Cluster.Replicas, 2, "stream %s: a leader and two followers", name)
	}
	for _, name := range []string{command.ConsumerName, command.PartitionConsumer(0), command.PartitionConsumer(partitions - 1)} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := adminJS.Consumer(ctx, command.StreamCommands, name)
		require.NoError(t, err, "consumer %s", name)
		ci, err := c.Info(ctx)
		cancel()
		require.NoError(t, err)
		if name == command.ConsumerName {
			require.Equal(t, 1, ci.Config.MaxAckPending, "consumer %s", name)
		}
		require.NotNil(t, ci.Cluster, "consumer %s has no cluster info", name)
		require.Len(t, ci.Cluster.Replicas, 2, "consumer %s inherits the stream's R3", name)
	}

	leader := clusterStreamInfo(t, adminJS, command.StreamCommands, "").Cluster.Leader
	require.NotEmpty(t, leader)
	var leaderURL string
	var others []string
	for i, s := range servers {
		if s.Name() == leader {
			leaderURL = cl.url(i)
		} else {
			others = append(others, cl.url(i))
		}
	}
	require.NotEmpty(t, leaderURL, "leader %s is none of the servers", leader)
	t.Logf("CART_COMMANDS leader before the kill: %s", leader)

	// Outcome events on a server that stays up, for information only: they
	// are core NATS, at most once, so the cart documents are what the test
	// checks.
	evConn := connectCluster(t, "events", others[:1], true)
	events := newEventLog(t, evConn)

	// One worker starts on the leader (it has to reconnect), the other on
	// a follower; each has its own state client as separate instances do.
	obs := newObserver()
	app := &timedApplier{}
	workerURLs := [][]string{
		append([]string{leaderURL}, others...),
		append(slices.Clone(others), leaderURL),
	}
	for i, urls := range workerURLs {
		nc := connectCluster(t, fmt.Sprintf("worker-%d", i), urls, true)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		wcfg := cfg
		wcfg.Observer = obs
		w, err := consumer.New(js, nc, app.wrap(newClusterStateStack(t, fake)), wcfg)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err, "worker %d Run", i)
			case <-time.After(30 * time.Second):
				t.Errorf("worker %d Run did not return within 30s of cancel", i)
			}
		})
	}

	// The scan: every cart is cached, then its items are scanned one at a
	// time, the carts interleaved as at several tills.
	sc := newTillScan(carts)
	cmds := sc.round(perCart, "I")
	require.Len(t, cmds, total)

	// A slower store keeps a backlog behind the publisher, so that every
	// partition has a command in flight when the server goes.
	fake.SetDelay(8 * time.Millisecond)

	pubNC := connectCluster(t, "publisher", append([]string{leaderURL}, others...), true)
	pubJS, err := jetstream.New(pubNC)
	require.NoError(t, err)
	pub := &publisher{js: pubJS}
	lc := &leaderKill{t: t, cl: cl, crash: crash, adminJS: adminJS, fake: fake, app: app, obs: obs, sc: sc,
		partitions: partitions, events: events}

	// Kill whoever leads the stream at the kill point, which is almost
	// always the server that led it before.
	killedAt, victim, watchJS := lc.round(pub, cmds, killAfter, command.StreamCommands)
	require.EqualValues(t, total, clusterStreamInfo(t, watchJS, command.StreamCommands, "").State.Msgs,
		"stored commands: a publish retry must not store a command twice")
	lc.report(lc.from, killedAt, pub)

	// Then the server leading the coordination buckets, once the first is
	// back: the partitions' leases fail over with it, and their owners
	// renew or retake them, rewinding, without a partition left unowned
	// for longer than 10 s.
	lc.cl.heal(victim, crash)
	lc.settle()
	t.Logf("%s is back and current, every partition owned", cl.servers[victim].Name())
	more := sc.round(perCart/2, "J")
	killedAt, _, _ = lc.round(pub, more, len(more)/3, "KV_"+command.LeasesBucket)
	worst := lc.report(lc.from, killedAt, pub)
	// A crash is detected by Raft's election timeout (4 to 9 s), for the
	// bucket and for every consumer the dead server led: that wait is
	// JetStream's, and the 10 s are counted from its end; an orderly
	// shutdown hands leadership over at once, and they count from the kill.
	since := killedAt
	if crash {
		since = lc.elected
	}
	require.LessOrEqual(t, worst-since.Sub(killedAt), 10*time.Second,
		"a cart waited longer than 10 s for its next command after the coordination leader went (%s after the kill)", worst)
}

// tillScan is the commands of several tills: each cart cached, then items
// scanned in rounds, the carts interleaved.
type tillScan struct {
	carts   []string
	want    map[string][]string // cart -> item codes in scan order
	wantIDs map[string][]string // cart -> command ids in publish order
}

func newTillScan(n int) *tillScan {
	sc := &tillScan{want: map[string][]string{}, wantIDs: map[string][]string{}}
	for c := range n {
		sc.carts = append(sc.carts, fmt.Sprintf("till%d", c))
	}
	return sc
}

// round returns the next n scans of every cart, prefixed by each cart's
// cache the first time, and records what each cart must then hold.
func (sc *tillScan) round(n int, prefix string) []command.Command {
	var cmds []command.Command
	for _, cart := range sc.carts {
		if len(sc.wantIDs[cart]) == 0 {
			cmds = append(cmds, cacheCmd(cart, ""))
			sc.wantIDs[cart] = append(sc.wantIDs[cart], cmds[len(cmds)-1].ID)
		}
	}
	for i := range n {
		for _, cart := range sc.carts {
			code := fmt.Sprintf("%s%03d", prefix, i)
			cmd := addCmd(fmt.Sprintf("%s-add-%s", cart, code), cart, item(code, 1, "100", "01"))
			cmds = append(cmds, cmd)
			sc.want[cart] = append(sc.want[cart], code)
			sc.wantIDs[cart] = append(sc.wantIDs[cart], cmd.ID)
		}
	}
	return cmds
}

// leaderKill runs rounds of a till scan against the cluster, each losing
// the leader of one stream midway, and checks what the carts hold.
type leaderKill struct {
	t          *testing.T
	cl         *jsCluster
	crash      bool
	adminJS    jetstream.JetStream
	fake       *daprfake.Fake
	app        *timedApplier
	obs        *recObserver
	sc         *tillScan
	partitions int
	events     *eventLog
	// from is when the last round began, and elected when the stream
	// whose leader it killed had a new one.
	from, elected time.Time
}

// round publishes cmds at a till's pace, loses the leader of stream after
// killAfter acknowledged publishes, and waits until every command is
// applied and every consumer settled; then it checks that each cart holds
// its items once, in scan order, each applied once, in publish order. It
// returns when the kill began, the server lost, and a connection to a
// survivor.
func (lc *leaderKill) round(pub *publisher, cmds []command.Command, killAfter int, stream string) (time.Time, int, jetstream.JetStream) {
	t := lc.t
	lc.from = time.Now()
	reached, killed := make(chan struct{}), make(chan struct{})
	pubDone := make(chan error, 1)
	pubCtx, stopPub := context.WithTimeout(context.Background(), 45*time.Second)
	defer stopPub()
	go func() {
		defer close(pubDone)
		for i, cmd := range cmds {
			if err := pub.publish(pubCtx, cmd); err != nil {
				pubDone <- err
				return
			}
			if i+1 == killAfter {
				// The rest come once the server is gone, so that they
				// meet the failover however long finding its leader
				// took.
				close(reached)
				select {
				case <-killed:
				case <-pubCtx.Done():
					pubDone <- pubCtx.Err()
					return
				}
			}
			// A till's pace, roughly: keeps the load going through the
			// failover instead of queueing it all before.
			if err := sleep(pubCtx, 3*time.Millisecond); err != nil {
				pubDone <- err
				return
			}
		}
	}()
	select {
	case <-reached:
	case err := <-pubDone:
		require.FailNow(t, "publisher stopped before the kill", "%v", err)
	case <-time.After(30 * time.Second):
		require.FailNow(t, "publisher too slow to reach the kill point")
	}
	leader := clusterStreamInfo(t, lc.adminJS, stream, "").Cluster.Leader
	victim := slices.IndexFunc(lc.cl.servers, func(s *server.Server) bool { return s.Name() == leader })
	require.GreaterOrEqual(t, victim, 0, "no server named %s", leader)
	pendingBefore, inFlightBefore, _, _ := clusterConsumerTotals(t, lc.adminJS)
	appliedBefore := lc.app.freshCount()
	// A survivor to ask who leads afterwards (admin may be reconnecting).
	watchJS, err := jetstream.New(connectCluster(t, "watch", []string{lc.cl.url((victim + 1) % len(lc.cl.servers))}, true))
	require.NoError(t, err)
	how := "shut down"
	killedAt := time.Now()
	if lc.crash {
		how = "cut off"
		lc.cl.isolate(victim)
	} else {
		lc.cl.servers[victim].Shutdown()
		lc.cl.servers[victim].WaitForShutdown()
	}
	close(killed)
	t.Logf("%s %s (%s leader) after %d acknowledged publishes, %d applied, %d pending, %d in flight, in %s",
		how, leader, stream, killAfter, appliedBefore, pendingBefore, inFlightBefore, time.Since(killedAt).Round(time.Millisecond))
	newLeader := clusterStreamInfo(t, watchJS, stream, leader).Cluster.Leader
	lc.elected = time.Now()
	t.Logf("%s led by %s %s after the kill began", stream, newLeader, time.Since(killedAt).Round(time.Millisecond))

	select {
	case err := <-pubDone:
		require.NoError(t, err, "publisher")
	case <-time.After(50 * time.Second):
		require.FailNow(t, "publisher did not finish")
	}
	lc.check(watchJS)
	return killedAt, victim, watchJS
}

// settle waits until the cluster has settled after a heal: the leases
// bucket and the command stream have a leader and every replica current,
// and every partition's lease is held.
func (lc *leaderKill) settle() {
	t := lc.t
	js, err := jetstream.New(connectCluster(t, "settle", lc.cl.urls(), false))
	require.NoError(t, err)
	eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, name := range []string{command.StreamCommands, "KV_" + command.LeasesBucket} {
			st, err := js.Stream(ctx, name)
			if err != nil {
				return false
			}
			info, err := st.Info(ctx)
			if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
				return false
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current {
					return false
				}
			}
		}
		kv, err := js.KeyValue(ctx, command.LeasesBucket)
		if err != nil {
			return false
		}
		keys, err := kv.Keys(ctx)
		return err == nil && len(keys) == lc.partitions
	}, 30*time.Second, 100*time.Millisecond, "the cluster never settled after the heal")
}

// check waits until every command published so far reached the store and
// every consumer settled, then checks the carts and the applies.
func (lc *leaderKill) check(watchJS jetstream.JetStream) {
	t, sc := lc.t, lc.sc
	eventually(t, func() bool {
		for _, cart := range sc.carts {
			raw, ok := lc.fake.Get(cart)
			if !ok || !strings.Contains(string(raw), sc.wantIDs[cart][len(sc.wantIDs[cart])-1]) {
				return false
			}
		}
		return true
	}, 25*time.Second, 20*time.Millisecond, "not every command reached the store: %d applied", lc.app.freshCount())

	// Every consumer settles: nothing pending, nothing unacknowledged.
	var settled string
	eventually(t, func() bool {
		pending, ackPending, redelivered, n := clusterConsumerTotals(t, watchJS)
		settled = fmt.Sprintf("%d consumers: pending %d, ack pending %d, redelivered %d", n, pending, ackPending, redelivered)
		return n == lc.partitions+1 && pending == 0 && ackPending == 0
	}, 20*time.Second, 50*time.Millisecond, "consumers never settled")
	t.Logf("after the failover: %s", settled)

	// Each cart holds its items once, in scan order, and its applied ids
	// in publish order...
	for _, cart := range sc.carts {
		require.Equal(t, sc.want[cart], clusterLineCodes(t, lc.fake, cart), "cart %s: line items", cart)
		require.Equal(t, sc.wantIDs[cart], clusterAppliedIDs(t, lc.fake, cart), "cart %s: applied command ids", cart)
	}
	// ...and each command was applied (not as a duplicate) exactly once, in
	// publish order per cart.
	fresh := map[string]int{}
	perCartOrder := map[string][]string{}
	for _, r := range lc.app.records() {
		if !r.dup {
			fresh[r.id]++
			perCartOrder[r.cart] = append(perCartOrder[r.cart], r.id)
		}
	}
	for _, cart := range sc.carts {
		for _, id := range sc.wantIDs[cart] {
			require.Equal(t, 1, fresh[id], "command %s applied %d times", id, fresh[id])
		}
		require.Equal(t, sc.wantIDs[cart], perCartOrder[cart], "cart %s: apply order", cart)
	}
	require.Zero(t, lc.obs.count("", consumer.LabelRejected), "rejections: %s", lc.obs)
	require.Zero(t, lc.obs.count("", consumer.LabelDeadLetter), "dead letters: %s", lc.obs)
	dlq := clusterStreamInfo(t, watchJS, command.StreamDeadLetters, "")
	require.Zero(t, dlq.State.Msgs, "dead letters stored")
}

// report logs how long the failover that began at killedAt, in a round
// that began at from, held things up, overall and for the worst cart (a
// till waiting for its next item to show), against the same cart's longest
// wait before the kill, and returns that worst wait.
func (lc *leaderKill) report(from, killedAt time.Time, pub *publisher) time.Duration {
	t := lc.t
	var firstAfter, lastBefore, prev time.Time
	var maxGap, cartGapBefore, cartGapAfter time.Duration
	var worstCart string
	lastOf := map[string]time.Time{}
	dups := 0
	for _, r := range lc.app.records() {
		if r.dup {
			dups++
			continue
		}
		if r.at.Before(from) {
			continue
		}
		if !prev.IsZero() {
			maxGap = max(maxGap, r.at.Sub(prev))
		}
		prev = r.at
		if r.at.Before(killedAt) {
			lastBefore = r.at
		} else if firstAfter.IsZero() {
			firstAfter = r.at
		}
		// A cart's waits count from its first apply of this round.
		if last, ok := lastOf[r.cart]; ok && !last.Before(from) {
			gap := r.at.Sub(last)
			switch {
			case r.at.Before(killedAt):
				cartGapBefore = max(cartGapBefore, gap)
			case gap > cartGapAfter:
				cartGapAfter, worstCart = gap, r.cart
			}
		}
		lastOf[r.cart] = r.at
	}
	require.False(t, firstAfter.IsZero(), "nothing applied after the kill")
	redelivered, _ := lc.obs.counts()
	t.Logf("stall: first command applied %s after the kill (last one before it %s before); longest gap between any two applies %s",
		firstAfter.Sub(killedAt).Round(time.Millisecond), killedAt.Sub(lastBefore).Round(time.Millisecond), maxGap.Round(time.Millisecond))
	t.Logf("stall per cart: worst wait for a cart's next command from the kill on %s (cart %s), before the kill %s",
		cartGapAfter.Round(time.Millisecond), worstCart, cartGapBefore.Round(time.Millisecond))
	t.Logf("publisher: longest publish %s, first ack after the kill %s after it, %d retried attempts (%v), %d acks saying duplicate",
		pub.maxLatency().Round(time.Millisecond), pub.firstAckAfter(killedAt).Round(time.Millisecond),
		pub.retries.Load(), pub.errorKinds(), pub.dupAcks.Load())
	t.Logf("workers: %d redeliveries, %d applies recognised as duplicates, %d outcome events seen (core NATS, at most once); %s",
		redelivered, dups, len(lc.events.all()), lc.obs)
	return cartGapAfter
}

// jsCluster is n in-process servers with JetStream, clustered over
// loopback. Every connection to a server, from a client or from another
// server's route, goes through a proxy of the test, so that isolate can cut
// a server off as a crash would.
type jsCluster struct {
	t       *testing.T
	servers []*server.Server
	opts    []*server.Options
	clients []*tcpProxy   // clients[i] fronts servers[i]'s client port
	routes  [][]*tcpProxy // routes[i][j] carries the routes i dials to j
}

// startJetStreamCluster starts the cluster and waits until it has a meta
// leader that knows every peer. Each server is shut down at cleanup (a
// second Shutdown of a server the test stopped is harmless).
func startJetStreamCluster(t *testing.T, n int) *jsCluster {
	t.Helper()
	cl := &jsCluster{t: t, routes: make([][]*tcpProxy, n), opts: make([]*server.Options, n)}
	// The routes must be known up front: a JetStream cluster sizes its
	// meta group from them. Reserve the cluster ports, then free them for
	// the servers; the proxies in front of them can listen already.
	ports := make([]int, n)
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ports[i] = l.Addr().(*net.TCPAddr).Port
		require.NoError(t, l.Close())
	}
	for i := range n {
		cl.routes[i] = make([]*tcpProxy, n)
		for j := range n {
			if i != j {
				cl.routes[i][j] = startProxy(t, fmt.Sprintf("127.0.0.1:%d", ports[j]))
			}
		}
	}
	cl.servers = make([]*server.Server, n)
	for i := range n {
		var routes []string
		for j := range n {
			if i != j {
				routes = append(routes, "nats-route://"+cl.routes[i][j].addr())
			}
		}
		o := &server.Options{
			ServerName: fmt.Sprintf("cw-%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name: "cartworker-test",
				Host: "127.0.0.1",
				Port: ports[i],
				// Gossip must not lead a server to dial another directly,
				// around the proxies: advertise an address that refuses.
				Advertise: "127.0.0.1:1",
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
		cl.opts[i] = o
		s, err := server.NewServer(o)
		require.NoError(t, err)
		cl.servers[i] = s
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		s.Start()
	}
	for _, s := range cl.servers {
		require.True(t, s.ReadyForConnections(10*time.Second), "server %s did not start", s.Name())
		cl.clients = append(cl.clients, startProxy(t, s.Addr().String()))
	}
	start := time.Now()
	eventually(t, func() bool {
		leaders := 0
		for _, s := range cl.servers {
			if !s.JetStreamIsCurrent() {
				return false
			}
			if s.JetStreamIsLeader() {
				leaders++
				if len(s.JetStreamClusterPeers()) != n {
					return false
				}
			}
		}
		return leaders == 1
	}, 20*time.Second, 20*time.Millisecond, "the JetStream cluster never elected a meta leader knowing %d peers", n)
	t.Logf("JetStream cluster of %d ready in %s", n, time.Since(start).Round(time.Millisecond))
	return cl
}

// url is the client URL of server i, through its proxy.
func (c *jsCluster) url(i int) string { return "nats://" + c.clients[i].addr() }

func (c *jsCluster) urls() []string {
	out := make([]string, len(c.servers))
	for i := range c.servers {
		out[i] = c.url(i)
	}
	return out
}

// isolate cuts every connection of server i and refuses new ones: its
// clients and peers see their connections drop, as when its process dies,
// while the server itself gets no chance to step down.
func (c *jsCluster) isolate(i int) {
	c.clients[i].cut()
	for j := range c.servers {
		if j != i {
			c.routes[i][j].cut()
			c.routes[j][i].cut()
		}
	}
}

// heal undoes isolate(i), or restarts server i on its store after a
// shutdown, and waits until every server is current again.
func (c *jsCluster) heal(i int, crashed bool) {
	t := c.t
	if crashed {
		c.clients[i].restore(t)
		for j := range c.servers {
			if j != i {
				c.routes[i][j].restore(t)
				c.routes[j][i].restore(t)
			}
		}
	} else {
		o := *c.opts[i]
		// The client proxy forwards to the old port.
		_, port, err := net.SplitHostPort(c.clients[i].target)
		require.NoError(t, err)
		o.Port, err = strconv.Atoi(port)
		require.NoError(t, err)
		s, err := server.NewServer(&o)
		require.NoError(t, err)
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		s.Start()
		require.True(t, s.ReadyForConnections(10*time.Second), "server %s did not restart", s.Name())
		c.servers[i] = s
	}
	eventually(t, func() bool {
		for _, s := range c.servers {
			if !s.JetStreamIsCurrent() {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "server %d never caught up", i)
}

// tcpProxy forwards loopback connections to target until cut.
type tcpProxy struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	down  bool
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &tcpProxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.l.Addr().String()
}

func (p *tcpProxy) accept() {
	p.mu.Lock()
	l := p.l
	p.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.forward(c) })
	}
}

func (p *tcpProxy) forward(c net.Conn) {
	u, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, u) {
		return
	}
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = c.Close()
			_ = u.Close()
		})
	}
	var copies sync.WaitGroup
	copies.Go(func() { _, _ = io.Copy(u, c); closeBoth() })
	copies.Go(func() { _, _ = io.Copy(c, u); closeBoth() })
	copies.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

// track registers a forwarded pair, or closes it when the proxy is cut.
func (p *tcpProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// cut closes the listener and every forwarded connection.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return
	}
	p.down = true
	_ = p.l.Close()
	for c := range p.conns {
		_ = c.Close()
	}
}

// restore listens again on the address cut closed.
func (p *tcpProxy) restore(t *testing.T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.down {
		return
	}
	l, err := net.Listen("tcp", p.l.Addr().String())
	require.NoError(t, err, "proxy %s: listen again", p.l.Addr())
	p.l, p.down = l, false
	p.wg.Go(p.accept)
}

// connectCluster connects to the first reachable of urls (in that order
// when ordered) with the worker's reconnect behaviour, and closes the
// connection at cleanup.
func connectCluster(t *testing.T, name string, urls []string, ordered bool) *nats.Conn {
	t.Helper()
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		// The test's cluster only: do not learn other URLs from INFO.
		nats.IgnoreDiscoveredServers(),
	}
	if ordered {
		opts = append(opts, nats.DontRandomize())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// newClusterStateStack is the state stack newEnv builds (statepool client
// behind the breaker, cartcache service) on its own client, as one
// instance has.
func newClusterStateStack(t *testing.T, fake *daprfake.Fake) *cartcache.Carts {
	t.Helper()
	scfg := statepool.Config{Protocol: statepool.ProtocolHTTP, Endpoint: fake.URL()}
	client, err := statepool.New(scfg)
	require.NoError(t, err)
	t.Cleanup(client.Close)
	store, err := breaker.New(client, breaker.Settings{})
	require.NoError(t, err)
	return cartcache.New(store, cartcache.Config{})
}

// clusterStreamInfo returns the stream's info once it has a leader other
// than notLeader (when not empty).
func clusterStreamInfo(t *testing.T, js jetstream.JetStream, name, notLeader string) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	var lastErr error
	// A request can land mid-election; ask again rather than fail.
	eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := js.Stream(ctx, name)
		if err == nil {
			info, err = st.Info(ctx)
		}
		lastErr = err
		return err == nil && info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != notLeader
	}, 20*time.Second, 20*time.Millisecond, "stream %s: no leader (other than %q); last error %v", name, notLeader, lastErr)
	return info
}

// clusterConsumerTotals sums the command stream's consumers' state.
func clusterConsumerTotals(t *testing.T, js jetstream.JetStream) (pending uint64, ackPending, redelivered, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, command.StreamCommands)
	if err != nil {
		return 0, -1, 0, 0
	}
	lister := st.ListConsumers(ctx)
	for info := range lister.Info() {
		n++
		pending += info.NumPending
		ackPending += info.NumAckPending
		redelivered += info.NumRedelivered
	}
	if lister.Err() != nil {
		return 0, -1, 0, 0
	}
	return pending, ackPending, redelivered, n
}

func clusterCart(t *testing.T, fake *daprfake.Fake, id string) map[string]any {
	t.Helper()
	raw, ok := fake.Get(id)
	require.True(t, ok, "cart %s not stored", id)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

func clusterLineCodes(t *testing.T, fake *daprfake.Fake, id string) []string {
	t.Helper()
	lines, _ := clusterCart(t, fake, id)["line_items"].([]any)
	codes := make([]string, 0, len(lines))
	for i, l := range lines {
		m := l.(map[string]any)
		require.EqualValues(t, i+1, m["line_no"], "cart %s line %d", id, i)
		codes = append(codes, m["item_code"].(string))
	}
	return codes
}

func clusterAppliedIDs(t *testing.T, fake *daprfake.Fake, id string) []string {
	t.Helper()
	ids, _ := clusterCart(t, fake, id)[cart.AppliedIDsField].([]any)
	out := make([]string, 0, len(ids))
	for _, v := range ids {
		out = append(out, v.(string))
	}
	return out
}

// timedApplier records when each command was applied and whether the
// store recognised it as applied before. Several workers share one.
type timedApplier struct {
	mu   sync.Mutex
	recs []applyRecord
}

type applyRecord struct {
	at       time.Time
	cart, id string
	dup      bool
}

type timedApp struct {
	rec  *timedApplier
	next consumer.Applier
}

func (a *timedApplier) wrap(next consumer.Applier) consumer.Applier {
	return timedApp{rec: a, next: next}
}

func (a timedApp) ApplyCarts(ctx context.Context, batches []cartcache.CartBatch) []cartcache.CartResult {
	res := a.next.ApplyCarts(ctx, batches)
	now := time.Now()
	a.rec.mu.Lock()
	for i, b := range batches {
		if res[i].Err != nil {
			continue
		}
		for j, cmd := range b.Cmds {
			if res[i].Outcomes[j].Err == nil {
				a.rec.recs = append(a.rec.recs, applyRecord{at: now, cart: cmd.CartID, id: cmd.ID, dup: res[i].Outcomes[j].Duplicate})
			}
		}
	}
	a.rec.mu.Unlock()
	return res
}

func (a *timedApplier) records() []applyRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.recs)
}

func (a *timedApplier) freshCount() int {
	n := 0
	for _, r := range a.records() {
		if !r.dup {
			n++
		}
	}
	return n
}

// publisher publishes commands to JetStream one at a time, each waiting
// for its PubAck. A publish that fails while the cluster elects a leader
// (no responders, a timeout, the connection moving to another server) is
// sent again with the same Nats-Msg-Id, so that the stream's duplicate
// window drops the copy if the first attempt was stored after all. Retries
// are bounded by perCommand.
type publisher struct {
	js jetstream.JetStream

	retries atomic.Int64
	dupAcks atomic.Int64

	mu      sync.Mutex
	errs    map[string]int
	maxLat  time.Duration
	ackedAt []time.Time
}

const perCommand = 20 * time.Second

func (p *publisher) publish(ctx context.Context, cmd command.Command) error {
	body, err := command.Marshal(cmd)
	if err != nil {
		return err
	}
	start := time.Now()
	deadline := start.Add(perCommand)
	for attempt := 0; ; attempt++ {
		m := nats.NewMsg(subjects.Command(cmd.CartID, cmd.Type))
		m.Data = body
		m.Header.Set(command.HeaderMsgID, cmd.ID)
		actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		ack, err := p.js.PublishMsg(actx, m)
		cancel()
		if err == nil {
			now := time.Now()
			p.mu.Lock()
			p.maxLat = max(p.maxLat, now.Sub(start))
			p.ackedAt = append(p.ackedAt, now)
			p.mu.Unlock()
			if ack.Duplicate {
				p.dupAcks.Add(1)
			}
			if ack.Stream != command.StreamCommands {
				return fmt.Errorf("command %s stored in %s", cmd.ID, ack.Stream)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("command %s: %w (last: %v)", cmd.ID, ctx.Err(), err)
		}
		if !retryablePublish(err) {
			return fmt.Errorf("command %s: %w", cmd.ID, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("command %s: not stored within %s: %w", cmd.ID, perCommand, err)
		}
		p.retries.Add(1)
		p.mu.Lock()
		if p.errs == nil {
			p.errs = map[string]int{}
		}
		p.errs[publishErrKind(err)]++
		p.mu.Unlock()
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// retryablePublish reports errors a failover produces, after which the
// command may or may not have been stored.
func retryablePublish(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		// "JetStream system temporarily unavailable" and similar 503s.
		strings.Contains(err.Error(), "unavailable") ||
		// A retry while the first attempt is still being proposed (its
		// leader went): the server answers once it knows the outcome.
		isAPIError(err, jsErrDuplicateInProcess)
}

// jsErrDuplicateInProcess is nats-server's error code for a publish whose
// Nats-Msg-Id an earlier attempt is still storing.
const jsErrDuplicateInProcess = 10158

// isAPIError reports whether err is a JetStream API error with that code.
func isAPIError(err error, code jetstream.ErrorCode) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == code
}

func publishErrKind(err error) string {
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		return "no responders"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "timeout"
	default:
		return err.Error()
	}
}

func (p *publisher) maxLatency() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxLat
}

func (p *publisher) firstAckAfter(t0 time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, at := range p.ackedAt {
		if at.After(t0) {
			return at.Sub(t0)
		}
	}
	return -1
}

func (p *publisher) errorKinds() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.errs {
		out[k] = v
	}
	return out
}
