package report

import (
	"math"
	"slices"

	"github.com/cartworker/cartworker/internal/statepool"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// Results is bench/results.json.
type Results struct {
	GeneratedAt string            `json:"generated_at"`
	Machine     Machine           `json:"machine"`
	Versions    map[string]string `json:"versions"`
	Config      RunConfig         `json:"config"`
	Peer        Peer              `json:"peer"`
	// Points holds every mode, scenario, user count and command type.
	Points     []loadkit.Point `json:"points"`
	Saturation Saturation      `json:"saturation"`
	// WorkerRSSMiB15u is the pooled worker's largest RSS during the
	// 15-user points; null when there were none.
	WorkerRSSMiB15u *float64 `json:"worker_rss_mib_15u"`
	// PerRequestRSSMiB15u is the same for the per-request worker.
	PerRequestRSSMiB15u *float64 `json:"per_request_rss_mib_15u"`
	Ratios              Ratios   `json:"ratios"`
	Floors              []Floor  `json:"floors"`
	// SpeedFloors are the floors of "faster than a direct Dapr client",
	// each from medians over rounds of this run.
	SpeedFloors []Floor `json:"speed_floors"`
	// Figures are shown beside the floors without a verdict (the paced
	// p99 against the ceiling's, a floor no more).
	Figures []Figure `json:"figures"`
	// StageBreakdown is where an applied command's time goes in the worker,
	// stage by stage, at every worker point that has the figures.
	StageBreakdown []StageRow `json:"stage_breakdown"`
	// PacedP99Spread is how much each paced point's add-item p99 moves
	// between rounds.
	PacedP99Spread []P99Spread `json:"paced_p99_spread"`
	// Backlog holds the backlog drains: per round and summarised.
	Backlog Backlog `json:"backlog"`
	// MaxWorkerRSSMiB is the largest RSS of any cartworker process over the
	// whole run, backlog drains included (the peers' and the direct
	// clients' are not counted).
	MaxWorkerRSSMiB *float64 `json:"max_worker_rss_mib"`
	// Idle is the pooled worker's and its NATS server's CPU with no
	// commands sent; nil when it was not measured.
	Idle *Idle `json:"idle"`
	// Watermill is the Watermill peer at saturation against the worker on
	// the same transport; WatermillPeer says whether it ran.
	// Tracing is the cost of span export at saturation; nil when the
	// tracing rounds did not run.
	Tracing       *Tracing     `json:"tracing,omitempty"`
	Watermill     WatermillSat `json:"watermill"`
	WatermillPeer Peer         `json:"watermill_peer"`
	// DaprPubSub is the Dapr pub/sub peer without and with bulk subscribe
	// against the worker as shipped; DaprPubSubPeer says whether it ran.
	DaprPubSub     DaprPubSub `json:"dapr_pubsub"`
	DaprPubSubPeer Peer       `json:"dapr_pubsub_peer"`
	Upstream       Upstream   `json:"upstream"`
	Notes          []string   `json:"notes,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	Cores     int     `json:"cores"`
	CPUModel  string  `json:"cpu_model"`
	MemoryGiB float64 `json:"memory_gib"`
	Kernel    string  `json:"kernel"`
	GoVersion string  `json:"go_version"`
}

// RunConfig is how the run was configured, as read back from the runs.
type RunConfig struct {
	DurationS         float64 `json:"duration_s"`
	WarmupS           float64 `json:"warmup_s"`
	ThinkMS           float64 `json:"think_ms"`
	Rounds            int     `json:"rounds"`
	Users             []int   `json:"users"`
	SaturationUsers   int     `json:"saturation_users"`
	WorkerConcurrency int     `json:"worker_concurrency"`
	PoolLimit         int     `json:"pool_limit"`
	// PacedSamplesTarget is the add-item samples each paced point was
	// sized for, and PacedWindows each paced user count's window per
	// round.
	PacedSamplesTarget int           `json:"paced_samples_target,omitempty"`
	PacedWindows       []PacedWindow `json:"paced_windows,omitempty"`
	DocBytesFirst      int           `json:"doc_bytes_first,omitempty"`
	DocBytesLast       int           `json:"doc_bytes_last,omitempty"`
	DocsSource         string        `json:"docs_source,omitempty"`
	Settings           string        `json:"settings,omitempty"`
	Topology           string        `json:"topology,omitempty"`
}

// PacedWindow is the measured window of one round of a paced point.
type PacedWindow struct {
	Users   int     `json:"users"`
	WindowS float64 `json:"window_s"`
}

// Peer says whether a peer (go-sdk, Watermill, Dapr pub/sub) ran.
type Peer struct {
	Available bool   `json:"available"`
	Client    string `json:"client,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Saturation is the closed-loop point at the highest user count.
type Saturation struct {
	Users                 int      `json:"users"`
	WorkerAddItemPerS     *float64 `json:"worker_add_item_per_s"`
	PerRequestAddItemPerS *float64 `json:"per_request_add_item_per_s"`
	CeilingAddItemPerS    *float64 `json:"ceiling_add_item_per_s"`
	GoSDKAddItemPerS      *float64 `json:"go_sdk_add_item_per_s"`
	WorkerGRPCAddItemPerS *float64 `json:"worker_grpc_add_item_per_s"`
	WorkerHTTPAddItemPerS *float64 `json:"worker_http_add_item_per_s"`
	WatermillAddItemPerS  *float64 `json:"watermill_add_item_per_s"`
	// DaprPubSubAddItemPerS is the Dapr pub/sub peer's, the better of its
	// modes (without and with bulk subscribe).
	DaprPubSubAddItemPerS   *float64 `json:"dapr_pubsub_add_item_per_s"`
	WorkerOverPerRequest    *float64 `json:"worker_over_per_request"`
	WorkerOverCeiling       *float64 `json:"worker_over_ceiling"`
	WorkerAddItemP99MS      *float64 `json:"worker_add_item_p99_ms"`
	PerRequestAddItemP99MS  *float64 `json:"per_request_add_item_p99_ms"`
	WorkerCPUPct            *float64 `json:"worker_cpu_pct,omitempty"`
	PerRequestWorkerCPUPct  *float64 `json:"per_request_worker_cpu_pct,omitempty"`
	WorkerCommandsPerS      *float64 `json:"worker_commands_per_s,omitempty"`
	PerRequestCommandsPerS  *float64 `json:"per_request_commands_per_s,omitempty"`
	CeilingCommandsPerS     *float64 `json:"ceiling_commands_per_s,omitempty"`
	WorkerPerCommandCPUMS   *float64 `json:"worker_cpu_ms_per_command,omitempty"`
	PerRequestCPUMSPerComm  *float64 `json:"per_request_cpu_ms_per_command,omitempty"`
	SaturationHostBusyPct   *float64 `json:"host_busy_pct,omitempty"`
	SaturationLoadgenCPUPct *float64 `json:"loadgen_cpu_pct,omitempty"`
	// Transport is the state transport of the worker as shipped (the
	// pooled mode, which sets no WORKER_STATE_PROTOCOL): the default of
	// the statepool package the worker was built from, grpc or http.
	Transport string `json:"transport"`
}

// Ratios are the comparisons the issue asks for.
type Ratios struct {
	// PooledOverPerRequest: add-item p99 and throughput, pooled divided by
	// per-request, per scenario and user count.
	PooledOverPerRequest []ModeRatio `json:"pooled_over_per_request"`
	// WorkerSaturationOverCeiling: the pooled worker's saturation add-item
	// throughput divided by the ceiling's at the same concurrency.
	WorkerSaturationOverCeiling *float64 `json:"worker_saturation_over_ceiling"`
	// HTTPOverGoSDK: the ceiling's (our pooled HTTP client) add-item p50
	// and p99 divided by the go-sdk peer's, per closed-loop user count.
	HTTPOverGoSDK []ClientRatio `json:"http_over_go_sdk"`
	// PacedPooledOverCeiling: the pooled worker's paced add-item p50 and
	// p99 divided by the ceiling's at the same pacing, per user count. At
	// that light load the bare state calls' own tail bounds the worker's.
	PacedPooledOverCeiling []ClientRatio `json:"paced_pooled_over_ceiling,omitempty"`
}

// ModeRatio compares pooled with per-request at one point.
type ModeRatio struct {
	Scenario        string   `json:"scenario"`
	Users           int      `json:"users"`
	P99Ratio        *float64 `json:"p99_ratio"`
	ThroughputRatio *float64 `json:"throughput_ratio"`
}

// ClientRatio compares our HTTP client with the go-sdk at one point.
type ClientRatio struct {
	Users    int      `json:"users"`
	P50Ratio *float64 `json:"p50_ratio"`
	P99Ratio *float64 `json:"p99_ratio"`
}

// Floor is one of the issue's acceptance floors.
type Floor struct {
	Name   string   `json:"name"`
	Value  *float64 `json:"value"`
	Limit  float64  `json:"limit"`
	Unit   string   `json:"unit"`
	Pass   *bool    `json:"pass"`
	Detail string   `json:"detail,omitempty"`
	// Verdict is "pass", "FAIL" or "MISS" (a speed floor not reached), or
	// "not measured".
	Verdict string `json:"verdict"`
	// Rounds is the value of each round, where the floor compares
	// rounds.
	Rounds []float64 `json:"rounds,omitempty"`
	// blocker fails a floor whatever its value (a drain whose totals
	// were wrong).
	blocker string
}

// Upstream holds the figures of the Python service, for comparison.
type Upstream struct {
	Users        int     `json:"users"`
	BeforeP50MS  float64 `json:"before_p50_ms"`
	BeforeP99MS  float64 `json:"before_p99_ms"`
	BeforeReqS   float64 `json:"before_req_per_s"`
	AfterP50MS   float64 `json:"after_p50_ms"`
	AfterP99MS   float64 `json:"after_p99_ms"`
	AfterReqS    float64 `json:"after_req_per_s"`
	ThinkS       float64 `json:"think_s"`
	Source       string  `json:"source"`
	BeforeOneP50 float64 `json:"before_1u_p50_ms"`
	BeforeOneP99 float64 `json:"before_1u_p99_ms"`
}

// upstreamFigures are the Python service's published figures.
func upstreamFigures() Upstream {
	return Upstream{
		Users: 15, BeforeP50MS: 67, BeforeP99MS: 4200, BeforeReqS: 3.45,
		AfterP50MS: 69, AfterP99MS: 680, AfterReqS: 2.63, ThinkS: 3,
		BeforeOneP50: 63, BeforeOneP99: 1300,
		Source: "kugelpos-backend's locust 'add item' runs on one machine; before = a new session per request, after = session and gRPC channel pooling, 10-minute runs",
	}
}

// Floors of the issue.
const (
	floorPacedP99MS        = 10.0
	floorPooledOverPerReq  = 1.5
	floorPooledOverCeiling = 0.60
	floorRSSMiB            = 64.0
)

func f64(v float64) *float64 { return &v }

func ratio(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 || math.IsNaN(*a) || math.IsNaN(*b) {
		return nil
	}
	return f64(*a / *b)
}

func boolp(v bool) *bool { return &v }

// field reads one figure of a point, nil when the point is missing.
func field(points []loadkit.Point, mode, scenario string, users int, typ string, get func(loadkit.Point) float64) *float64 {
	p, ok := loadkit.Find(points, mode, scenario, users, typ)
	if !ok || p.Count == 0 {
		return nil
	}
	return f64(get(p))
}

func p50(p loadkit.Point) float64 { return p.P50MS }
func p99(p loadkit.Point) float64 { return p.P99MS }
func thr(p loadkit.Point) float64 { return p.ThroughputPerS }

// workerCPU and workerRSS read a point's consumer process figures.
func workerCPU(p loadkit.Point) float64 { return p.WorkerCPUPct }
func workerRSS(p loadkit.Point) float64 { return p.WorkerRSSMiB }

// computeResults derives the saturation point, ratios and floors from the
// points, and the pooled and per-request workers' largest RSS at 15 users.
func computeResults(points []loadkit.Point, users []int, satUsers, poolLimit int) (Saturation, Ratios, []Floor, *float64, *float64) {
	sat := saturationOf(points, satUsers)
	r := Ratios{
		PooledOverPerRequest:        pooledOverPerRequest(points, users, satUsers),
		PacedPooledOverCeiling:      clientRatios(points, loadkit.ScenarioPaced, users, loadkit.ModePooled, loadkit.ModeCeiling, true),
		WorkerSaturationOverCeiling: sat.WorkerOverCeiling,
		HTTPOverGoSDK:               clientRatios(points, loadkit.ScenarioClosed, withSaturation(users, satUsers), loadkit.ModeCeiling, loadkit.ModeGoSDK, false),
	}
	rss15 := maxOver(points, loadkit.ModePooled, 15, workerRSS)
	rss15req := maxOver(points, loadkit.ModePerRequest, 15, workerRSS)
	return sat, r, issueFloors(points, sat, rss15, poolLimit), rss15, rss15req
}

// saturationOf reads the closed-loop point at satUsers of every mode; only
// the transport is known without one.
func saturationOf(points []loadkit.Point, satUsers int) Saturation {
	sat := Saturation{Users: satUsers, Transport: string(statepool.DefaultProtocol)}
	if satUsers <= 0 {
		return sat
	}
	cl, add := loadkit.ScenarioClosed, loadkit.TypeAddItem
	sat.WorkerAddItemPerS = field(points, loadkit.ModePooled, cl, satUsers, add, thr)
	sat.PerRequestAddItemPerS = field(points, loadkit.ModePerRequest, cl, satUsers, add, thr)
	sat.CeilingAddItemPerS = field(points, loadkit.ModeCeiling, cl, satUsers, add, thr)
	sat.GoSDKAddItemPerS = field(points, loadkit.ModeGoSDK, cl, satUsers, add, thr)
	sat.WorkerGRPCAddItemPerS = field(points, loadkit.ModeWorkerGRPC, cl, satUsers, add, thr)
	sat.WorkerHTTPAddItemPerS = field(points, loadkit.ModeWorkerHTTP, cl, satUsers, add, thr)
	sat.WatermillAddItemPerS = field(points, loadkit.ModeWatermill, cl, satUsers, add, thr)
	_, sat.DaprPubSubAddItemPerS = bestDaprPubSubSat(points, satUsers)
	sat.WorkerOverPerRequest = ratio(sat.WorkerAddItemPerS, sat.PerRequestAddItemPerS)
	sat.WorkerOverCeiling = ratio(sat.WorkerAddItemPerS, sat.CeilingAddItemPerS)
	sat.WorkerAddItemP99MS = field(points, loadkit.ModePooled, cl, satUsers, add, p99)
	sat.PerRequestAddItemP99MS = field(points, loadkit.ModePerRequest, cl, satUsers, add, p99)
	sat.WorkerCPUPct = field(points, loadkit.ModePooled, cl, satUsers, add, workerCPU)
	sat.PerRequestWorkerCPUPct = field(points, loadkit.ModePerRequest, cl, satUsers, add, workerCPU)
	sat.SaturationHostBusyPct = field(points, loadkit.ModePooled, cl, satUsers, add, func(p loadkit.Point) float64 { return p.HostBusyPct })
	sat.SaturationLoadgenCPUPct = field(points, loadkit.ModePooled, cl, satUsers, add, func(p loadkit.Point) float64 { return p.LoadgenCPUPct })
	sat.WorkerCommandsPerS = commandsPerS(points, loadkit.ModePooled, cl, satUsers)
	sat.PerRequestCommandsPerS = commandsPerS(points, loadkit.ModePerRequest, cl, satUsers)
	sat.CeilingCommandsPerS = commandsPerS(points, loadkit.ModeCeiling, cl, satUsers)
	// CPU per command: a busy worker's cost, independent of how much
	// CPU the rest of the machine left it.
	sat.WorkerPerCommandCPUMS = cpuPerCommand(sat.WorkerCPUPct, sat.WorkerCommandsPerS)
	sat.PerRequestCPUMSPerComm = cpuPerCommand(sat.PerRequestWorkerCPUPct, sat.PerRequestCommandsPerS)
	return sat
}

// withSaturation is users followed by the saturation users, when there are
// any and they are not among users already.
func withSaturation(users []int, satUsers int) []int {
	if satUsers > 0 && !slices.Contains(users, satUsers) {
		return append(slices.Clone(users), satUsers)
	}
	return users
}

// pooledOverPerRequest compares the pooled worker's add-item p99 and
// throughput with the per-request worker's, per scenario and user count
// (saturation included in the closed loop).
func pooledOverPerRequest(points []loadkit.Point, users []int, satUsers int) []ModeRatio {
	var out []ModeRatio
	add := loadkit.TypeAddItem
	for _, sc := range []string{loadkit.ScenarioPaced, loadkit.ScenarioClosed} {
		us := users
		if sc == loadkit.ScenarioClosed {
			us = withSaturation(users, satUsers)
		}
		for _, u := range us {
			pp := field(points, loadkit.ModePooled, sc, u, add, p99)
			rp := field(points, loadkit.ModePerRequest, sc, u, add, p99)
			pt := field(points, loadkit.ModePooled, sc, u, add, thr)
			rt := field(points, loadkit.ModePerRequest, sc, u, add, thr)
			if pp == nil && rp == nil {
				continue
			}
			out = append(out, ModeRatio{
				Scenario: sc, Users: u, P99Ratio: ratio(pp, rp), ThroughputRatio: ratio(pt, rt),
			})
		}
	}
	return out
}

// clientRatios compares mode a's add-item p50 and p99 with mode b's in a
// scenario, per user count. A user count is left out when neither mode was
// measured at it, or, with both, when either was not.
func clientRatios(points []loadkit.Point, scenario string, users []int, a, b string, both bool) []ClientRatio {
	var out []ClientRatio
	add := loadkit.TypeAddItem
	for _, u := range users {
		a50 := field(points, a, scenario, u, add, p50)
		b50 := field(points, b, scenario, u, add, p50)
		if (a50 == nil && b50 == nil) || (both && (a50 == nil || b50 == nil)) {
			continue
		}
		out = append(out, ClientRatio{Users: u, P50Ratio: ratio(a50, b50),
			P99Ratio: ratio(field(points, a, scenario, u, add, p99), field(points, b, scenario, u, add, p99))})
	}
	return out
}

// issueFloor judges one of the issue's floors: v at most limit (atMost)
// or at least it; not measured when v is nil.
func issueFloor(name string, v *float64, limit float64, unit string, atMost bool, detail string) Floor {
	f := Floor{Name: name, Value: v, Limit: limit, Unit: unit, Detail: detail, Verdict: "not measured"}
	if v != nil {
		if atMost {
			f.Pass = boolp(*v <= limit)
		} else {
			f.Pass = boolp(*v >= limit)
		}
		f.Verdict = "pass"
		if !*f.Pass {
			f.Verdict = "FAIL"
		}
	}
	return f
}

// issueFloors are the issue's acceptance floors, judged on the points.
func issueFloors(points []loadkit.Point, sat Saturation, rss15 *float64, poolLimit int) []Floor {
	pooledDials := maxOver(points, loadkit.ModePooled, 0, func(p loadkit.Point) float64 { return float64(p.DialsTotal) })
	return []Floor{
		issueFloor("paced 15 users, pooled add-item p99", field(points, loadkit.ModePooled, loadkit.ScenarioPaced, 15, loadkit.TypeAddItem, p99),
			floorPacedP99MS, "ms", true, "at most"),
		issueFloor("closed-loop saturation, pooled / per-request add-item throughput", sat.WorkerOverPerRequest,
			floorPooledOverPerReq, "×", false, "at least"),
		issueFloor("closed-loop saturation, pooled / ceiling add-item throughput", sat.WorkerOverCeiling,
			floorPooledOverCeiling, "×", false, "at least"),
		issueFloor("connections opened by the pooled worker over the whole run", pooledDials, float64(poolLimit), "conns", true,
			"at most the pool limit (WORKER_STATE_MAX_CONNS)"),
		issueFloor("per-request worker: connections opened per state call", dialsPerCall(points, loadkit.ModePerRequest), 0.99, "per call", false,
			"one per call (at least 0.99: a call that fails before connecting dials nothing)"),
		issueFloor("worker RSS at 15 users (pooled)", rss15, floorRSSMiB, "MiB", true, "at most"),
	}
}

// commandsPerS sums the throughput of every command type of a point.
func commandsPerS(points []loadkit.Point, mode, scenario string, users int) *float64 {
	var sum float64
	found := false
	for _, t := range loadkit.Types {
		if v := field(points, mode, scenario, users, t, thr); v != nil {
			sum += *v
			found = true
		}
	}
	if !found {
		return nil
	}
	return f64(sum)
}

func cpuPerCommand(cpuPct, perS *float64) *float64 {
	if cpuPct == nil || perS == nil || *perS == 0 || *cpuPct == 0 {
		return nil
	}
	return f64(*cpuPct / 100 / *perS * 1000)
}

// maxOver is the largest get over mode's points (at users, or all when 0).
func maxOver(points []loadkit.Point, mode string, users int, get func(loadkit.Point) float64) *float64 {
	var out *float64
	for _, p := range points {
		if p.Mode != mode || (users > 0 && p.Users != users) {
			continue
		}
		v := get(p)
		if v < 0 {
			continue
		}
		if out == nil || v > *out {
			out = f64(v)
		}
	}
	return out
}

// dialsPerCall divides a mode's dials by its state calls over all its
// points (each point counted once, not per type).
func dialsPerCall(points []loadkit.Point, mode string) *float64 {
	var dials, calls int64
	seen := map[loadkit.PointKey]bool{}
	for _, p := range points {
		k := loadkit.PointKey{Mode: p.Mode, Scenario: p.Scenario, Users: p.Users}
		if p.Mode != mode || seen[k] || p.Dials < 0 || p.StateCalls <= 0 {
			continue
		}
		seen[k] = true
		dials += p.Dials
		calls += p.StateCalls
	}
	if calls == 0 {
		return nil
	}
	return f64(float64(dials) / float64(calls))
}

// maxWorkerRSS is the largest RSS of a cartworker process (a mode that runs
// the worker) over the points and the backlog drains, nil when none was
// measured.
func maxWorkerRSS(points []loadkit.Point, backlog []BacklogSummary) *float64 {
	var top float64
	for _, p := range points {
		if isWorkerMode(p.Mode) {
			top = max(top, p.WorkerRSSMiB)
		}
	}
	for _, b := range backlog {
		if isWorkerMode(b.Mode) {
			top = max(top, b.PeakRSSMiB)
		}
	}
	if top == 0 {
		return nil
	}
	return &top
}

// isWorkerMode reports whether mode runs cartworker's own worker.
func isWorkerMode(mode string) bool {
	switch mode {
	case loadkit.ModePooled, loadkit.ModePerRequest, loadkit.ModeWorkerGRPC, loadkit.ModeWorkerHTTP:
		return true
	}
	return false
}
