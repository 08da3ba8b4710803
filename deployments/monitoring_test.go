package deployments_test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metricsql"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/consumer"
	"github.com/cartworker/cartworker/internal/metrics"
)

// The alert rules and the Grafana dashboard may query only what the worker
// exports: metrics.Names(), and the Go runtime and process metrics its
// registry also serves. Every PromQL expression is parsed (MetricsQL's
// parser, restricted below to PromQL's functions and operators) and each
// selector checked: the metric, its labels, and the values of the outcome
// label.

const dashboardFile = "grafana/cartworker.json"

// exported describes the metrics the worker serves.
type exported struct {
	labels     map[string][]string // by metric name
	histograms map[string]bool
}

// workerMetrics reads the worker's registry: every cartworker_ metric of
// metrics.Names() with its labels, plus the go_ and process_ collectors'
// metrics (no labels the queries may use).
func workerMetrics(t *testing.T) exported {
	t.Helper()
	out := exported{labels: map[string][]string{}, histograms: histogramNames(t)}
	ch := make(chan *prometheus.Desc, 256)
	go func() {
		metrics.New().Registry().Describe(ch)
		close(ch)
	}()
	descRE := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		require.NotNil(t, m, "cannot read %s", d)
		var labels []string
		if m[2] != "" {
			labels = strings.Split(m[2], ",")
		}
		out.labels[m[1]] = labels
	}
	for _, name := range metrics.Names() {
		require.Contains(t, out.labels, name, "metrics.Names() lists %s, which the registry does not describe", name)
	}
	for name := range out.histograms {
		require.Contains(t, out.labels, name, "histogram %s is not registered", name)
	}
	// Gathered, not described: the Go collector describes few of its
	// metrics up front.
	families, err := metrics.New().Registry().Gather()
	require.NoError(t, err)
	for _, f := range families {
		if _, ok := out.labels[f.GetName()]; !ok {
			out.labels[f.GetName()] = nil
		}
		if f.GetType() == dto.MetricType_HISTOGRAM {
			out.histograms[f.GetName()] = true
		}
	}
	require.Contains(t, out.labels, "go_goroutines")
	require.Contains(t, out.labels, "process_resident_memory_bytes")
	return out
}

// histogramNames finds the worker's histograms in internal/metrics: the
// Name of every prometheus.HistogramOpts literal. The registry cannot say:
// it describes a metric without its type, and gathers a vector's type only
// once a child exists.
func histogramNames(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("../internal/metrics/*.go")
	require.NoError(t, err)
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := lit.Type.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "HistogramOpts" {
				return true
			}
			for _, e := range lit.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok || kv.Key.(*ast.Ident).Name != "Name" {
					continue
				}
				if s, ok := kv.Value.(*ast.BasicLit); ok && s.Kind == token.STRING {
					name, err := strconv.Unquote(s.Value)
					require.NoError(t, err)
					out[name] = true
				}
			}
			return true
		})
	}
	require.Contains(t, out, "cartworker_command_duration_seconds", "histograms not found in internal/metrics")
	return out
}

// targetLabels are added by the scrape (Prometheus Operator's ServiceMonitor,
// the kubernetes_sd relabelling) to every series.
var targetLabels = []string{"namespace", "pod", "job", "instance", "service", "container", "endpoint"}

// promqlFunctions are PromQL's functions (Prometheus 3); MetricsQL knows
// many more, which a Prometheus would refuse.
var promqlFunctions = strings.Fields(`abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time
	ceil changes clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year
	days_in_month deg delta deriv exp floor histogram_avg histogram_count histogram_fraction
	histogram_quantile histogram_stddev histogram_stdvar histogram_sum hour idelta increase irate
	label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute
	month pi predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh
	sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time
	tan tanh time timestamp vector year`)

// promqlRangeFunctions take a range vector, which MetricsQL lets a query
// leave out and Prometheus does not.
var promqlRangeFunctions = strings.Fields(`absent_over_time avg_over_time changes count_over_time delta deriv
	idelta increase irate last_over_time mad_over_time max_over_time min_over_time predict_linear
	present_over_time quantile_over_time rate resets stddev_over_time stdvar_over_time sum_over_time`)

var promqlAggregations = strings.Fields(`sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio`)

var promqlBinaryOps = strings.Fields(`+ - * / % ^ == != > < >= <= and or unless atan2`)

// grafanaVars replaces Grafana's template variables with values a
// Prometheus would see.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	"${namespace}", ".*", "$namespace", ".*",
)

// promQuery is one PromQL expression and where it is.
type promQuery struct{ where, expr string }

// checkPromQL parses expr and checks that it is PromQL and queries only
// what the worker exports. It returns the metric names it queries.
func checkPromQL(exp exported, expr string) ([]string, error) {
	if strings.Contains(expr, "$") {
		return nil, fmt.Errorf("unreplaced template variable in %q", expr)
	}
	e, err := metricsql.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", expr, err)
	}
	var names []string
	var errs []error
	metricsql.VisitAll(e, func(e metricsql.Expr) {
		switch x := e.(type) {
		case *metricsql.FuncExpr:
			if !slices.Contains(promqlFunctions, x.Name) {
				errs = append(errs, fmt.Errorf("%s() is not a PromQL function", x.Name))
			}
			if slices.Contains(promqlRangeFunctions, x.Name) {
				arg := x.Args[metricsql.GetRollupArgIdx(x)]
				if re, ok := arg.(*metricsql.RollupExpr); !ok || re.Window == nil {
					errs = append(errs, fmt.Errorf("%s() needs a range vector: %s", x.Name, arg.AppendString(nil)))
				}
			}
		case *metricsql.AggrFuncExpr:
			if !slices.Contains(promqlAggregations, x.Name) {
				errs = append(errs, fmt.Errorf("%s is not a PromQL aggregation", x.Name))
			}
		case *metricsql.BinaryOpExpr:
			if !slices.Contains(promqlBinaryOps, x.Op) {
				errs = append(errs, fmt.Errorf("%s is not a PromQL operator", x.Op))
			}
		case *metricsql.MetricExpr:
			name, err := checkSelector(exp, x)
			if err != nil {
				errs = append(errs, err)
			}
			names = append(names, name)
		}
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("%q: %v", expr, errs)
	}
	return names, nil
}

// checkSelector checks one vector selector against the exported metrics.
func checkSelector(exp exported, me *metricsql.MetricExpr) (string, error) {
	if len(me.LabelFilterss) != 1 {
		return "", fmt.Errorf("%s: `or` inside a selector is MetricsQL, not PromQL", me.AppendString(nil))
	}
	filters := me.LabelFilterss[0]
	if len(filters) == 0 || filters[0].Label != "__name__" || filters[0].IsRegexp || filters[0].IsNegative {
		return "", fmt.Errorf("%s: select the metric by its name", me.AppendString(nil))
	}
	name := filters[0].Value
	labels, ok := exp.labels[name]
	if !ok {
		// A histogram's series.
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, found := strings.CutSuffix(name, suffix); found && exp.histograms[base] {
				labels, ok = exp.labels[base], true
				if suffix == "_bucket" {
					labels = append(slices.Clone(labels), "le")
				}
			}
		}
	}
	if !ok {
		return "", fmt.Errorf("the worker exports no metric %s", name)
	}
	for _, f := range filters[1:] {
		if !slices.Contains(labels, f.Label) && !slices.Contains(targetLabels, f.Label) {
			return "", fmt.Errorf("%s has no label %s (it has %v)", name, f.Label, labels)
		}
		if f.Label == "outcome" {
			if err := checkOutcomes(f); err != nil {
				return "", fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return name, nil
}

// outcomes are the values of cartworker_commands_total's outcome label.
var outcomes = []string{
	consumer.LabelApplied, consumer.LabelDuplicate, consumer.LabelRejected, consumer.LabelDeadLetter,
	consumer.LabelRetry, consumer.LabelBreakerOpen, consumer.LabelNotReady, consumer.LabelShutdown, consumer.LabelInvalid,
}

// checkOutcomes accepts an outcome matcher whose value is an outcome, or
// for =~ and !~ an alternation of outcomes.
func checkOutcomes(f metricsql.LabelFilter) error {
	values := []string{f.Value}
	if f.IsRegexp {
		values = strings.Split(f.Value, "|")
	}
	for _, v := range values {
		if !slices.Contains(outcomes, v) {
			return fmt.Errorf("outcome %q is none of %v", v, outcomes)
		}
	}
	return nil
}

func TestPromQLCheck(t *testing.T) {
	exp := workerMetrics(t)
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{`sum by (outcome) (rate(cartworker_commands_total{namespace=~".*"}[5m]))`, true},
		{`histogram_quantile(0.99, sum by (le, op, code) (rate(cartworker_state_request_duration_seconds_bucket[5m])))`, true},
		{`sum(rate(cartworker_batch_size_sum[5m])) / sum(rate(cartworker_batch_size_count[5m]))`, true},
		{`rate(cartworker_commands_total{outcome=~"applied|dead_letter"}[5m])`, true},
		{`max by (pod) (go_goroutines)`, true},
		{`cartworker_no_such_metric`, false},
		{`cartworker_ready_bucket`, false},                                   // not a histogram
		{`cartworker_commands_total_count`, false},                           // a counter vector, not a histogram
		{`rate(cartworker_commands_total[5m]) or up`, false},                 // not the worker's
		{`rate(cartworker_commands_total)`, false},                           // MetricsQL's implicit range
		{`median_over_time(cartworker_ready[5m])`, false},                    // MetricsQL function
		{`cartworker_commands_total{outcome="applyed"}`, false},              // misspelt outcome
		{`cartworker_ready{op="get"}`, false},                                // label the metric lacks
		{`cartworker_ready{namespace="$namespace"}`, false},                  // unreplaced variable
		{`sum(rate(cartworker_commands_total[5m])`, false},                   // syntax
		{`{__name__=~"cartworker_.*"}`, false},                               // unknowable metric
		{`cartworker_ready default 0`, false},                                // MetricsQL operator
		{`cartworker_state_request_duration_seconds_bucket{le="0.1"}`, true}, // histogram bucket label
	} {
		t.Run(tc.expr, func(t *testing.T) {
			_, err := checkPromQL(exp, tc.expr)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				t.Log(err)
			}
		})
	}
}

// alertRule is one rule of a PrometheusRule.
type alertRule struct {
	alert, expr, forDuration string
	labels, annotations      map[string]any
}

func prometheusRules(t *testing.T, m manifest) []alertRule {
	t.Helper()
	var out []alertRule
	for _, g := range mustList(t, m.data, "spec", "groups") {
		require.NotEmpty(t, mustStr(t, g, "name"))
		for _, r := range mustList(t, g, "rules") {
			rule := alertRule{alert: mustStr(t, r, "alert"), expr: mustStr(t, r, "expr")}
			rule.forDuration, _ = r.(map[string]any)["for"].(string)
			rule.labels = mustMap(t, r, "labels")
			rule.annotations = mustMap(t, r, "annotations")
			out = append(out, rule)
		}
	}
	return out
}

func TestAlertRules(t *testing.T) {
	exp := workerMetrics(t)
	sources := []rendering{{name: "the kustomize component"}}
	raw, err := parseFile("k8s/components/prometheus-operator/prometheusrule.yaml")
	require.NoError(t, err)
	sources[0].docs = raw
	sources = append(sources, kubeRenderings(t)...)
	var withRules int
	for _, r := range sources {
		t.Run(r.name, func(t *testing.T) {
			for _, m := range byKind(r.docs, "monitoring.coreos.com/", "PrometheusRule") {
				withRules++
				rules := prometheusRules(t, m)
				queried := map[string]bool{}
				seen := map[string]bool{}
				for _, rule := range rules {
					require.False(t, seen[rule.alert], "alert %s twice", rule.alert)
					seen[rule.alert] = true
					require.Regexp(t, `^Cartworker[A-Za-z]+$`, rule.alert)
					names, err := checkPromQL(exp, rule.expr)
					require.NoError(t, err, rule.alert)
					for _, n := range names {
						queried[n] = true
					}
					if rule.forDuration != "" {
						_, err := time.ParseDuration(rule.forDuration)
						require.NoError(t, err, "%s: for", rule.alert)
					}
					require.Contains(t, []any{"critical", "warning", "info"}, rule.labels["severity"], "%s: severity", rule.alert)
					require.NotEmpty(t, rule.annotations["summary"], "%s: summary", rule.alert)
					require.NotEmpty(t, rule.annotations["description"], "%s: description", rule.alert)
				}
				// What issue 10 asks to be alerted on.
				for _, name := range []string{
					"cartworker_breaker_state",               // breaker open
					"cartworker_dead_letter_stream_messages", // DLQ growth
					"cartworker_consumer_pending_messages",   // consumer lag
					"cartworker_ready",                       // readiness
					// a stuck cart holding up its partition (issue 18)
					"cartworker_partition_oldest_unacked_seconds",
				} {
					require.True(t, queried[name], "no alert on %s", name)
				}
			}
		})
	}
	require.Equal(t, 4, withRules, "the component, the overlay, the chart with add-ons and with full values")
}

// grafanaPanel is the part of a dashboard panel the checks read.
type grafanaPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource map[string]any `json:"datasource"`
	Targets    []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaDashboard struct {
	UID        string         `json:"uid"`
	Title      string         `json:"title"`
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func TestGrafanaDashboard(t *testing.T) {
	exp := workerMetrics(t)
	b, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var dash grafanaDashboard
	require.NoError(t, json.Unmarshal(b, &dash))
	require.Equal(t, "cartworker", dash.UID)
	require.NotEmpty(t, dash.Title)

	var queries []promQuery
	ids := map[int]bool{}
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			require.False(t, ids[p.ID], "panel id %d twice", p.ID)
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
			require.Equal(t, "${datasource}", p.Datasource["uid"], "panel %q: the dashboard's data source variable", p.Title)
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				require.False(t, refs[tg.RefID], "panel %q: refId %s twice", p.Title, tg.RefID)
				refs[tg.RefID] = true
				queries = append(queries, promQuery{where: p.Title, expr: tg.Expr})
			}
		}
	}
	walk(dash.Panels)
	// Query variables: label_values(metric, label) is Grafana's, not PromQL.
	labelValues := regexp.MustCompile(`^label_values\(\s*([^,]+?)\s*,\s*([a-zA-Z_]+)\s*\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(s)
		require.NotNil(t, m, "variable %s: want label_values(metric, label), got %q", v.Name, s)
		require.Contains(t, targetLabels, m[2], "variable %s", v.Name)
		queries = append(queries, promQuery{where: "variable " + v.Name, expr: m[1]})
	}

	queried := map[string]bool{}
	for _, q := range queries {
		names, err := checkPromQL(exp, grafanaVars.Replace(q.expr))
		require.NoError(t, err, q.where)
		for _, n := range names {
			queried[n] = true
		}
	}
	// The panels issue 10 asks for, by the metric each needs.
	for _, name := range []string{
		"cartworker_commands_total",                 // throughput by outcome
		"cartworker_command_duration_seconds",       // p50/p99
		"cartworker_state_request_duration_seconds", // state p99 by op/code
		"cartworker_state_requests_total",
		"cartworker_state_connections_opened_total",
		"cartworker_breaker_state",
		"cartworker_inflight_commands",
		"cartworker_consumer_pending_messages", // lag
		"cartworker_dead_letter_stream_messages",
		"cartworker_dead_letters_total",
		"cartworker_redeliveries_total",
		"cartworker_batch_size",
		"cartworker_apply_carts",
		"cartworker_ready",
		"cartworker_build_info",
	} {
		hist := queried[name+"_bucket"] || queried[name+"_sum"]
		require.True(t, queried[name] || hist, "the dashboard charts no %s", name)
	}
}
