package main

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

// modeColors are the chart's colours per mode.
var modeColors = map[string]string{
	loadkit.ModePooled:     "#1f77b4",
	loadkit.ModePerRequest: "#d95f02",
	loadkit.ModeWorkerGRPC: "#7570b3",
	loadkit.ModeWorkerHTTP: "#66a61e",
	loadkit.ModeWatermill:  "#e7298a",
	loadkit.ModeCeiling:    "#555555",
	loadkit.ModeGoSDK:      "#a6761d",
}

// latencyModes are the modes drawn in the latency panels.
var latencyModes = []string{loadkit.ModePooled, loadkit.ModePerRequest, loadkit.ModeCeiling, loadkit.ModeWatermill}

func chartSeries() []series {
	var out []series
	for _, m := range latencyModes {
		out = append(out,
			series{m, "p50", modeColors[m], "", p50},
			series{m, "p99", modeColors[m], "6,4", p99})
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
	for _, m := range latencyModes {
		for i, s := range []series{{m, "p50", modeColors[m], "", p50}, {m, "p99", modeColors[m], "6,4", p99}} {
			y := legendTop + i*20
			w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2.5"%s/>`+"\n", lx, y, lx+34, y, s.color, dashAttr(s.dash))
			w(`%s`, marker(float64(lx+17), float64(y), s))
			w(`<text x="%d" y="%d" font-size="%d">%s %s</text>`+"\n", lx+42, y+4, axisFontPx, s.mode, s.stat)
		}
		lx += 200
	}

	// A shared y range so that the panels compare at a glance.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range points {
		if p.Type != loadkit.TypeAddItem || p.Count == 0 || p.Saturation || !slices.Contains(latencyModes, p.Mode) {
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

func dashAttr(d string) string {
	if d == "" {
		return ""
	}
	return ` stroke-dasharray="` + d + `"`
}

func marker(x, y float64, s series) string {
	if s.stat == "p99" {
		return fmt.Sprintf(`<rect x="%.1f" y="%.1f" width="7" height="7" fill="#ffffff" stroke="%s" stroke-width="2"/>`+"\n", x-3.5, y-3.5, s.color)
	}
	return fmt.Sprintf(`<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", x, y, s.color)
}

func drawPanel(b *bytes.Buffer, points []loadkit.Point, users []int, scenario, title string, left int, yMin, yMax float64) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	top, bottom, right := panelTop, panelTop+panelH, left+panelW
	xMax := 1
	for _, u := range users {
		xMax = max(xMax, u)
	}
	xOf := func(u int) float64 { return float64(left) + float64(u)/float64(xMax)*float64(panelW) }
	yOf := func(v float64) float64 {
		f := (math.Log10(v) - math.Log10(yMin)) / (math.Log10(yMax) - math.Log10(yMin))
		return float64(bottom) - f*float64(panelH)
	}
	w(`<text x="%d" y="%d" font-size="%d" text-anchor="middle">%s</text>`+"\n", left+panelW/2, top-12, axisFontPx+2, html.EscapeString(title))
	w(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444444"/>`+"\n", left, top, panelW, panelH)

	// Y grid: 1, 2, 5 per decade.
	for dec := yMin; dec < yMax*1.0001; dec *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := dec * m
			if v > yMax*1.0001 {
				break
			}
			y := yOf(v)
			color := "#e6e6e6"
			if m == 1 {
				color = "#c8c8c8"
			}
			w(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", left, y, right, y, color)
			w(`<text x="%d" y="%.1f" font-size="%d" text-anchor="end">%s</text>`+"\n", left-6, y+4, axisFontPx, tickLabel(v))
		}
	}
	// X ticks at the user counts.
	for _, u := range users {
		x := xOf(u)
		w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e6e6e6"/>`+"\n", x, top, x, bottom)
		w(`<text x="%.1f" y="%d" font-size="%d" text-anchor="middle">%d</text>`+"\n", x, bottom+16, axisFontPx, u)
	}
	w(`<text x="%d" y="%d" font-size="%d" text-anchor="middle">users</text>`+"\n", left+panelW/2, bottom+36, axisFontPx)
	w(`<text x="%d" y="%d" font-size="%d" text-anchor="middle" transform="rotate(-90 %d %d)">latency, ms (log scale)</text>`+"\n",
		left-50, top+panelH/2, axisFontPx, left-50, top+panelH/2)

	// The paced p99's range over rounds, one bar per mode beside the point.
	if scenario == loadkit.ScenarioPaced {
		for i, m := range latencyModes {
			for _, u := range users {
				p, ok := loadkit.Find(points, m, scenario, u, loadkit.TypeAddItem)
				if !ok || p.Count == 0 || p.Rounds < 2 || p.P99RoundMinMS <= 0 {
					continue
				}
				x := xOf(u) + float64(i-1)*5
				w(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3" opacity="0.45"><title>%s %d users: p99 per round %s..%s ms</title></line>`+"\n",
					x, yOf(p.P99RoundMaxMS), x, yOf(p.P99RoundMinMS), modeColors[m], m, u, ms(p.P99RoundMinMS), ms(p.P99RoundMaxMS))
			}
		}
	}

	for _, s := range chartSeries() {
		var pts [][2]float64
		for _, u := range users {
			p, ok := loadkit.Find(points, s.mode, scenario, u, loadkit.TypeAddItem)
			if !ok || p.Count == 0 || s.get(p) <= 0 {
				continue
			}
			pts = append(pts, [2]float64{xOf(u), yOf(s.get(p))})
		}
		if len(pts) == 0 {
			continue
		}
		var path bytes.Buffer
		for i, p := range pts {
			cmd := "L"
			if i == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%.1f,%.1f ", cmd, p[0], p[1])
		}
		w(`<path d="%s" fill="none" stroke="%s" stroke-width="2.5"%s/>`+"\n", bytes.TrimSpace(path.Bytes()), s.color, dashAttr(s.dash))
		for _, p := range pts {
			w("%s", marker(p[0], p[1], s))
		}
	}
}

// throughputBars are the saturation add-item rates of every mode, then the
// backlog drain rates; ceiling is the HTTP ceiling's saturation rate.
func throughputBars(res Results) ([]bar, float64) {
	var bars []bar
	sat := res.Config.SaturationUsers
	for _, m := range loadkit.Modes {
		if v := field(res.Points, m, loadkit.ScenarioClosed, sat, loadkit.TypeAddItem, thr); v != nil {
			bars = append(bars, bar{label: fmt.Sprintf("saturation (%d users): %s", sat, m), value: *v, color: modeColors[m]})
		}
	}
	for _, s := range res.Backlog.Summary {
		if s.CommandsPerS == nil {
			continue
		}
		bars = append(bars, bar{label: fmt.Sprintf("%s backlog drain: %s", s.Scenario, s.Mode), value: *s.CommandsPerS,
			color: modeColors[s.Mode], bad: !s.TotalsOK})
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
