// Package report turns the benchmark's raw runs and backlog drains into its
// results: bench/results.json (Results), bench/REPORT.md and the latency
// chart bench/latency.svg, all from one Build. It computes the saturation
// point, the ratios, the issue's floors and the speed floors of "faster
// than a direct Dapr client", summarises the backlog drains and the cost of
// tracing, and renders the tables and the chart.
//
// It does no measuring and reads no process: `loadgen report` gathers the
// Input (runs read back with loadkit, drains with ReadBacklog, the machine
// and the script's notes) and writes what Build returns; `loadgen backlog`
// writes a BacklogRun per drain and `loadgen memory` prints MemoryTable.
package report
