package report

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// Output file names, in the directory `loadgen report -out` names; REPORT.md
// links the chart by ChartFile.
const (
	ReportFile  = "REPORT.md"
	ResultsFile = "results.json"
	ChartFile   = "latency.svg"
)

// Version is one component=version pair, shown in the report in the order
// given.
type Version struct{ Name, Value string }

// Input is everything the report is made from: the runs and drains read
// back from disk, and what the script knows about the run.
type Input struct {
	Runs []*loadkit.Run
	// Docs are the captured cart documents (for their sizes); nil when
	// none were given.
	Docs     *loadkit.Docs
	Versions []Version
	// Peer says whether the go-sdk peer ran, WatermillPeer whether the
	// Watermill peer did, DaprPubSubPeer whether the Dapr pub/sub peer did.
	Peer           Peer
	WatermillPeer  Peer
	DaprPubSubPeer Peer
	Backlog        []*BacklogRun
	// Tracing are the tracing rounds' runs (pooled and traced).
	Tracing []*loadkit.Run
	// Idle is what `loadgen idle` measured; nil when it did not run.
	Idle *IdleRun
	// WatermillProtocol is the Watermill peer's state transport;
	// PacedSamples the paced windows' sample target.
	WatermillProtocol string
	PacedSamples      int
	Settings          string
	Topology          string
	Notes             []string
	// PoolLimit and Concurrency are the shipped worker's defaults.
	PoolLimit   int
	Concurrency int
	Machine     Machine
	// Now is when the report was generated.
	Now time.Time
}

// Build computes results.json, REPORT.md and the chart from in.
func Build(in Input) (Results, []byte, []byte, error) {
	points := loadkit.Aggregate(in.Runs)
	users, satUsers := userCounts(in.Runs)
	cfg := runConfig(in, users, satUsers)
	sat, ratios, floors, rss15, rss15req := computeResults(points, users, satUsers, in.PoolLimit)
	versions := map[string]string{}
	for _, v := range in.Versions {
		versions[v.Name] = v.Value
	}
	wm, backlog, speed, maxRSS := computeSpeed(points, in.Backlog, sat, in.WatermillProtocol)
	speed = append(speed, daprPubSubFloors(points, backlog.Summary, satUsers)...)
	idle := idleOf(in.Idle)
	speed = append(speed, idleFloors(idle)...)
	res := Results{
		GeneratedAt: in.Now.Format(time.RFC3339), Machine: in.Machine, Versions: versions, Config: cfg,
		Peer: in.Peer, Points: points, Saturation: sat, WorkerRSSMiB15u: rss15, PerRequestRSSMiB15u: rss15req,
		Ratios: ratios, Floors: floors, Upstream: upstreamFigures(), Notes: in.Notes,
		SpeedFloors: speed, Figures: pacedFigures(points), StageBreakdown: stageBreakdown(points), PacedP99Spread: pacedSpreads(points, cfg.PacedSamplesTarget), Backlog: backlog,
		Watermill: wm, WatermillPeer: in.WatermillPeer, Tracing: computeTracing(in.Tracing),
		DaprPubSub: daprPubSubOf(points, backlog.Summary, satUsers), DaprPubSubPeer: in.DaprPubSubPeer,
		MaxWorkerRSSMiB: maxRSS, Idle: idle,
	}
	if res.Points == nil {
		res.Points = []loadkit.Point{}
	}
	md, err := renderMarkdown(res, in)
	if err != nil {
		return Results{}, nil, nil, err
	}
	return res, md, latencyChartSVG(res), nil
}

// runConfig reads how the run was configured back from its runs.
func runConfig(in Input, users []int, satUsers int) RunConfig {
	cfg := RunConfig{
		Users: users, SaturationUsers: satUsers, WorkerConcurrency: in.Concurrency, PoolLimit: in.PoolLimit,
		Settings: in.Settings, Topology: in.Topology,
	}
	rounds := map[int]bool{}
	for _, r := range in.Runs {
		if r.Scenario != loadkit.ScenarioPaced {
			// Paced windows are sized apart (PacedWindows).
			cfg.DurationS = max(cfg.DurationS, r.DurationS)
		}
		cfg.WarmupS = max(cfg.WarmupS, r.WarmupS)
		cfg.ThinkMS = max(cfg.ThinkMS, r.ThinkMS)
		rounds[r.Round] = true
	}
	cfg.Rounds = len(rounds)
	cfg.PacedSamplesTarget = in.PacedSamples
	if cfg.PacedSamplesTarget <= 0 {
		cfg.PacedSamplesTarget = DefaultPacedSamples
	}
	cfg.PacedWindows = pacedWindows(in.Runs)
	if in.Docs != nil {
		cfg.DocBytesFirst, cfg.DocBytesLast = in.Docs.Sizes()
		cfg.DocsSource = in.Docs.Source
	}
	return cfg
}

// pacedWindows is the measured window of each paced user count, per round.
func pacedWindows(runs []*loadkit.Run) []PacedWindow {
	w := map[int]float64{}
	for _, r := range runs {
		if r.Scenario == loadkit.ScenarioPaced {
			w[r.Users] = max(w[r.Users], r.DurationS)
		}
	}
	var out []PacedWindow
	for u, d := range w {
		out = append(out, PacedWindow{Users: u, WindowS: d})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Users < out[j].Users })
	return out
}

// userCounts returns the user counts below saturation and the saturation
// users (runs marked saturation, else 0).
func userCounts(runs []*loadkit.Run) ([]int, int) {
	sat := 0
	for _, r := range runs {
		if r.Saturation {
			sat = max(sat, r.Users)
		}
	}
	seen := map[int]bool{}
	var users []int
	for _, r := range runs {
		if r.Users != sat && !seen[r.Users] {
			seen[r.Users] = true
			users = append(users, r.Users)
		}
	}
	slices.Sort(users)
	return users, sat
}

// PeerOf says whether the peer of mode ran, from the script's status ("ok:
// <client>" or "not available: <reason>") and the runs, which name the
// client when it did.
func PeerOf(mode, status string, runs []*loadkit.Run) Peer {
	var client string
	for _, r := range runs {
		if r.Mode == mode {
			client = r.Client
			break
		}
	}
	switch {
	case strings.HasPrefix(status, "not available"):
		return Peer{Reason: status, Client: client}
	case client != "":
		return Peer{Available: true, Client: client}
	case status == "":
		return Peer{Reason: "not available: no " + mode + " runs"}
	default:
		return Peer{Reason: "not available: no " + mode + " runs (" + status + ")"}
	}
}

// WatermillPeerOf is PeerOf the Watermill peer, named by its status: its
// runs describe the whole chain (publisher, NATS, peer), the status the
// peer alone.
func WatermillPeerOf(status string, runs []*loadkit.Run) Peer {
	return namedByStatus(PeerOf(loadkit.ModeWatermill, status, runs), status)
}

// namedByStatus is p with the client its status ("ok: <client>") names,
// when it ran.
func namedByStatus(p Peer, status string) Peer {
	if c, ok := strings.CutPrefix(status, "ok: "); ok && p.Available {
		p.Client = c
	}
	return p
}
