// Package metrics holds the worker's Prometheus collectors in a registry of
// its own, so that tests and several workers in one process never share
// global state.
package metrics

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/budget"
	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/statepool"
)

// Metrics is every collector the worker exports.
type Metrics struct {
	reg           *prometheus.Registry
	commands      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	stages        *prometheus.HistogramVec
	stateRequests *prometheus.CounterVec
	dials         prometheus.Counter
	breakerState  prometheus.Gauge
	redeliveries  prometheus.Counter
	deadLetters   prometheus.Counter
	batchSize     prometheus.Histogram
	applyCarts    prometheus.Histogram
	inflight      prometheus.Gauge
	dlqDepth      prometheus.Gauge
	stateDuration *prometheus.HistogramVec
	buildInfo     *prometheus.GaugeVec
	pending       prometheus.Gauge
	oldest        *prometheus.GaugeVec
	ready         prometheus.GaugeFunc
	// readyCheck is the instance's readiness check, which the ready gauge
	// runs at every scrape.
	readyCheck atomic.Pointer[func() error]
	// held are the instance's budgets of WORKER_MAX_HELD_BYTES by share,
	// which the held gauges read at every scrape.
	held map[string]*atomic.Pointer[budget.Bytes]
}

// latencyBuckets are the buckets of a command's time, whole or by stage.
// Milliseconds matter here: the whole point is beating upstream's tail.
var latencyBuckets = []float64{.0005, .001, .002, .004, .008, .016, .032, .064, .128, .256, .512, 1, 2, 5}

// heldShares are the shares of WORKER_MAX_HELD_BYTES, as labelled.
var heldShares = []string{"commands", "carts"}

var _ consumer.Observer = (*Metrics)(nil)

// New registers the collectors, plus Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cartworker_commands_total",
			Help: "Command deliveries handled, by type and outcome (applied, duplicate, rejected, dead_letter, retry, breaker_open, not_ready, shutdown, fenced, invalid).",
		}, []string{"type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cartworker_command_duration_seconds",
			Help:    "Time to handle one command delivery, from pull to ack/nak/term.",
			Buckets: latencyBuckets,
		}, []string{"type"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cartworker_command_stage_seconds",
			Help:    "Time an applied command spent in each stage of its way, from stored to acked: fetch (stored by JetStream to fetched), queue (fetched to started by the pool), apply (started to its cart's read-modify-write returned), ack (applied to its event published and acked).",
			Buckets: latencyBuckets,
		}, []string{"stage"}),
		stateRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cartworker_state_requests_total",
			Help: "Dapr state API calls, by op (get, save, delete) and result: the HTTP status code, the gRPC code name, or timeout or error.",
		}, []string{"op", "code"}),
		dials: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cartworker_state_connections_opened_total",
			Help: "TCP connections dialled to Dapr; it stays at the pool size when pooling works.",
		}),
		breakerState: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cartworker_breaker_state",
			Help: "State of the Dapr state circuit breaker: 0 closed, 1 half-open, 2 open.",
		}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cartworker_redeliveries_total",
			Help: "Command deliveries after the first since their partition was last rewound.",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cartworker_dead_letters_total",
			Help: "Commands copied to the dead-letter stream.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cartworker_batch_size",
			Help: "Commands of one cart applied together in one read-modify-write (WORKER_BATCH_MAX bounds it).",
			// Powers of two up to the largest batch allowed by default.
			Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
		applyCarts: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cartworker_apply_carts",
			Help: "Carts applied together in one apply, one bulk read and one bulk save (WORKER_BATCH_CARTS bounds it).",
			// Powers of two up to the largest allowed.
			Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cartworker_inflight_commands",
			Help: "Commands this instance holds: pulled from NATS and not yet acked, nakked or terminated.",
		}),
		dlqDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cartworker_dead_letter_stream_messages",
			Help: "Messages in the dead-letter stream (CART_DLQ), sampled.",
		}),
		stateDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cartworker_state_request_duration_seconds",
			Help: "Duration of Dapr state API calls, by op (get, save, delete) and result code.",
			// A pooled local sidecar answers in about a millisecond; the top
			// buckets catch the timeouts.
			Buckets: []float64{.00025, .0005, .001, .002, .004, .008, .016, .032, .064, .128, .256, .512, 1, 2, 5},
		}, []string{"op", "code"}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cartworker_build_info",
			Help: "Always 1; its labels name the build (version, revision, goversion).",
		}, []string{"version", "revision", "goversion"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cartworker_consumer_pending_messages",
			Help: "Consumer lag: commands in the partitions this instance owns that no consumer has been delivered yet, sampled.",
		}),
	}
	m.oldest = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cartworker_partition_oldest_unacked_seconds",
		Help: "Age of the oldest command this instance holds unacknowledged, per partition it owns, sampled: a stuck cart holds up its partition.",
	}, []string{"partition"})
	m.ready = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cartworker_ready",
		Help: "1 while the instance is ready to apply commands, else 0 (the reason is in /readyz and the log).",
	}, func() float64 {
		if check := m.readyCheck.Load(); check != nil && (*check)() == nil {
			return 1
		}
		return 0
	})
	m.held = map[string]*atomic.Pointer[budget.Bytes]{}
	for _, share := range heldShares {
		b := &atomic.Pointer[budget.Bytes]{}
		m.held[share] = b
		labels := prometheus.Labels{"share": share}
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name:        "cartworker_held_bytes",
				Help:        "Bytes the instance holds now of WORKER_MAX_HELD_BYTES, by share: command bodies fetched and not yet settled, and cart documents being applied.",
				ConstLabels: labels,
			}, func() float64 { return float64(b.Load().Held()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name:        "cartworker_held_max_bytes",
				Help:        "The share of WORKER_MAX_HELD_BYTES the instance may hold; one command or cart larger than it is taken alone.",
				ConstLabels: labels,
			}, func() float64 { return float64(b.Load().Total()) }),
		)
	}
	m.reg.MustRegister(
		m.commands, m.duration, m.stages, m.stateRequests, m.dials, m.breakerState, m.redeliveries, m.deadLetters, m.batchSize, m.applyCarts,
		m.inflight, m.dlqDepth, m.stateDuration, m.buildInfo, m.pending, m.oldest, m.ready,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// CommandDone implements consumer.Observer.
func (m *Metrics) CommandDone(typ, outcome string, d time.Duration) {
	m.commands.WithLabelValues(typ, outcome).Inc()
	m.duration.WithLabelValues(typ).Observe(d.Seconds())
}

// Acked implements consumer.Observer: a stage whose start is unknown (a
// message that did not come through a fetch) is left out, and one that a
// clock between JetStream's server and this instance makes negative
// counts as 0.
func (m *Metrics) Acked(s consumer.Stages) {
	for _, st := range []struct {
		name       string
		from, till time.Time
	}{
		{"fetch", s.Stored, s.Fetched}, {"queue", s.Fetched, s.Started},
		{"apply", s.Started, s.Applied}, {"ack", s.Applied, s.Acked},
	} {
		if !st.from.IsZero() && !st.till.IsZero() {
			m.stages.WithLabelValues(st.name).Observe(max(0, st.till.Sub(st.from).Seconds()))
		}
	}
}

// Redelivered implements consumer.Observer.
func (m *Metrics) Redelivered() { m.redeliveries.Inc() }

// DeadLettered implements consumer.Observer.
func (m *Metrics) DeadLettered() { m.deadLetters.Inc() }

// Batch implements consumer.Observer.
func (m *Metrics) Batch(commands int) { m.batchSize.Observe(float64(commands)) }

// Apply implements consumer.Observer.
func (m *Metrics) Apply(carts int) { m.applyCarts.Observe(float64(carts)) }

// InFlight implements consumer.Observer.
func (m *Metrics) InFlight(delta int) { m.inflight.Add(float64(delta)) }

// Lag implements consumer.Observer.
func (m *Metrics) Lag(messages uint64) { m.pending.Set(float64(messages)) }

// DeadLetterDepth implements consumer.Observer.
func (m *Metrics) DeadLetterDepth(messages uint64) { m.dlqDepth.Set(float64(messages)) }

// OldestUnacked implements consumer.Observer: the partitions this instance
// no longer owns leave the gauge.
func (m *Metrics) OldestUnacked(ages map[int]time.Duration) {
	m.oldest.Reset()
	for p, age := range ages {
		m.oldest.WithLabelValues(strconv.Itoa(p)).Set(age.Seconds())
	}
}

// ReadyFrom makes cartworker_ready report check, the instance's readiness
// check (nil when ready), at every scrape; before it is called the gauge
// reads 0.
func (m *Metrics) ReadyFrom(check func() error) { m.readyCheck.Store(&check) }

// HeldFrom makes the held gauges read the budgets of the commands and the
// carts the instance holds (budget.Split).
func (m *Metrics) HeldFrom(commands, carts *budget.Bytes) {
	m.held["commands"].Store(commands)
	m.held["carts"].Store(carts)
}

// SetBuildInfo records the build's version and VCS revision, as read from
// the binary by runtime/debug; an empty version or revision is exported as
// "unknown".
func (m *Metrics) SetBuildInfo(version, revision, goVersion string) {
	m.buildInfo.Reset()
	m.buildInfo.WithLabelValues(cmp.Or(version, "unknown"), cmp.Or(revision, "unknown"), goVersion).Set(1)
}

// StateHooks feeds the state client's calls and dials into the metrics.
func (m *Metrics) StateHooks() statepool.Hooks {
	return statepool.Hooks{
		OnDial: m.dials.Inc,
		OnRequest: func(op, code string, d time.Duration) {
			m.stateRequests.WithLabelValues(op, code).Inc()
			m.stateDuration.WithLabelValues(op, code).Observe(d.Seconds())
		},
	}
}

// SetBreakerState records the breaker's state.
func (m *Metrics) SetBreakerState(s breaker.State) { m.breakerState.Set(float64(s)) }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry exposes the registry, for tests that read values back.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Names lists the names of the metrics the worker exports under its own
// prefix, for tests that check dashboards and alert rules against them.
func Names() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		New().reg.Describe(ch)
		close(ch)
	}()
	var names []string
	for d := range ch {
		// Desc has no accessor for its name; its String is stable:
		// Desc{fqName: "name", help: ...}.
		s := d.String()
		const key = `fqName: "`
		i := strings.Index(s, key)
		if i < 0 {
			continue
		}
		s = s[i+len(key):]
		name := s[:strings.IndexByte(s, '"')]
		if strings.HasPrefix(name, "cartworker_") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}
