package report

import (
	"fmt"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// This file computes the Dapr pub/sub peer's figures: bench/daprpeer, fed
// by its daprd's pubsub.jetstream, measured without and with bulk
// subscribe, the better of the two set against the worker as shipped.

// Floors of the worker against the Dapr pub/sub peer, from medians over
// rounds of one run.
const (
	// Saturation add-items per second: the worker as shipped at least
	// this multiple of the peer's.
	floorWorkerOverDaprPubSub = 1.5
	// Hot-cart backlog drain, commands per second: likewise.
	floorHotDrainOverDaprPubSub = 3.0
)

// daprPubSubModes are the peer's two ways to consume: without bulk
// subscribe, then with it.
func daprPubSubModes() []string {
	return []string{loadkit.ModeDaprPubSub, loadkit.ModeDaprPubSubBulk}
}

// DaprPubSub is the Dapr pub/sub peer against the worker as shipped
// (pooled), at saturation and on the hot-cart backlog.
type DaprPubSub struct {
	// Modes are the peer's figures without and with bulk subscribe.
	Modes []DaprPubSubMode `json:"modes"`
	// SaturationMode and HotDrainMode are the peer's better mode at
	// saturation and on the hot drain, whose figures the floors use; ""
	// when neither was measured.
	SaturationMode string `json:"saturation_mode"`
	HotDrainMode   string `json:"hot_drain_mode"`
	// AddItemPerS and HotDrainPerS are the better mode's figures.
	AddItemPerS  *float64 `json:"add_item_per_s"`
	HotDrainPerS *float64 `json:"hot_drain_per_s"`
	// WorkerAddItemPerS and WorkerHotDrainPerS are the worker's, and the
	// Over fields the worker's over the peer's.
	WorkerAddItemPerS   *float64 `json:"worker_add_item_per_s"`
	WorkerOverPeer      *float64 `json:"worker_over_peer"`
	WorkerHotDrainPerS  *float64 `json:"worker_hot_drain_per_s"`
	WorkerOverPeerDrain *float64 `json:"worker_over_peer_hot_drain"`
}

// DaprPubSubMode is one of the peer's modes: closed loop at saturation and
// the hot-cart backlog drain.
type DaprPubSubMode struct {
	Mode          string `json:"mode"`
	BulkSubscribe bool   `json:"bulk_subscribe"`
	// Saturation: add-items per second and p99, and the CPU (% of one
	// core) and RSS of the peer's app and the CPU of its daprd.
	AddItemPerS  *float64 `json:"add_item_per_s"`
	AddItemP99MS *float64 `json:"add_item_p99_ms"`
	AppCPUPct    *float64 `json:"app_cpu_pct"`
	AppRSSMiB    *float64 `json:"app_rss_mib"`
	DaprdCPUPct  *float64 `json:"daprd_cpu_pct"`
	// HotDrainPerS is the hot drain's commands per second (median over
	// rounds), HotDrainTotalsOK whether every round left every cart right.
	HotDrainPerS     *float64 `json:"hot_drain_per_s"`
	HotDrainTotalsOK *bool    `json:"hot_drain_totals_ok"`
}

// daprPubSubOf gathers the peer's figures from the points at satUsers and
// the drains' summaries.
func daprPubSubOf(points []loadkit.Point, summary []BacklogSummary, satUsers int) DaprPubSub {
	var d DaprPubSub
	cl, add := loadkit.ScenarioClosed, loadkit.TypeAddItem
	for _, m := range daprPubSubModes() {
		dm := DaprPubSubMode{Mode: m, BulkSubscribe: m == loadkit.ModeDaprPubSubBulk}
		if satUsers > 0 {
			dm.AddItemPerS = field(points, m, cl, satUsers, add, thr)
			dm.AddItemP99MS = field(points, m, cl, satUsers, add, p99)
			dm.AppCPUPct = field(points, m, cl, satUsers, add, workerCPU)
			dm.AppRSSMiB = field(points, m, cl, satUsers, add, workerRSS)
			dm.DaprdCPUPct = field(points, m, cl, satUsers, add, func(p loadkit.Point) float64 { return p.ProcCPUPct["daprd-"+m] })
		}
		if b := findBacklog(summary, BacklogHot, m); b != nil {
			dm.HotDrainPerS, dm.HotDrainTotalsOK = b.CommandsPerS, boolp(b.TotalsOK)
		}
		d.Modes = append(d.Modes, dm)
	}
	if satUsers > 0 {
		d.SaturationMode, d.AddItemPerS = bestDaprPubSubSat(points, satUsers)
		d.WorkerAddItemPerS = field(points, loadkit.ModePooled, cl, satUsers, add, thr)
		d.WorkerOverPeer = ratio(d.WorkerAddItemPerS, d.AddItemPerS)
	}
	if best := bestDaprPubSubDrain(summary, BacklogHot); best != nil {
		d.HotDrainMode, d.HotDrainPerS = best.Mode, best.CommandsPerS
	}
	if w := findBacklog(summary, BacklogHot, loadkit.ModePooled); w != nil {
		d.WorkerHotDrainPerS = w.CommandsPerS
		d.WorkerOverPeerDrain = ratio(d.WorkerHotDrainPerS, d.HotDrainPerS)
	}
	return d
}

// bestDaprPubSubSat is the peer's mode with the most add-items per second
// at satUsers, and that figure; "" and nil when neither was measured.
func bestDaprPubSubSat(points []loadkit.Point, satUsers int) (string, *float64) {
	mode, best := "", (*float64)(nil)
	for _, m := range daprPubSubModes() {
		v := field(points, m, loadkit.ScenarioClosed, satUsers, loadkit.TypeAddItem, thr)
		if v != nil && (best == nil || *v > *best) {
			mode, best = m, v
		}
	}
	return mode, best
}

// bestDaprPubSubDrain is the peer's faster drain of scenario. A drain that
// left every cart right beats one that did not, whatever their rates: a
// consumer that gets carts wrong is not the better one. nil when neither
// mode drained it.
func bestDaprPubSubDrain(summary []BacklogSummary, scenario string) *BacklogSummary {
	var best *BacklogSummary
	for _, m := range daprPubSubModes() {
		b := findBacklog(summary, scenario, m)
		if b == nil || b.CommandsPerS == nil {
			continue
		}
		switch {
		case best == nil, b.TotalsOK && !best.TotalsOK:
			best = b
		case b.TotalsOK == best.TotalsOK && *b.CommandsPerS > *best.CommandsPerS:
			best = b
		}
	}
	return best
}

// daprPubSubFloors are the worker as shipped against the peer's better
// mode: at saturation and on the hot drain. The worker's own failed drain
// fails the drain floor; the peer's is said in its detail.
func daprPubSubFloors(points []loadkit.Point, summary []BacklogSummary, satUsers int) []Floor {
	cl := loadkit.ScenarioClosed
	s := speedFigures{points: points}
	sat := Floor{Name: "saturation add-items/s: worker as shipped (pooled) / Dapr pub/sub peer", Limit: floorWorkerOverDaprPubSub, Unit: "×",
		Detail: fmt.Sprintf("at least; closed loop, %d users, medians over rounds; the peer's better of without and with bulk subscribe", satUsers)}
	if mode, _ := bestDaprPubSubSat(points, satUsers); mode != "" && satUsers > 0 {
		sat.Name += " (" + mode + ")"
		if w, p := s.addItem(loadkit.ModePooled, cl, satUsers), s.addItem(mode, cl, satUsers); w != nil && p != nil {
			sat.Value = ratio(f64(w.ThroughputPerS), f64(p.ThroughputPerS))
			sat.Rounds = roundRatios(w.ThroughputRounds, p.ThroughputRounds)
		}
	}
	drain := Floor{Name: "hot-cart backlog drain commands/s: worker as shipped (pooled) / Dapr pub/sub peer", Limit: floorHotDrainOverDaprPubSub, Unit: "×",
		Detail: "at least; drain medians over rounds; the peer's better of without and with bulk subscribe"}
	w, p := findBacklog(summary, BacklogHot, loadkit.ModePooled), bestDaprPubSubDrain(summary, BacklogHot)
	if p != nil {
		drain.Name += " (" + p.Mode + ")"
	}
	if w != nil && p != nil {
		drain.Value = ratio(w.CommandsPerS, p.CommandsPerS)
		drain.Rounds = roundRatios(w.CommandsPerSRounds, p.CommandsPerSRounds)
		if !p.TotalsOK {
			drain.Detail += fmt.Sprintf("; the peer's %d of %d rounds failed the totals check", p.Failed, p.Rounds)
		}
		if !w.TotalsOK {
			drain.blocker = fmt.Sprintf("the worker's %d of %d rounds failed the totals check or did not finish", w.Failed, w.Rounds)
		}
	}
	return []Floor{judgeSpeed(sat, false), judgeSpeed(drain, false)}
}

// DaprPubSubPeerOf is PeerOf the Dapr pub/sub peer, either mode, named by
// its status as WatermillPeerOf names the Watermill peer.
func DaprPubSubPeerOf(status string, runs []*loadkit.Run) Peer {
	p := PeerOf(loadkit.ModeDaprPubSub, status, runs)
	if !p.Available {
		if bulk := PeerOf(loadkit.ModeDaprPubSubBulk, status, runs); bulk.Available {
			p = bulk
		}
	}
	return namedByStatus(p, status)
}
