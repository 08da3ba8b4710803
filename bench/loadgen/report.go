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
	"strconv"
	"strings"
	"time"

	"github.com/cartworker/cartworker/bench/loadkit"
	"github.com/cartworker/cartworker/bench/report"
	"github.com/cartworker/cartworker/internal/config"
)

// kvFlag collects repeated key=value flags in order.
type kvFlag struct {
	keys []string
	m    map[string]string
}

var _ flag.Value = (*kvFlag)(nil)

// String implements flag.Value; the flag has no default to show.
func (k *kvFlag) String() string { return "" }

// Set implements flag.Value: it adds one key=value, a repeated key keeping
// its first place and its last value.
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

// versions are the pairs in the order their keys were first given, each
// with its last value.
func (k *kvFlag) versions() []report.Version {
	var out []report.Version
	for _, key := range k.keys {
		out = append(out, report.Version{Name: key, Value: k.m[key]})
	}
	return out
}

// reportFlags are the flags of `loadgen report`.
type reportFlags struct {
	raw, docs, out            string
	peer, watermill, wmProto  string
	daprPubSub                string
	settings, topology, notes string
	backlog, tracing, idle    string
	pacedSamples              int
	versions                  kvFlag
}

// register defines the flags on fs.
func (f *reportFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.raw, "raw", "", "directory of run files (*.json) written by run, ceiling and the peer")
	fs.StringVar(&f.docs, "docs", "", "documents file from 'loadgen capture' (for their sizes)")
	fs.StringVar(&f.out, "out", "bench", "directory for "+report.ReportFile+", "+report.ResultsFile+" and "+report.ChartFile)
	fs.StringVar(&f.peer, "peer", "", `go-sdk peer status: "ok: <client>" or "not available: <reason>"`)
	fs.StringVar(&f.settings, "settings", "", "the run's settings, shown in the report (e.g. BENCH_* values)")
	fs.StringVar(&f.topology, "topology", "", "how the stack was laid out, shown in the report")
	fs.StringVar(&f.notes, "notes", "", "optional file of extra markdown bullet lines for the Notes section")
	fs.StringVar(&f.backlog, "backlog", "", "directory of backlog drains (*.json) written by 'loadgen backlog'")
	fs.StringVar(&f.tracing, "tracing", "", "directory of the tracing rounds' runs (pooled with span export off, traced with it on)")
	fs.StringVar(&f.idle, "idle", "", "file written by 'loadgen idle' (none, or no file there: the idle figures are not measured)")
	fs.StringVar(&f.watermill, "watermill", "", `Watermill peer status: "ok: <client>" or "not available: <reason>"`)
	fs.StringVar(&f.wmProto, "watermill-protocol", "grpc", "the Watermill peer's state transport (grpc or http): it is compared with the worker on the same one")
	fs.StringVar(&f.daprPubSub, "dapr-pubsub", "", `Dapr pub/sub peer status: "ok: <client>" or "not available: <reason>"`)
	fs.IntVar(&f.pacedSamples, "paced-samples", report.DefaultPacedSamples, "add-item samples each paced point was sized for")
	fs.Var(&f.versions, "version", "component=version, repeatable (shown in the report)")
}

// runReport aggregates the runs and drains of a benchmark into REPORT.md,
// results.json and the chart, and prints every floor's verdict.
func runReport(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("report", stderr)
	var f reportFlags
	f.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if f.raw == "" {
		return usageError{errors.New("-raw is required")}
	}
	in, err := f.input(time.Now().UTC())
	if err != nil {
		return err
	}
	res, md, svg, err := report.Build(in)
	if err != nil {
		return err
	}
	if err := writeReport(f.out, res, md, svg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "loadgen: wrote %s, %s and %s in %s (%d runs, %d points)\n",
		report.ReportFile, report.ResultsFile, report.ChartFile, f.out, len(in.Runs), len(res.Points))
	for _, fl := range slices.Concat(res.Floors, res.SpeedFloors) {
		fmt.Fprintf(stdout, "  floor %-70s %s\n", fl.Name+":", report.FloorResult(fl))
	}
	return nil
}

// input reads what the flags name into the report's input, generated at
// now.
func (f *reportFlags) input(now time.Time) (report.Input, error) {
	in := report.Input{
		Versions: f.versions.versions(), WatermillProtocol: f.wmProto, PacedSamples: f.pacedSamples,
		Settings: f.settings, Topology: f.topology, Machine: detectMachine(), Now: now,
	}
	var err error
	if in.Runs, err = loadkit.ReadRuns(f.raw); err != nil {
		return in, err
	}
	if len(in.Runs) == 0 {
		return in, fmt.Errorf("no runs in %s", f.raw)
	}
	if f.docs != "" {
		if in.Docs, err = loadkit.ReadDocs(f.docs); err != nil {
			return in, err
		}
	}
	in.Peer = report.PeerOf(loadkit.ModeGoSDK, f.peer, in.Runs)
	in.WatermillPeer = report.WatermillPeerOf(f.watermill, in.Runs)
	in.DaprPubSubPeer = report.DaprPubSubPeerOf(f.daprPubSub, in.Runs)
	if in.Backlog, err = report.ReadBacklog(f.backlog); err != nil {
		return in, err
	}
	if f.tracing != "" {
		if in.Tracing, err = loadkit.ReadRuns(f.tracing); err != nil {
			return in, err
		}
	}
	if in.Idle, err = report.ReadIdle(f.idle); err != nil {
		return in, err
	}
	if in.Notes, err = readNotes(f.notes); err != nil {
		return in, err
	}
	in.PoolLimit, in.Concurrency = workerDefaults()
	return in, nil
}

// readNotes reads the markdown bullet lines of path, without their "- ";
// none when path is "".
func readNotes(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var notes []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			notes = append(notes, strings.TrimPrefix(l, "- "))
		}
	}
	return notes, nil
}

// writeReport writes results.json, REPORT.md and the chart into dir.
func writeReport(dir string, res report.Results, md, svg []byte) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", report.ResultsFile, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, data := range map[string][]byte{report.ResultsFile: append(b, '\n'), report.ReportFile: md, report.ChartFile: svg} {
		if err := writeFileAtomic(filepath.Join(dir, name), data); err != nil {
			return err
		}
	}
	return nil
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

// detectMachine describes this machine, from the Go runtime and /proc.
func detectMachine() report.Machine {
	m := report.Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
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

// parseMemTotal reads MemTotal, in KiB, from /proc/meminfo.
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
