package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
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
	"text/template"
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
	runs     []*loadkit.Run
	docs     *loadkit.Docs
	versions kvFlag
	peer     Peer
	backlog  []*BacklogRun
	// tracing are the tracing rounds' runs (pooled and traced).
	tracing []*loadkit.Run
	// wmPeer says whether the Watermill peer ran, wmProtocol its state
	// transport; pacedSamples is the paced windows' sample target.
	wmPeer       Peer
	wmProtocol   string
	pacedSamples int
	settings     string
	topology     string
	notes        []string
	poolLimit    int
	conc         int
	machine      Machine
	now          time.Time
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
	backlogDir := fs.String("backlog", "", "directory of backlog drains (*.json) written by 'loadgen backlog'")
	tracingDir := fs.String("tracing", "", "directory of the tracing rounds' runs (pooled with span export off, traced with it on)")
	wmStatus := fs.String("watermill", "", `Watermill peer status: "ok: <client>" or "not available: <reason>"`)
	wmProtocol := fs.String("watermill-protocol", "grpc", "the Watermill peer's state transport (grpc or http): it is compared with the worker on the same one")
	pacedSamples := fs.Int("paced-samples", DefaultPacedSamples, "add-item samples each paced point was sized for")
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
	in.wmPeer = parsePeerOf(loadkit.ModeWatermill, *wmStatus, runs)
	if c, ok := strings.CutPrefix(*wmStatus, "ok: "); ok && in.wmPeer.Available {
		// The runs describe the whole chain (publisher, NATS, peer); the
		// status names the peer.
		in.wmPeer.Client = c
	}
	in.wmProtocol, in.pacedSamples = *wmProtocol, *pacedSamples
	if in.backlog, err = readBacklog(*backlogDir); err != nil {
		return err
	}
	if in.tracing, err = readTracing(*tracingDir); err != nil {
		return err
	}
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

	res, md, svg, err := buildReport(in)
	if err != nil {
		return err
	}
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
	for _, f := range res.SpeedFloors {
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
	return parsePeerOf(loadkit.ModeGoSDK, status, runs)
}

// parsePeerOf says whether the peer of mode ran, from the script's status
// and the runs.
func parsePeerOf(mode, status string, runs []*loadkit.Run) Peer {
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

// workerDefaults are the shipped worker's pool limit and concurrency, read
// from its own configuration defaults.
func workerDefaults() (poolLimit, concurrency int) {
	cfg, err := config.Load(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		return 0, 0
	}
	return cfg.State.MaxConns, cfg.Consumer.Concurrency
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
func buildReport(in reportInput) (Results, []byte, []byte, error) {
	points := loadkit.Aggregate(in.runs)
	users, satUsers := userCounts(in.runs)
	cfg := RunConfig{
		Users: users, SaturationUsers: satUsers, WorkerConcurrency: in.conc, PoolLimit: in.poolLimit,
		Settings: in.settings, Topology: in.topology,
	}
	rounds := map[int]bool{}
	for _, r := range in.runs {
		if r.Scenario != loadkit.ScenarioPaced {
			// Paced windows are sized apart (PacedWindows).
			cfg.DurationS = max(cfg.DurationS, r.DurationS)
		}
		cfg.WarmupS = max(cfg.WarmupS, r.WarmupS)
		cfg.ThinkMS = max(cfg.ThinkMS, r.ThinkMS)
		rounds[r.Round] = true
	}
	cfg.Rounds = len(rounds)
	cfg.PacedSamplesTarget = in.pacedSamples
	if cfg.PacedSamplesTarget <= 0 {
		cfg.PacedSamplesTarget = DefaultPacedSamples
	}
	cfg.PacedWindows = pacedWindows(in.runs)
	if in.docs != nil {
		cfg.DocBytesFirst, cfg.DocBytesLast = in.docs.Sizes()
		cfg.DocsSource = in.docs.Source
	}
	sat, ratios, floors, rss15, rss15req := computeResults(points, users, satUsers, in.poolLimit)
	versions := map[string]string{}
	for _, k := range in.versions.keys {
		versions[k] = in.versions.m[k]
	}
	wm, backlog, speed, maxRSS := computeSpeed(points, in.backlog, sat, in.wmProtocol)
	res := Results{
		GeneratedAt: in.now.Format(time.RFC3339), Machine: in.machine, Versions: versions, Config: cfg,
		Peer: in.peer, Points: points, Saturation: sat, WorkerRSSMiB15u: rss15, PerRequestRSSMiB15u: rss15req,
		Ratios: ratios, Floors: floors, Upstream: upstreamFigures, Notes: in.notes,
		SpeedFloors: speed, PacedP99Spread: pacedSpreads(points, cfg.PacedSamplesTarget), Backlog: backlog,
		Watermill: wm, WatermillPeer: in.wmPeer, Tracing: computeTracing(in.tracing),
		MaxWorkerRSSMiB: maxRSS,
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

func times(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }

func pct(v float64) string { return strconv.FormatFloat(v*100, 'f', 0, 64) + " %" }

// floorResult is a floor's value and verdict, as printed by runReport.
func floorResult(f Floor) string { return floorValue(f) + " — " + floorVerdict(f) }

// floorValue is the measured value of a floor with its unit.
func floorValue(f Floor) string {
	if f.Value == nil {
		return "not measured"
	}
	switch f.Unit {
	case "ms":
		return ms(*f.Value) + " ms"
	case "×":
		return times(*f.Value)
	case "conns":
		return strconv.FormatFloat(*f.Value, 'f', 0, 64)
	case "MiB":
		return strconv.FormatFloat(*f.Value, 'f', 1, 64) + " MiB"
	default:
		return strconv.FormatFloat(*f.Value, 'f', 3, 64)
	}
}

// floorVerdict is "pass", "FAIL" (or "MISS" for a speed floor) or "not
// measured".
func floorVerdict(f Floor) string {
	if f.Verdict != "" {
		return f.Verdict
	}
	switch {
	case f.Pass == nil:
		return "not measured"
	case *f.Pass:
		return "pass"
	default:
		return "FAIL"
	}
}

// floorCell is the verdict in the report's table, a failure in bold.
func floorCell(f Floor) string {
	if v := floorVerdict(f); v != "FAIL" && v != "MISS" {
		return v
	}
	return "**" + floorVerdict(f) + "**"
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

// reportTemplateText is the prose and layout of REPORT.md.
//
//go:embed report.md.tmpl
var reportTemplateText string

// reportTemplate renders REPORT.md from a reportView.
var reportTemplate = template.Must(template.New("report.md.tmpl").Funcs(template.FuncMap{
	// Figures.
	"ms":        ms,
	"rate":      rate,
	"count":     count,
	"commas":    func(n int) string { return thousands(float64(n), 0) },
	"trimFloat": trimFloat,
	"opt":       optFormat,
	"ratio":     ratio,
	// Cells.
	"pctOrDash":  pctOrDash,
	"pctPlain":   pctPlain,
	"rssText":    rssText,
	"callsText":  callsText,
	"otherCPU":   otherCPU,
	"floorValue": floorValue,
	"floorCell":  floorCell,
	"limitText":  limitText,
	// New figures.
	"speedLimitText": speedLimitText,
	"roundsList":     roundsList,
	"intList":        intList,
	"batchMean":      batchMean,
	"batchSpread":    batchSpread,
	"totalsCell":     totalsCell,
	// Text.
	"mdEscape": mdEscape,
	"orNA":     orNA,
	"list":     func(s ...string) []string { return s },
}).Parse(reportTemplateText))

// reportView is what report.md.tmpl is rendered from: the results and the
// lookups its tables make.
type reportView struct {
	Results
	ChartFile   string
	VersionRows []versionRow // in the order of the -version flags
	// Floors passed, failed and not measured.
	Passed, Failed, Missing int
	Modes                   []string
	CPU                     *cpuTable // nil when no saturation point has CPU figures
	ErrorExamples           []string
	FloorRSSMiB             float64
	// Speed floors passed, missed and not measured.
	SpeedPassed, SpeedMissed, SpeedMissing  int
	FloorWorkerOverWatermill, FloorHotDrain float64
	// BacklogVsWatermill is the worker as shipped's drain rate over the
	// Watermill peer's, per backlog scenario both drained.
	BacklogVsWatermill []scenarioRatio
	// BacklogFailed is set when a drain did not complete or its totals
	// were wrong.
	BacklogFailed bool
}

type scenarioRatio struct {
	Scenario, WorkerMode string
	Ratio                *float64
}

type versionRow struct{ Name, Value string }

// AddItem is an add-item figure of a point: stat "p50" or "p99" (ms) or
// "thr" (per second); nil when the point was not measured.
func (v *reportView) AddItem(mode, scenario string, users int, stat string) (*float64, error) {
	get, ok := map[string]func(loadkit.Point) float64{"p50": p50, "p99": p99, "thr": thr}[stat]
	if !ok {
		return nil, fmt.Errorf("unknown figure %q", stat)
	}
	if err := checkPoint(mode, scenario); err != nil {
		return nil, err
	}
	return field(v.Points, mode, scenario, users, loadkit.TypeAddItem, get), nil
}

// AddItemPoint is the add-item point, nil when it was not measured.
func (v *reportView) AddItemPoint(mode, scenario string, users int) (*loadkit.Point, error) {
	if err := checkPoint(mode, scenario); err != nil {
		return nil, err
	}
	p, ok := loadkit.Find(v.Points, mode, scenario, users, loadkit.TypeAddItem)
	if !ok || p.Count == 0 {
		return nil, nil
	}
	return &p, nil
}

// CommandsPerS is a point's throughput over every command type.
func (v *reportView) CommandsPerS(mode, scenario string, users int) (*float64, error) {
	if err := checkPoint(mode, scenario); err != nil {
		return nil, err
	}
	return commandsPerS(v.Points, mode, scenario, users), nil
}

// checkPoint catches a misspelt mode or scenario in the template, which
// would otherwise read as a point that was not measured.
func checkPoint(mode, scenario string) error {
	if !slices.Contains(loadkit.Modes, mode) {
		return fmt.Errorf("unknown mode %q", mode)
	}
	if scenario != loadkit.ScenarioPaced && scenario != loadkit.ScenarioClosed {
		return fmt.Errorf("unknown scenario %q", scenario)
	}
	return nil
}

// UsersLabel marks the saturation user count.
func (v *reportView) UsersLabel(users int) string { return usersLabel(users, v.Config.SaturationUsers) }

func renderMarkdown(res Results, in reportInput) ([]byte, error) {
	v := &reportView{
		Results: res, ChartFile: chartFile, Modes: loadkit.Modes,
		CPU: cpuTableOf(res, res.Config.SaturationUsers), ErrorExamples: errorExamples(in.runs), FloorRSSMiB: floorRSSMiB,
	}
	for _, k := range in.versions.keys {
		v.VersionRows = append(v.VersionRows, versionRow{k, in.versions.m[k]})
	}
	for _, f := range res.Floors {
		switch floorVerdict(f) {
		case "pass":
			v.Passed++
		case "FAIL":
			v.Failed++
		default:
			v.Missing++
		}
	}
	for _, f := range res.SpeedFloors {
		switch floorVerdict(f) {
		case "pass":
			v.SpeedPassed++
		case "MISS":
			v.SpeedMissed++
		default:
			v.SpeedMissing++
		}
	}
	v.FloorWorkerOverWatermill, v.FloorHotDrain = floorWorkerOverWatermill, floorHotDrainOverCeiling
	for _, r := range res.Backlog.Runs {
		v.BacklogFailed = v.BacklogFailed || !r.Complete()
	}
	for _, sc := range backlogScenarios {
		// The worker on the peer's transport when it drained too, else
		// the worker as shipped.
		mode := res.Watermill.WorkerMode
		w := findBacklog(res.Backlog.Summary, sc, mode)
		if w == nil {
			mode = loadkit.ModePooled
			w = findBacklog(res.Backlog.Summary, sc, mode)
		}
		p := findBacklog(res.Backlog.Summary, sc, loadkit.ModeWatermill)
		if w != nil && p != nil {
			v.BacklogVsWatermill = append(v.BacklogVsWatermill, scenarioRatio{sc, mode, ratio(w.CommandsPerS, p.CommandsPerS)})
		}
	}
	var b bytes.Buffer
	if err := reportTemplate.Execute(&b, v); err != nil {
		return nil, fmt.Errorf("rendering %s: %w", reportFile, err)
	}
	return b.Bytes(), nil
}

// optFormats are the formats of the template's opt function.
var optFormats = map[string]func(float64) string{
	"ms": msUnit, "rate": rate, "times": times, "pct": pct, "pctPlain": pctPlain, "mib": mib,
	"spans": func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
}

// optFormat formats v as kind, "n/a" when v is nil.
func optFormat(kind string, v *float64) (string, error) {
	format, ok := optFormats[kind]
	if !ok {
		return "", fmt.Errorf("opt: unknown format %q", kind)
	}
	if v == nil {
		return "n/a", nil
	}
	return format(*v), nil
}

// cpuOrder is the column order of the CPU table; other names follow.
var cpuOrder = []string{
	"worker-pooled", "worker-per-request", "worker-grpc", "worker-http", "watermill",
	"nats-pooled", "nats-per-request", "nats-worker-grpc", "nats-worker-http", "nats-watermill",
	"daprd", "redis", "loadgen", "other",
}

// cpuTable shows where the machine's CPU went during the saturation point
// of each mode: the processes of the benchmark, the load generator (or
// direct client) and the rest ("other": kernel work not charged to a
// process, and every process outside the benchmark).
type cpuTable struct {
	Cols []string
	Rows []cpuRow
}

type cpuRow struct {
	Mode  string
	Cells []string // % of one core, one per column
	Busy  string   // the whole machine, in % of one core
}

func cpuTableOf(res Results, users int) *cpuTable {
	var points []loadkit.Point
	names := map[string]bool{}
	for _, m := range loadkit.Modes {
		p, ok := loadkit.Find(res.Points, m, loadkit.ScenarioClosed, users, loadkit.TypeAddItem)
		if !ok || len(p.ProcCPUPct) == 0 {
			continue
		}
		points = append(points, p)
		for n := range p.ProcCPUPct {
			names[n] = true
		}
	}
	if len(points) == 0 {
		return nil
	}
	cols, rest := loadkit.OrderKeys(cpuOrder, names)
	// Processes outside cpuOrder go before loadgen and other.
	k := len(cols)
	for k > 0 && (cols[k-1] == "loadgen" || cols[k-1] == "other") {
		k--
	}
	t := &cpuTable{Cols: slices.Concat(cols[:k], rest, cols[k:])}
	for _, p := range points {
		row := cpuRow{Mode: p.Mode, Busy: pctPlain(p.HostBusyPct * float64(max(res.Machine.Cores, 1)))}
		for _, c := range t.Cols {
			row.Cells = append(row.Cells, strconv.FormatFloat(p.ProcCPUPct[c], 'f', 0, 64))
		}
		t.Rows = append(t.Rows, row)
	}
	return t
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

// otherCPU is the CPU that processes outside the benchmark used during a
// point, in % of one core; "–" when unknown.
func otherCPU(p loadkit.Point) string {
	if v, ok := p.ProcCPUPct["other"]; ok {
		return pctPlain(v)
	}
	return "–"
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

// roundsList formats each round's value as kind ("times", "ms", "rate"),
// separated by slashes; "–" for none.
func roundsList(kind string, v []float64) (string, error) {
	format, ok := optFormats[kind]
	if !ok {
		return "", fmt.Errorf("roundsList: unknown format %q", kind)
	}
	if len(v) == 0 {
		return "–", nil
	}
	parts := make([]string, len(v))
	for i, x := range v {
		if x == 0 && kind == "rate" {
			parts[i] = "–"
			continue
		}
		parts[i] = strings.TrimSuffix(format(x), " ms")
	}
	return strings.Join(parts, " / "), nil
}

func intList(v []int) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = thousands(float64(x), 0)
	}
	return strings.Join(parts, " / ")
}

// batchMean is the mean batch size, "n/a" when the consumer has none.
func batchMean(b *BatchSizes) string {
	if b == nil || b.Count <= 0 {
		return "n/a"
	}
	return strconv.FormatFloat(b.Mean, 'f', 2, 64)
}

// batchSpread is "≤p50 / ≤p90 / ≤max", or why there is none.
func batchSpread(b *BatchSizes, note string) string {
	if b == nil || b.Count <= 0 {
		if note == "" {
			note = "n/a"
		}
		return mdEscape(note)
	}
	return "≤ " + b.P50 + " / ≤ " + b.P90 + " / ≤ " + b.Max
}

// totalsCell is "ok" or a bold failure.
func totalsCell(s BacklogSummary) string {
	if s.TotalsOK {
		return "ok (every cart)"
	}
	return fmt.Sprintf("**FAIL** (%d of %d rounds)", s.Failed, s.Rounds)
}

var _ flag.Value = (*kvFlag)(nil)
