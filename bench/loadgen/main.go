// Command loadgen is cartworker's load generator and benchmark reporter.
// `make bench` (scripts/bench.sh) drives it; each subcommand is also usable
// on its own:
//
//	loadgen run        the upstream locust scenario through NATS and the
//	                   worker (one mode, scenario, user count and round);
//	                   writes a run
//	loadgen ceiling    the same state calls straight to daprd through the
//	                   worker's pooled HTTP client, no NATS and no worker
//	loadgen backlog    publishes a backlog while the consumer is stopped,
//	                   launches it, times the drain and checks every cart
//	                   read back through Dapr; writes a drain
//	loadgen capture    builds one 20-line cart through the worker and saves
//	                   the documents it stored, for the ceiling and the peer
//	loadgen idle       measures the CPU of the worker and its NATS server
//	                   while no command is sent (after a settle, windows
//	                   of /proc readings); writes them for the report
//	loadgen memory     prints the backlog drains' peak RSS against a budget
//	                   (make bench-memory)
//	loadgen report     aggregates runs and drains into bench/REPORT.md,
//	                   results.json and the latency chart
//	loadgen otlp-sink  receives the traced worker's OTLP/HTTP spans and
//	                   counts them (the tracing rounds' collector)
//	loadgen free-ports, loadgen wait, loadgen fetch
//	                   small helpers for scripts/bench.sh
//
// loadgen parses the flags and runs things; what the report computes and
// renders (results, floors, tables, chart) is package bench/report, and the
// scenario driver, recorder and run format are package bench/loadkit.
//
// The scenario: each user creates a cart (cache), adds 20 items one at a
// time (add-item) and deletes it (delete), waiting for each command's
// outcome event before the next, so a latency is publish to outcome event.
// In the paced scenario users pause a think time after each command; in the
// closed-loop one they do not. Only commands started after the warm-up and
// before the end of the window are counted; every loop is bounded in time.
package main

import "os"

func main() {
	os.Exit(loadgen(os.Args[1:], os.Stdout, os.Stderr))
}
