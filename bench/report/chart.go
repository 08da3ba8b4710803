package report

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"slices"
	"strconv"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// Chart geometry, in SVG user units.
const (
	chartW      = 1000
	panelW      = 400
	panelH      = 280
	panelTop    = 110
	panelLeft0  = 70
	panelGap    = 100
	legendTop   = 40
	axisFontPx  = 12
	titleFontPx = 16
	// The throughput bars below the latency panels.
	barsTop   = 480
	barH      = 16
	barGap    = 6
	barsLeft  = 250
	barsWidth = 640
)

type series struct {
	mode, stat string
	color      string
	dash       string
	get        func(loadkit.Point) float64
}

// modeColor is the chart's colour of a mode ("" for none).
func modeColor(mode string) string {
	switch mode {
	case loadkit.ModePooled:
		return "#1f77b4"
	case loadkit.ModePerRequest:
		return "#d95f02"
	case loadkit.ModeWorkerGRPC:
		return "#7570b3"
	case loadkit.ModeWorkerHTTP:
		return "#66a61e"
	case loadkit.ModeWatermill:
		return "#e7298a"
	case loadkit.ModeDaprPubSub:
		return "#e6ab02"
	case loadkit.ModeDaprPubSubBulk:
		return "#b8860b"
	case loadkit.ModeCeiling:
		return "#555555"
	case loadkit.ModeGoSDK:
		return "#a6761d"
	}
	return ""
}

// latencyModes are the modes drawn in the latency panels.
func latencyModes() []string {
	return []string{loadkit.ModePooled, loadkit.ModePerRequest, loadkit.ModeCeiling, loadkit.ModeWatermill}
}

// modeSeries are the p50 and p99 lines of a mode.
func modeSeries(m string) []series {
	return []series{{m, "p50", modeColor(m), "", p50}, {m, "p99", modeColor(m), "6,4", p99}}
}

// chartSeries are the lines of the latency panels.
func chartSeries() []series {
	var out []series
	for _, m := range latencyModes() {
		out = append(out, modeSeries(m)...)
	}
	return out
}

// bar is one row of the throughput chart.
type bar struct {
	label string
	value float64
	color string
	bad   bool // a drain that failed its totals check
}

// latencyChartSVG draws add-item p50 and p99 against users per mode, one
// panel per scenario on a log scale, with the paced p99's range over rounds;
// below them, add-items per second at saturation and the backlog drain
// rates against the HTTP ceiling. It is drawn by hand so that the main
// module needs no plotting library.
func latencyChartSVG(res Results) []byte {
	points := res.Points
	bars, ceiling := throughputBars(res)
	height := barsTop + 40 + len(bars)*(barH+barGap) + 50
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`+"\n",
		chartW, height, chartW, height)
	w(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	w(`<text x="%d" y="24" font-size="%d" text-anchor="middle" font-weight="bold">add-item latency (publish → outcome event) against users</text>`+"\n",
		chartW/2, titleFontPx)

	// Legend: one column per mode, p50 above p99.
	lx := 120
	for _, m := range latencyModes() {
		for i, s := range modeSeries(m) {
			y := legendTop + i*20
			w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2.5"%s/>`+"\n", lx, y, lx+34, y, s.color, dashAttr(s.dash))
			w(`%s`, marker(float64(lx+17), float64(y), s))
			w(`<text x="%d" y="%d" font-size="%d">%s %s</text>`+"\n", lx+42, y+4, axisFontPx, s.mode, s.stat)
		}
		lx += 200
	}

	// A shared y range so that the panels compare at a glance.
	lo, hi := math.Inf(1), math.Inf(-1)
	drawn := latencyModes()
	for _, p := range points {
		if p.Type != loadkit.TypeAddItem || p.Count == 0 || p.Saturation || !slices.Contains(drawn, p.Mode) {
			continue
		}
		for _, v := range []float64{p.P50MS, p.P99MS, p.P99RoundMinMS, p.P99RoundMaxMS} {
			if v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	yMin := math.Pow(10, math.Floor(math.Log10(lo)))
	yMax := math.Pow(10, math.Ceil(math.Log10(hi)))
	if yMax <= yMin {
		yMax = yMin * 10
	}

	for i, sc := range []string{loadkit.ScenarioPaced, loadkit.ScenarioClosed} {
		left := panelLeft0 + i*(panelW+panelGap)
		title := "closed-loop (no think time)"
		if sc == loadkit.ScenarioPaced {
			title = "paced (think " + strconv.FormatFloat(res.Config.ThinkMS, 'f', -1, 64) + " ms)"
		}
		drawPanel(&b, points, panelUsers(points, sc), sc, title, left, yMin, yMax)
	}
	drawBars(&b, bars, ceiling)
	w("</svg>\n")
	return b.Bytes()
}

// panelUsers are the user counts below saturation measured in a scenario.
func panelUsers(points []loadkit.Point, scenario string) []int {
	var users []int
	for _, p := range points {
		if p.Scenario == scenario && !p.Saturation && p.Count > 0 && !slices.Contains(users, p.Users) {
			users = append(users, p.Users)
		}
	}
	slices.Sort(users)
	return users
}

// dashAttr is the stroke-dasharray attribute of a dash pattern, if any.
func dashAttr(d string) string {
	if d == "" {
		return ""
	}
	return ` stroke-dasharray="` + d + `"`
}

// marker is a series' point marker at x, y: a dot for p50, a hollow
// square for p99.
func marker(x, y float64, s series) string {
	if s.stat == "p99" {
		return fmt.Sprintf(`<rect x="%.1f" y="%.1f" width="7" height="7" fill="#ffffff" stroke="%s" stroke-width="2"/>`+"\n", x-3.5, y-3.5, s.color)
	}
	return fmt.Sprintf(`<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", x, y, s.color)
}

// panel is one latency panel of the chart: a scenario's add-item p50 and
// p99 against users, on a log scale shared by the panels.
type panel struct {
	b          *bytes.Buffer
	points     []loadkit.Point
	users      []int
	scenario   string
	left       int
	yMin, yMax float64
	xMax       int
}

// drawPanel draws the panel of scenario, titled title, with its left edge
// at left.
func drawPanel(b *bytes.Buffer, points []loadkit.Point, users []int, scenario, title string, left int, yMin, yMax float64) {
	p := &panel{b: b, points: points, users: users, scenario: scenario, left: left, yMin: yMin, yMax: yMax, xMax: 1}
	for _, u := range users {
		p.xMax = max(p.xMax, u)
	}
	p.drawAxes(title)
	if scenario == loadkit.ScenarioPaced {
		p.drawRoundRanges()
	}
	for _, s := range chartSeries() {
		p.drawSeries(s)
	}
}

func (p *panel) w(format string, args ...any) { fmt.Fprintf(p.b, format, args...) }

// xOf is the x of a user count.
func (p *panel) xOf(u int) float64 {
	return float64(p.left) + float64(u)/float64(p.xMax)*float64(panelW)
}

// yOf is the y of a latency, on the log scale.
func (p *panel) yOf(v float64) float64 {
	f := (math.Log10(v) - math.Log10(p.yMin)) / (math.Log10(p.yMax) - math.Log10(p.yMin))
	return float64(panelTop+panelH) - f*float64(panelH)
}

// drawAxes draws the title, the frame, the y grid at 1, 2 and 5 per decade
// and the x ticks at the user counts.
func (p *panel) drawAxes(title string) {
	left, top, bottom, right := p.left, panelTop, panelTop+panelH, p.left+panelW
	p.w(`<text x="%d" y="%d" font-size="%d" text-anchor="middle">%s</text>`+"\n", left+panelW/2, top-12, axisFontPx+2, html.EscapeString(title))
	p.w(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444444"/>`+"\n", left, top, panelW, panelH)
	for dec := p.yMin; dec < p.yMax*1.0001; dec *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := dec * m
			if v > p.yMax*1.0001 {
				break
			}
			y := p.yOf(v)
			color := "#e6e6e6"
			if m == 1 {
				color = "#c8c8c8"
			}
			p.w(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", left, y, right, y, color)
			p.w(`<text x="%d" y="%.1f" font-size="%d" text-anchor="end">%s</text>`+"\n", left-6, y+4, axisFontPx, tickLabel(v))
		}
	}
	for _, u := range p.users {
		x := p.xOf(u)
		p.w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e6e6e6"/>`+"\n", x, top, x, bottom)
		p.w(`<text x="%.1f" y="%d" font-size="%d" text-anchor="middle">%d</text>`+"\n", x, bottom+16, axisFontPx, u)
	}
	p.w(`<text x="%d" y="%d" font-size="%d" text-anchor="middle">users</text>`+"\n", left+panelW/2, bottom+36, axisFontPx)
	p.w(`<text x="%d" y="%d" font-size="%d" text-anchor="middle" transform="rotate(-90 %d %d)">latency, ms (log scale)</text>`+"\n",
		left-50, top+panelH/2, axisFontPx, left-50, top+panelH/2)
}

// drawRoundRanges draws the paced p99's range over rounds, one bar per mode
// beside the point.
func (p *panel) drawRoundRanges() {
	for i, m := range latencyModes() {
		for _, u := range p.users {
			pt, ok := loadkit.Find(p.points, m, p.scenario, u, loadkit.TypeAddItem)
			if !ok || pt.Count == 0 || pt.Rounds < 2 || pt.P99RoundMinMS <= 0 {
				continue
			}
			x := p.xOf(u) + float64(i-1)*5
			p.w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3" opacity="0.45"><title>%s %d users: p99 per round %s..%s ms</title></line>`+"\n",
				x, p.yOf(pt.P99RoundMaxMS), x, p.yOf(pt.P99RoundMinMS), modeColor(m), m, u, ms(pt.P99RoundMinMS), ms(pt.P99RoundMaxMS))
		}
	}
}

// drawSeries draws one line of the panel with its markers; nothing when
// none of its points was measured.
func (p *panel) drawSeries(s series) {
	var pts [][2]float64
	for _, u := range p.users {
		pt, ok := loadkit.Find(p.points, s.mode, p.scenario, u, loadkit.TypeAddItem)
		if !ok || pt.Count == 0 || s.get(pt) <= 0 {
			continue
		}
		pts = append(pts, [2]float64{p.xOf(u), p.yOf(s.get(pt))})
	}
	if len(pts) == 0 {
		return
	}
	var path bytes.Buffer
	for i, pt := range pts {
		cmd := "L"
		if i == 0 {
			cmd = "M"
		}
		fmt.Fprintf(&path, "%s%.1f,%.1f ", cmd, pt[0], pt[1])
	}
	p.w(`<path d="%s" fill="none" stroke="%s" stroke-width="2.5"%s/>`+"\n", bytes.TrimSpace(path.Bytes()), s.color, dashAttr(s.dash))
	for _, pt := range pts {
		p.w("%s", marker(pt[0], pt[1], s))
	}
}

// throughputBars are the saturation add-item rates of every mode, then the
// backlog drain rates; ceiling is the HTTP ceiling's saturation rate.
func throughputBars(res Results) ([]bar, float64) {
	var bars []bar
	sat := res.Config.SaturationUsers
	for _, m := range loadkit.Modes {
		if v := field(res.Points, m, loadkit.ScenarioClosed, sat, loadkit.TypeAddItem, thr); v != nil {
			bars = append(bars, bar{label: fmt.Sprintf("saturation (%d users): %s", sat, m), value: *v, color: modeColor(m)})
		}
	}
	for _, s := range res.Backlog.Summary {
		if s.CommandsPerS == nil {
			continue
		}
		bars = append(bars, bar{label: fmt.Sprintf("%s backlog drain: %s", s.Scenario, s.Mode), value: *s.CommandsPerS,
			color: modeColor(s.Mode), bad: !s.TotalsOK})
	}
	ceiling := 0.0
	if res.Backlog.CeilingAddItemPerS != nil {
		ceiling = *res.Backlog.CeilingAddItemPerS
	}
	return bars, ceiling
}

func drawBars(b *bytes.Buffer, bars []bar, ceiling float64) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w(`<text x="%d" y="%d" font-size="%d" text-anchor="middle" font-weight="bold">add-items/s at saturation, backlog drain commands/s</text>`+"\n",
		chartW/2, barsTop, titleFontPx)
	if len(bars) == 0 {
		w(`<text x="%d" y="%d" font-size="%d" text-anchor="middle">not measured</text>`+"\n", chartW/2, barsTop+30, axisFontPx)
		return
	}
	top := barsTop + 30
	vmax := floorHotDrainOverCeiling * ceiling
	for _, br := range bars {
		vmax = max(vmax, br.value)
	}
	vmax *= 1.08
	xOf := func(v float64) float64 { return barsLeft + v/vmax*barsWidth }
	bottom := top + len(bars)*(barH+barGap)
	for i, br := range bars {
		y := top + i*(barH+barGap)
		w(`<text x="%d" y="%d" font-size="%d" text-anchor="end">%s</text>`+"\n", barsLeft-8, y+barH-4, axisFontPx, html.EscapeString(br.label))
		stroke := ""
		if br.bad {
			stroke = ` stroke="#d62728" stroke-width="2" stroke-dasharray="4,2"`
		}
		w(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s" opacity="0.85"%s/>`+"\n", barsLeft, y, xOf(br.value)-barsLeft, barH, br.color, stroke)
		label := rate(br.value)
		if br.bad {
			label += " (totals FAIL)"
		}
		w(`<text x="%.1f" y="%d" font-size="%d">%s</text>`+"\n", xOf(br.value)+4, y+barH-4, axisFontPx, label)
	}
	w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444444"/>`+"\n", barsLeft, top-4, barsLeft, bottom)
	if ceiling > 0 {
		for _, l := range []struct {
			v     float64
			color string
			text  string
		}{
			{ceiling, "#555555", "HTTP ceiling " + rate(ceiling) + "/s"},
			{floorHotDrainOverCeiling * ceiling, "#d62728", "hot-drain floor " + strconv.FormatFloat(floorHotDrainOverCeiling, 'f', -1, 64) + "× ceiling"},
		} {
			x := xOf(l.v)
			w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="1.5" stroke-dasharray="5,3"/>`+"\n", x, top-8, x, bottom+4, l.color)
			w(`<text x="%.1f" y="%d" font-size="%d" text-anchor="middle" fill="%s">%s</text>`+"\n", x, bottom+20, axisFontPx, l.color, html.EscapeString(l.text))
		}
	}
}

// tickLabel prints 0.5, 1, 20, 1k, 2k ...
func tickLabel(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}
