package report

import (
	"bytes"
	_ "embed"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/template"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// This file renders REPORT.md: the template's view of the results, and the
// formats of its figures.

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

// FloorResult is a floor's value and verdict, as `loadgen report` prints
// it.
func FloorResult(f Floor) string { return floorValue(f) + " — " + floorVerdict(f) }

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
	case "%":
		return pct2(*f.Value)
	default:
		return strconv.FormatFloat(*f.Value, 'f', 3, 64)
	}
}

// unitRounds is each round's value in unit, as a floor's value is written,
// separated by slashes; "–" for none.
func unitRounds(unit string, rounds []float64) string {
	if len(rounds) == 0 {
		return "–"
	}
	parts := make([]string, len(rounds))
	for i, v := range rounds {
		parts[i] = floorValue(Floor{Value: &v, Unit: unit})
	}
	return strings.Join(parts, " / ")
}

// figureValue is the value of a figure with its unit, as a floor's.
func figureValue(f Figure) string { return floorValue(Floor{Value: f.Value, Unit: f.Unit}) }

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

// parseReportTemplate returns the template of REPORT.md, rendered from a
// reportView. It is parsed for each report rather than once at start-up, so
// that a mistake in it is an error of `loadgen report`, not a panic.
func parseReportTemplate() (*template.Template, error) {
	t, err := template.New("report.md.tmpl").Funcs(template.FuncMap{
		// Figures.
		"ms":        ms,
		"rate":      rate,
		"count":     count,
		"commas":    func(n int) string { return thousands(float64(n), 0) },
		"trimFloat": trimFloat,
		"opt":       optFormat,
		"ratio":     ratio,
		// Cells.
		"pctOrDash":   pctOrDash,
		"pctPlain":    pctPlain,
		"rssText":     rssText,
		"callsText":   callsText,
		"otherCPU":    otherCPU,
		"floorValue":  floorValue,
		"figureValue": figureValue,
		"unitRounds":  unitRounds,
		"floorCell":   floorCell,
		"limitText":   limitText,
		// New figures.
		"speedLimitText": speedLimitText,
		"roundsList":     roundsList,
		"intList":        intList,
		"batchMean":      batchMean,
		"batchSpread":    batchSpread,
		"totalsCell":     totalsCell,
		"okCell":         okCell,
		"stageCell":      stageCell,
		"stages":         loadkit.WorkerStages,
		// Text.
		"mdEscape": mdEscape,
		"orNA":     orNA,
		"list":     func(s ...string) []string { return s },
	}).Parse(reportTemplateText)
	if err != nil {
		return nil, fmt.Errorf("parsing %s's template: %w", ReportFile, err)
	}
	return t, nil
}

// reportView is what report.md.tmpl is rendered from: the results and the
// lookups its tables make.
type reportView struct {
	Results
	ChartFile   string
	VersionRows []Version // in the order of the -version flags
	// Floors passed, failed and not measured.
	Passed, Failed, Missing int
	Modes                   []string
	CPU                     *cpuTable // nil when no saturation point has CPU figures
	ErrorExamples           []string
	FloorRSSMiB             float64
	// Speed floors passed, missed and not measured.
	SpeedPassed, SpeedMissed, SpeedMissing  int
	FloorWorkerOverWatermill, FloorHotDrain float64
	// The floors of the worker against the Dapr pub/sub peer.
	FloorWorkerOverDaprPubSub, FloorHotDrainOverDaprPubSub float64
	// FloorIdleCPUPct is the idle worker's and its NATS server's floor.
	FloorIdleCPUPct float64
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

// renderMarkdown renders REPORT.md.
func renderMarkdown(res Results, in Input) ([]byte, error) {
	tmpl, err := parseReportTemplate()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, newReportView(res, in)); err != nil {
		return nil, fmt.Errorf("rendering %s: %w", ReportFile, err)
	}
	return b.Bytes(), nil
}

// newReportView is the view of res that the template renders.
func newReportView(res Results, in Input) *reportView {
	v := &reportView{
		Results: res, ChartFile: ChartFile, Modes: loadkit.Modes, VersionRows: in.Versions,
		CPU: cpuTableOf(res, res.Config.SaturationUsers), ErrorExamples: errorExamples(in.Runs), FloorRSSMiB: floorRSSMiB,
	}
	v.Passed, v.Failed, v.Missing = countVerdicts(res.Floors, "FAIL")
	v.SpeedPassed, v.SpeedMissed, v.SpeedMissing = countVerdicts(res.SpeedFloors, "MISS")
	v.FloorWorkerOverWatermill, v.FloorHotDrain = floorWorkerOverWatermill, floorHotDrainOverCeiling
	v.FloorWorkerOverDaprPubSub, v.FloorHotDrainOverDaprPubSub = floorWorkerOverDaprPubSub, floorHotDrainOverDaprPubSub
	for _, r := range res.Backlog.Runs {
		v.BacklogFailed = v.BacklogFailed || !r.Complete()
	}
	v.BacklogVsWatermill = backlogVsWatermill(res)
	v.FloorIdleCPUPct = floorIdleCPUPct
	return v
}

// countVerdicts counts the floors that passed, those whose verdict is
// failed ("FAIL" for the earlier floors, "MISS" for the speed floors), and
// the rest, not measured.
func countVerdicts(floors []Floor, failed string) (passed, failures, missing int) {
	for _, f := range floors {
		switch floorVerdict(f) {
		case "pass":
			passed++
		case failed:
			failures++
		default:
			missing++
		}
	}
	return passed, failures, missing
}

// backlogVsWatermill is the worker's drain rate over the Watermill peer's,
// per backlog scenario both drained: the worker on the peer's transport
// when it drained too, else the worker as shipped.
func backlogVsWatermill(res Results) []scenarioRatio {
	var out []scenarioRatio
	for _, sc := range BacklogScenarios() {
		mode := res.Watermill.WorkerMode
		w := findBacklog(res.Backlog.Summary, sc, mode)
		if w == nil {
			mode = loadkit.ModePooled
			w = findBacklog(res.Backlog.Summary, sc, mode)
		}
		p := findBacklog(res.Backlog.Summary, sc, loadkit.ModeWatermill)
		if w != nil && p != nil {
			out = append(out, scenarioRatio{sc, mode, ratio(w.CommandsPerS, p.CommandsPerS)})
		}
	}
	return out
}

// optFormats are the formats of the template's opt and roundsList
// functions, by name.
func optFormats() map[string]func(float64) string {
	return map[string]func(float64) string{
		"ms": msUnit, "rate": rate, "times": times, "pct": pct, "pctPlain": pctPlain, "pct2": pct2, "mib": mib,
		"spans": func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	}
}

// optFormat formats v as kind, "n/a" when v is nil.
func optFormat(kind string, v *float64) (string, error) {
	format, ok := optFormats()[kind]
	if !ok {
		return "", fmt.Errorf("opt: unknown format %q", kind)
	}
	if v == nil {
		return "n/a", nil
	}
	return format(*v), nil
}

// cpuOrder is the column order of the CPU table; other names follow.
func cpuOrder() []string {
	return []string{
		"worker-pooled", "worker-per-request", "worker-grpc", "worker-http", "watermill", "dapr-pubsub", "dapr-pubsub-bulk",
		"nats-pooled", "nats-per-request", "nats-worker-grpc", "nats-worker-http", "nats-watermill", "nats-dapr-pubsub", "nats-dapr-pubsub-bulk",
		"daprd", "daprd-dapr-pubsub", "daprd-dapr-pubsub-bulk", "redis", "loadgen", "other",
	}
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
	cols, rest := loadkit.OrderKeys(cpuOrder(), names)
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
	format, ok := optFormats()[kind]
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

// okCell is "ok", a bold "FAIL", or "n/a" when not measured.
func okCell(ok *bool) string {
	switch {
	case ok == nil:
		return "n/a"
	case *ok:
		return "ok"
	}
	return "**FAIL**"
}

// totalsCell is "ok" or a bold failure.
func totalsCell(s BacklogSummary) string {
	if s.TotalsOK {
		return "ok (every cart)"
	}
	return fmt.Sprintf("**FAIL** (%d of %d rounds)", s.Failed, s.Rounds)
}
