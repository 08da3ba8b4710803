package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strconv"

	"github.com/cartworker/cartworker/bench/loadkit"
)

// Chart geometry, in SVG user units.
const (
	chartW      = 1000
	chartH      = 440
	panelW      = 400
	panelH      = 280
	panelTop    = 90
	panelLeft0  = 70
	panelGap    = 100
	legendTop   = 40
	axisFontPx  = 12
	titleFontPx = 16
)

type series struct {
	mode, stat string
	color      string
	dash       string
	get        func(loadkit.Point) float64
}

var chartSeries = []series{
	{loadkit.ModePooled, "p50", "#1f77b4", "", p50},
	{loadkit.ModePooled, "p99", "#1f77b4", "6,4", p99},
	{loadkit.ModePerRequest, "p50", "#d95f02", "", p50},
	{loadkit.ModePerRequest, "p99", "#d95f02", "6,4", p99},
}

// latencyChartSVG draws add-item p50 and p99 against users for the pooled
// and per-request modes: one panel per scenario, log-scale latency. It is
// drawn by hand so that the main module needs no plotting library.
func latencyChartSVG(points []loadkit.Point, users []int, thinkMS float64) []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`+"\n",
		chartW, chartH, chartW, chartH)
	w(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	w(`<text x="%d" y="24" font-size="%d" text-anchor="middle" font-weight="bold">add-item latency (publish → outcome event) against users</text>`+"\n",
		chartW/2, titleFontPx)

	// Legend.
	lx := 190
	for _, s := range chartSeries {
		w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2.5"%s/>`+"\n", lx, legendTop, lx+34, legendTop, s.color, dashAttr(s.dash))
		w(`%s`, marker(float64(lx+17), float64(legendTop), s))
		w(`<text x="%d" y="%d" font-size="%d">%s %s</text>`+"\n", lx+42, legendTop+4, axisFontPx, s.mode, s.stat)
		lx += 160
	}

	// A shared y range so that the panels compare at a glance.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range points {
		if p.Type != loadkit.TypeAddItem || p.Count == 0 || !inUsers(p.Users, users) ||
			(p.Mode != loadkit.ModePooled && p.Mode != loadkit.ModePerRequest) {
			continue
		}
		for _, v := range []float64{p.P50MS, p.P99MS} {
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
	xMax := 1
	for _, u := range users {
		xMax = max(xMax, u)
	}

	for i, sc := range []string{loadkit.ScenarioPaced, loadkit.ScenarioClosed} {
		left := panelLeft0 + i*(panelW+panelGap)
		title := "closed-loop (no think time)"
		if sc == loadkit.ScenarioPaced {
			title = "paced (think " + strconv.FormatFloat(thinkMS, 'f', -1, 64) + " ms)"
		}
		drawPanel(&b, points, users, sc, title, left, xMax, yMin, yMax)
	}
	w("</svg>\n")
	return b.Bytes()
}

func inUsers(u int, users []int) bool {
	for _, v := range users {
		if v == u {
			return true
		}
	}
	return false
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

func drawPanel(b *bytes.Buffer, points []loadkit.Point, users []int, scenario, title string, left, xMax int, yMin, yMax float64) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	top, bottom, right := panelTop, panelTop+panelH, left+panelW
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

	for _, s := range chartSeries {
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

// tickLabel prints 0.5, 1, 20, 1k, 2k ...
func tickLabel(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}
