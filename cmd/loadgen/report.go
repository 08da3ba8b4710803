package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/internal/config"
)

// Output file names, in the -out directory.
const (
	reportFile  = "REPORT.md"
	resultsFile = "results.json"
	chartFile   = "latency.svg"
)

// kvFlag collects repeated key=value flags in order.
type kvFlag struct {
	keys []string
	m    map[string]string
}

func (k *kvFlag) String() string { return "" }

func (k *kvFlag) Set(s string) error {
	key, val, ok := strings.Cut(s, "=")
	if !ok || key == "" {
		return fmt.Errorf("%q: want key=value", s)
	}
	if k.m == nil {
		k.m = map[string]string{}
	}
	if _, dup := k.m[key]; !dup {
		k.keys = append(k.keys, key)
	}
	k.m[key] = val
	return nil
}

// reportInput is everything the report is made from.
type reportInput struct {
	runs      []*loadkit.Run
	docs      *loadkit.Docs
	versions  kvFlag
	peer      Peer
	settings  string
	topology  string
	notes     []string
	poolLimit int
	conc      int
	machine   Machine
	now       time.Time
}

func runReport(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("report", stderr)
	raw := fs.String("raw", "", "directory of run files (*.json) written by run, ceiling and the peer")
	docsPath := fs.String("docs", "", "documents file from 'loadgen capture' (for their sizes)")
	out := fs.String("out", "bench", "directory for "+reportFile+", "+resultsFile+" and "+chartFile)
	peerStatus := fs.String("peer", "", `go-sdk peer status: "ok: <client>" or "not available: <reason>"`)
	settings := fs.String("settings", "", "the run's settings, shown in the report (e.g. BENCH_* values)")
	topology := fs.String("topology", "", "how the stack was laid out, shown in the report")
	notesPath := fs.String("notes", "", "optional file of extra markdown bullet lines for the Notes section")
	in := reportInput{now: time.Now().UTC()}
	fs.Var(&in.versions, "version", "component=version, repeatable (shown in the report)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *raw == "" {
		return usageError{errors.New("-raw is required")}
	}
	runs, err := readRuns(*raw)
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		return fmt.Errorf("no runs in %s", *raw)
	}
	in.runs = runs
	if *docsPath != "" {
		if in.docs, err = loadkit.ReadDocs(*docsPath); err != nil {
			return err
		}
	}
	in.peer = parsePeer(*peerStatus, runs)
	in.settings, in.topology = *settings, *topology
	if *notesPath != "" {
		b, err := os.ReadFile(*notesPath)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				in.notes = append(in.notes, strings.TrimPrefix(l, "- "))
			}
		}
	}
	in.poolLimit, in.conc = workerDefaults()
	in.machine = detectMachine()

	res, md, svg := buildReport(in)
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for name, data := range map[string][]byte{resultsFile: append(b, '\n'), reportFile: md, chartFile: svg} {
		if err := writeFileAtomic(filepath.Join(*out, name), data); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "loadgen: wrote %s, %s and %s in %s (%d runs, %d points)\n",
		reportFile, resultsFile, chartFile, *out, len(runs), len(res.Points))
	for _, f := range res.Floors {
		fmt.Fprintf(stdout, "  floor %-70s %s\n", f.Name+":", floorResult(f))
	}
	return nil
}

func readRuns(dir string) ([]*loadkit.Run, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var runs []*loadkit.Run
	for _, p := range paths {
		r, err := loadkit.ReadRun(p)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, nil
}

func parsePeer(status string, runs []*loadkit.Run) Peer {
	var client string
	for _, r := range runs {
		if r.Mode == loadkit.ModeGoSDK {
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
		return Peer{Reason: "not available: no go-sdk runs"}
	default:
		return Peer{Reason: "not available: no go-sdk runs (" + status + ")"}
	}
}

// workerDefaults are the shipped worker's pool limit and concurrency, read
// from its own configuration defaults.
func workerDefaults() (poolLimit, concurrency int) {
	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		return 0, 0
	}
	return cfg.StateMaxConnsPerHost, cfg.Concurrency
}

func detectMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kib, err := parseMemTotal(b); err == nil {
			m.MemoryGiB = float64(kib) / (1 << 20)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func parseMemTotal(b []byte) (int64, error) {
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no MemTotal")
}

// buildReport computes results.json, REPORT.md and the chart.
func buildReport(in reportInput) (Results, []byte, []byte) {
	points := loadkit.Aggregate(in.runs)
	users, satUsers := userCounts(in.runs)
	cfg := RunConfig{
		Users: users, SaturationUsers: satUsers, WorkerConcurrency: in.conc, PoolLimit: in.poolLimit,
		Settings: in.settings, Topology: in.topology,
	}
	rounds := map[int]bool{}
	for _, r := range in.runs {
		cfg.DurationS = max(cfg.DurationS, r.DurationS)
		cfg.WarmupS = max(cfg.WarmupS, r.WarmupS)
		cfg.ThinkMS = max(cfg.ThinkMS, r.ThinkMS)
		rounds[r.Round] = true
	}
	cfg.Rounds = len(rounds)
	if in.docs != nil {
		cfg.DocBytesFirst, cfg.DocBytesLast = in.docs.Sizes()
		cfg.DocsSource = in.docs.Source
	}
	sat, ratios, floors, rss15, rss15req := computeResults(points, users, satUsers, in.poolLimit)
	versions := map[string]string{}
	for _, k := range in.versions.keys {
		versions[k] = in.versions.m[k]
	}
	res := Results{
		GeneratedAt: in.now.Format(time.RFC3339), Machine: in.machine, Versions: versions, Config: cfg,
		Peer: in.peer, Points: points, Saturation: sat, WorkerRSSMiB15u: rss15, PerRequestRSSMiB15u: rss15req,
		Ratios: ratios, Floors: floors, Upstream: upstreamFigures, Notes: in.notes,
	}
	if res.Points == nil {
		res.Points = []loadkit.Point{}
	}
	svg := latencyChartSVG(points, users, cfg.ThinkMS)
	return res, renderMarkdown(res, in), svg
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

// ms formats a latency with the precision it deserves.
func ms(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return thousands(v, 0)
	}
}

// thousands formats v with digits decimals and comma separators.
func thousands(v float64, digits int) string {
	s := strconv.FormatFloat(v, 'f', digits, 64)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := b.String()
	if neg {
		out = "-" + out
	}
	if frac != "" {
		out += "." + frac
	}
	return out
}

func rate(v float64) string {
	if v >= 100 {
		return thousands(v, 0)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func opt(v *float64, format func(float64) string) string {
	if v == nil {
		return "n/a"
	}
	return format(*v)
}

func times(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }

func pct(v float64) string { return strconv.FormatFloat(v*100, 'f', 0, 64) + " %" }

func floorResult(f Floor) string {
	val := "not measured"
	if f.Value != nil {
		switch f.Unit {
		case "ms":
			val = ms(*f.Value) + " ms"
		case "×":
			val = times(*f.Value)
		case "conns":
			val = strconv.FormatFloat(*f.Value, 'f', 0, 64)
		case "MiB":
			val = strconv.FormatFloat(*f.Value, 'f', 1, 64) + " MiB"
		default:
			val = strconv.FormatFloat(*f.Value, 'f', 3, 64)
		}
	}
	switch {
	case f.Pass == nil:
		return val + " — not measured"
	case *f.Pass:
		return val + " — pass"
	default:
		return val + " — FAIL"
	}
}

func limitText(f Floor) string {
	op := "≤"
	if strings.HasPrefix(f.Detail, "at least") || strings.HasPrefix(f.Detail, "one per call") {
		op = "≥"
	}
	switch f.Unit {
	case "×":
		return op + " " + times(f.Limit)
	case "ms":
		return op + " " + ms(f.Limit) + " ms"
	case "MiB":
		return op + " " + strconv.FormatFloat(f.Limit, 'f', 0, 64) + " MiB"
	case "conns":
		return op + " " + strconv.FormatFloat(f.Limit, 'f', 0, 64) + " (pool limit)"
	default:
		return op + " " + strconv.FormatFloat(f.Limit, 'f', 2, 64)
	}
}

func renderMarkdown(res Results, in reportInput) []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	cfg := res.Config
	add := loadkit.TypeAddItem

	w("# cartworker load benchmark\n\n")
	w("Generated by `make bench` (`scripts/bench.sh`, `cmd/loadgen`) on %s. Regenerate it rather than editing it; the same run wrote [`results.json`](results.json) and [`%s`](%s).\n\n", res.GeneratedAt, chartFile, chartFile)
	passed, failed, missing := 0, 0, 0
	for _, f := range res.Floors {
		switch {
		case f.Pass == nil:
			missing++
		case *f.Pass:
			passed++
		default:
			failed++
		}
	}
	w("**Floors: %d passed, %d failed, %d not measured.** ", passed, failed, missing)
	w("Timing is noisy on a 2-core machine that also runs NATS, Redis, daprd, the worker and the load generator: modes were measured side by side, interleaved round by round, and the host's CPU use during each point is shown so that interference from other processes can be told apart.\n\n")

	w("## Machine and versions\n\n")
	w("| | |\n|---|---|\n")
	w("| CPU | %s |\n| cores | %d |\n| memory | %.1f GiB |\n| kernel | %s |\n| Go | %s |\n",
		orNA(res.Machine.CPUModel), res.Machine.Cores, res.Machine.MemoryGiB, orNA(res.Machine.Kernel), res.Machine.GoVersion)
	for _, k := range in.versions.keys {
		w("| %s | %s |\n", k, mdEscape(in.versions.m[k]))
	}
	peer := res.Peer.Client
	if !res.Peer.Available {
		peer = res.Peer.Reason
	}
	w("| go-sdk peer | %s |\n\n", mdEscape(peer))

	w("## How it was measured\n\n")
	w("- Scenario (upstream's locust user): `cache` (create a cart), 20 × `add-item` with one item each, `delete`; a user waits for each command's outcome event before sending the next, so a latency is publish → outcome event (JetStream publish ack, worker, Dapr, Redis, event back).\n")
	w("- **paced**: each user pauses %s ms after every command (upstream waits 3 s); **closed-loop**: no pause.\n", trimFloat(cfg.ThinkMS))
	w("- Each point: %s s warm-up (not counted) then a %s s window, in %d round(s); the modes of a point are interleaved round by round (the order rotates each round). Commands that *start* inside a window are counted; the command in flight at the end finishes, the open cart is deleted unrecorded.\n",
		trimFloat(cfg.WarmupS), trimFloat(cfg.DurationS), cfg.Rounds)
	w("- Percentiles are exact within a round (nearest rank over every sample, no histogram buckets); a point quotes the **median over its rounds** of each percentile and of the throughput (successful commands per second of window), and the max over all rounds. `results.json` also holds each round's p99 and throughput, and the p99 of all rounds' samples pooled.\n")
	w("- Modes: **pooled** = the worker as shipped; **per-request** = the same binary with `WORKER_STATE_CLIENT=per-request` (fresh client and transport per call, no keep-alive); both run for the whole benchmark against the same daprd and Redis, each on its own NATS server. **ceiling** = the scenario's state calls (cache: GET, GET tombstone, POST; add-item: GET, POST with ETag; delete: GET, POST tombstone, DELETE with ETag) straight to daprd through the worker's pooled HTTP client (`internal/statepool`, worker defaults), with no NATS and no worker. **go-sdk** = the same calls through the official Dapr Go SDK over gRPC (`bench/sdkpeer`, its own module).\n")
	if cfg.DocBytesLast > 0 {
		w("- Ceiling and go-sdk store documents of the scenario's sizes, %s bytes empty up to %s bytes with 20 lines; source: %s.\n",
			thousands(float64(cfg.DocBytesFirst), 0), thousands(float64(cfg.DocBytesLast), 0), mdEscape(cfg.DocsSource))
	}
	w("- Dials: `cartworker_state_connections_opened_total` read from the worker's `/metrics` before and after each run (ceiling: the client's own dial hook; go-sdk: its gRPC dialer). Worker RSS: `VmRSS` from `/proc/<pid>/status`, sampled every 200 ms, largest value. Worker config as shipped: concurrency %d, pool limit %d connections per host.\n", cfg.WorkerConcurrency, cfg.PoolLimit)
	if cfg.Topology != "" {
		w("- Topology: %s\n", cfg.Topology)
	}
	if cfg.Settings != "" {
		w("- Settings: `%s`\n", cfg.Settings)
	}
	w("\n")

	w("## Floors\n\n| floor | measured | limit | result |\n|---|---|---|---|\n")
	for _, f := range res.Floors {
		result := "not measured"
		if f.Pass != nil {
			result = map[bool]string{true: "pass", false: "**FAIL**"}[*f.Pass]
		}
		val := strings.TrimSuffix(strings.TrimSuffix(floorResult(f), " — pass"), " — FAIL")
		val = strings.TrimSuffix(val, " — not measured")
		w("| %s | %s | %s | %s |\n", f.Name, val, limitText(f), result)
	}
	w("\nThe throughput floors compare add-items per second at the closed-loop saturation point; the ceiling runs at the same number of users.")
	if c := field(res.Points, loadkit.ModeCeiling, loadkit.ScenarioPaced, 15, add, p99); c != nil {
		w(" At the paced floor's load the bare state calls alone, the ceiling at the same pacing with no NATS and no worker, had an add-item p99 of %s.", msUnit(*c))
	}
	w("\n\n")

	w("## Ratios\n\n")
	w("### Pooled / per-request (add-item)\n\n")
	w("p99 ratio below 1 and throughput ratio above 1 favour pooling.\n\n")
	w("| scenario | users | p99 pooled | p99 per-request | p99 pooled / per-request | add-items/s pooled | per-request | throughput pooled / per-request |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range res.Ratios.PooledOverPerRequest {
		pp := field(res.Points, loadkit.ModePooled, r.Scenario, r.Users, add, p99)
		rp := field(res.Points, loadkit.ModePerRequest, r.Scenario, r.Users, add, p99)
		pt := field(res.Points, loadkit.ModePooled, r.Scenario, r.Users, add, thr)
		rt := field(res.Points, loadkit.ModePerRequest, r.Scenario, r.Users, add, thr)
		w("| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Scenario, usersLabel(r.Users, cfg.SaturationUsers),
			opt(pp, msUnit), opt(rp, msUnit), opt(r.P99Ratio, times), opt(pt, rate), opt(rt, rate), opt(r.ThroughputRatio, times))
	}
	if len(res.Ratios.PacedPooledOverCeiling) > 0 {
		w("\n### Paced: the worker against the bare state calls (add-item)\n\n")
		w("The ceiling makes the scenario's state calls straight to daprd at the same pacing, with no NATS and no worker. What the worker's latency adds to it is the JetStream publish and delivery, the worker and the outcome event.\n\n")
		w("| users | p50 pooled | p50 ceiling | p50 pooled / ceiling | p99 pooled | p99 ceiling | p99 pooled / ceiling |\n|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range res.Ratios.PacedPooledOverCeiling {
			sc := loadkit.ScenarioPaced
			w("| %d | %s | %s | %s | %s | %s | %s |\n", r.Users,
				opt(field(res.Points, loadkit.ModePooled, sc, r.Users, add, p50), msUnit),
				opt(field(res.Points, loadkit.ModeCeiling, sc, r.Users, add, p50), msUnit), opt(r.P50Ratio, times),
				opt(field(res.Points, loadkit.ModePooled, sc, r.Users, add, p99), msUnit),
				opt(field(res.Points, loadkit.ModeCeiling, sc, r.Users, add, p99), msUnit), opt(r.P99Ratio, times))
		}
	}
	w("\n### Saturation (closed loop, %d users)\n\n", cfg.SaturationUsers)
	w("| mode | add-items/s | all commands/s | add-item p50 | add-item p99 | / ceiling |\n|---|---:|---:|---:|---:|---:|\n")
	ceil := field(res.Points, loadkit.ModeCeiling, loadkit.ScenarioClosed, cfg.SaturationUsers, add, thr)
	for _, m := range loadkit.Modes {
		t := field(res.Points, m, loadkit.ScenarioClosed, cfg.SaturationUsers, add, thr)
		if t == nil {
			continue
		}
		w("| %s | %s | %s | %s | %s | %s |\n", m, rate(*t),
			opt(commandsPerS(res.Points, m, loadkit.ScenarioClosed, cfg.SaturationUsers), rate),
			opt(field(res.Points, m, loadkit.ScenarioClosed, cfg.SaturationUsers, add, p50), msUnit),
			opt(field(res.Points, m, loadkit.ScenarioClosed, cfg.SaturationUsers, add, p99), msUnit),
			opt(ratio(t, ceil), pct))
	}
	s := res.Saturation
	w("\n- Worker saturation throughput / ceiling: **%s**; pooled / per-request: **%s**.\n",
		opt(s.WorkerOverCeiling, pct), opt(s.WorkerOverPerRequest, times))
	if s.WorkerPerCommandCPUMS != nil || s.PerRequestCPUMSPerComm != nil {
		w("- Worker CPU per command at saturation: pooled %s, per-request %s (CPU time divided by commands, all types).\n",
			opt(s.WorkerPerCommandCPUMS, msUnit), opt(s.PerRequestCPUMSPerComm, msUnit))
	}
	if s.SaturationHostBusyPct != nil {
		w("- During the pooled saturation point the host was %s busy (all cores) and the load generator itself used %s of one core.\n",
			opt(s.SaturationHostBusyPct, pctPlain), opt(s.SaturationLoadgenCPUPct, pctPlain))
	}
	cpuTable(w, res, cfg.SaturationUsers)
	w("\n### Our HTTP client / go-sdk gRPC (add-item = GET + POST, closed loop)\n\n")
	if !res.Peer.Available {
		w("go-sdk peer %s.\n\n", mdEscape(res.Peer.Reason))
	}
	if len(res.Ratios.HTTPOverGoSDK) > 0 {
		w("Below 1 means the worker's pooled HTTP/1.1 client is faster than the SDK's gRPC channel.\n\n")
		w("| users | p50 HTTP | p50 go-sdk | p50 HTTP / go-sdk | p99 HTTP | p99 go-sdk | p99 HTTP / go-sdk | add-items/s HTTP | go-sdk |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range res.Ratios.HTTPOverGoSDK {
			cl := loadkit.ScenarioClosed
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", usersLabel(r.Users, cfg.SaturationUsers),
				opt(field(res.Points, loadkit.ModeCeiling, cl, r.Users, add, p50), msUnit),
				opt(field(res.Points, loadkit.ModeGoSDK, cl, r.Users, add, p50), msUnit), opt(r.P50Ratio, times),
				opt(field(res.Points, loadkit.ModeCeiling, cl, r.Users, add, p99), msUnit),
				opt(field(res.Points, loadkit.ModeGoSDK, cl, r.Users, add, p99), msUnit), opt(r.P99Ratio, times),
				opt(field(res.Points, loadkit.ModeCeiling, cl, r.Users, add, thr), rate),
				opt(field(res.Points, loadkit.ModeGoSDK, cl, r.Users, add, thr), rate))
		}
		w("\n")
	}

	w("## Latency against users\n\n")
	w("![add-item p50 and p99 against users, pooled and per-request, paced and closed-loop](%s)\n\n", chartFile)

	w("## Upstream comparison (15 users, add item)\n\n")
	u := res.Upstream
	w("| | p50 | p99 | req/s |\n|---|---:|---:|---:|\n")
	w("| upstream before pooling | %s ms | %s ms | %s |\n", ms(u.BeforeP50MS), ms(u.BeforeP99MS), strconv.FormatFloat(u.BeforeReqS, 'f', 2, 64))
	w("| upstream after pooling | %s ms | %s ms | %s |\n", ms(u.AfterP50MS), ms(u.AfterP99MS), strconv.FormatFloat(u.AfterReqS, 'f', 2, 64))
	for _, m := range []string{loadkit.ModePerRequest, loadkit.ModePooled} {
		for _, sc := range []string{loadkit.ScenarioPaced, loadkit.ScenarioClosed} {
			p, ok := loadkit.Find(res.Points, m, sc, 15, add)
			if !ok || p.Count == 0 {
				continue
			}
			w("| cartworker %s, %s | %s ms | %s ms | %s |\n", m, sc, ms(p.P50MS), ms(p.P99MS), rate(p.ThroughputPerS))
		}
	}
	w("\nUpstream: %s. Its users wait %s s between commands, so its req/s is bounded by that think time and is not comparable with ours; the latencies are.\n\n", u.Source, trimFloat(u.ThinkS))

	w("## All points\n\n")
	w("Latencies in ms. *dials* are the TCP connections opened to Dapr during the point's runs (warm-up included; all command types together, repeated on each row), *calls* the state API calls in the same runs. *worker handle* is the worker's own mean time per command, pull to ack, all types (`cartworker_command_duration_seconds`); the rest of a latency is JetStream publish and delivery, the outcome event and the load generator. *host busy* is the whole machine's CPU use during the point (100 %% = every core), *worker CPU* the worker's in %% of one core, *other CPU* what processes outside the benchmark (and the kernel) used, in %% of one core: a point with a high figure there was disturbed.\n\n")
	for _, sc := range []string{loadkit.ScenarioPaced, loadkit.ScenarioClosed} {
		title := "closed-loop"
		if sc == loadkit.ScenarioPaced {
			title = "paced (think " + trimFloat(cfg.ThinkMS) + " ms)"
		}
		w("### %s\n\n", title)
		w("| users | mode | type | p50 | p90 | p95 | p99 | max | /s | errors | dials | calls | worker handle | worker RSS MiB | worker CPU | host busy | other CPU |\n")
		w("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, p := range res.Points {
			if p.Scenario != sc {
				continue
			}
			handle := "–"
			if p.WorkerHandleMeanMS > 0 {
				handle = ms(p.WorkerHandleMeanMS)
			}
			other := "–"
			if v, ok := p.ProcCPUPct["other"]; ok {
				other = pctPlain(v)
			}
			w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n",
				usersLabel(p.Users, cfg.SaturationUsers), p.Mode, p.Type, ms(p.P50MS), ms(p.P90MS), ms(p.P95MS), ms(p.P99MS), ms(p.MaxMS),
				rate(p.ThroughputPerS), p.Errors, count(p.Dials), callsText(p), handle, rssText(p.WorkerRSSMiB),
				pctOrDash(p.WorkerCPUPct), pctOrDash(p.HostBusyPct), other)
		}
		w("\n")
	}

	w("## Notes\n\n")
	w("- Worker RSS at 15 users: pooled %s, per-request %s (floor: ≤ %s MiB).\n",
		opt(res.WorkerRSSMiB15u, mib), opt(res.PerRequestRSSMiB15u, mib), trimFloat(floorRSSMiB))
	errs := errorExamples(in.runs)
	if len(errs) > 0 {
		w("- Errors seen (first of each kind):\n")
		for _, e := range errs {
			w("  - `%s`\n", mdEscape(e))
		}
	}
	for _, n := range res.Notes {
		w("- %s\n", n)
	}
	return b.Bytes()
}

// cpuOrder is the column order of the CPU table; other names follow.
var cpuOrder = []string{"worker-pooled", "worker-per-request", "nats-pooled", "nats-per-request", "daprd", "redis", "loadgen", "other"}

// cpuTable shows where the machine's CPU went during the saturation point
// of each mode: the processes of the benchmark, the load generator (or
// direct client) and the rest ("other": kernel work not charged to a
// process, and every process outside the benchmark).
func cpuTable(w func(string, ...any), res Results, users int) {
	var rows []loadkit.Point
	names := map[string]bool{}
	for _, m := range loadkit.Modes {
		p, ok := loadkit.Find(res.Points, m, loadkit.ScenarioClosed, users, loadkit.TypeAddItem)
		if !ok || len(p.ProcCPUPct) == 0 {
			continue
		}
		rows = append(rows, p)
		for n := range p.ProcCPUPct {
			names[n] = true
		}
	}
	if len(rows) == 0 {
		return
	}
	cols, rest := loadkit.OrderKeys(cpuOrder, names)
	// Processes outside cpuOrder go before loadgen and other.
	k := len(cols)
	for k > 0 && (cols[k-1] == "loadgen" || cols[k-1] == "other") {
		k--
	}
	cols = slices.Concat(cols[:k], rest, cols[k:])
	w("\nWhere the CPU went during these points, in %% of one core (the machine has %d; *loadgen* is the load generator or the direct client, *other* is everything else on the machine, kernel included):\n\n", res.Machine.Cores)
	w("| mode |")
	for _, c := range cols {
		w(" %s |", c)
	}
	w(" machine busy |\n|---|")
	for range cols {
		w("---:|")
	}
	w("---:|\n")
	for _, p := range rows {
		w("| %s |", p.Mode)
		for _, c := range cols {
			w(" %s |", strconv.FormatFloat(p.ProcCPUPct[c], 'f', 0, 64))
		}
		w(" %s |\n", pctPlain(p.HostBusyPct*float64(max(res.Machine.Cores, 1))))
	}
}

func msUnit(v float64) string { return ms(v) + " ms" }
func mib(v float64) string    { return strconv.FormatFloat(v, 'f', 1, 64) + " MiB" }
func pctPlain(v float64) string {
	return strconv.FormatFloat(v, 'f', 0, 64) + " %"
}

func pctOrDash(v float64) string {
	if v == 0 {
		return "–"
	}
	return pctPlain(v)
}

func rssText(v float64) string {
	if v == 0 {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func count(v int64) string {
	if v < 0 {
		return "–"
	}
	return thousands(float64(v), 0)
}

// callsText is the state calls of a point, with the failed ones (neither
// 200 nor 204) when there were any.
func callsText(p loadkit.Point) string {
	c := count(p.StateCalls)
	if p.StateFailures > 0 {
		c += " (" + count(p.StateFailures) + " failed)"
	}
	return c
}

func usersLabel(u, sat int) string {
	if u == sat && sat > 0 {
		return strconv.Itoa(u) + " (sat.)"
	}
	return strconv.Itoa(u)
}

func trimFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return mdEscape(s)
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// errorExamples lists distinct error messages of every run, with the run
// they came from.
func errorExamples(runs []*loadkit.Run) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range runs {
		for _, e := range r.ErrorExamples {
			if seen[e] || len(out) >= 10 {
				continue
			}
			seen[e] = true
			out = append(out, fmt.Sprintf("%s %s %du r%d: %s", r.Mode, r.Scenario, r.Users, r.Round, e))
		}
	}
	return out
}

var _ flag.Value = (*kvFlag)(nil)
