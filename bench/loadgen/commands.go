package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// loadgen runs the command in args until it ends or SIGINT or SIGTERM
// arrives, reports its error on stderr and returns the exit status: 130
// when interrupted (as a shell expects of a program stopped by Ctrl-C, so
// that scripts/bench.sh stops too rather than starting the next run), 0 for
// -h, 2 for a usage error, 1 for any other failure.
func loadgen(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, args, stdout, stderr)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case interrupted:
		fmt.Fprintln(stderr, "loadgen: interrupted")
		return 130
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	}
	fmt.Fprintln(stderr, "loadgen:", err)
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// usageError is a mistake on the command line: loadgen exits 2 for it.
type usageError struct{ error }

// Unwrap returns the mistake.
func (u usageError) Unwrap() error { return u.error }

type subcommand struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func subcommands() []subcommand {
	return []subcommand{
		{"run", "run the cart scenario through NATS and the worker; write one run as JSON", runWorker},
		{"ceiling", "run the same state calls directly against daprd (pooled HTTP); write one run", runCeiling},
		{"backlog", "publish a backlog with the consumer stopped, launch it, time the drain, check every cart", runBacklog},
		{"capture", "build one 20-line cart through the worker and save its documents", runCapture},
		{"idle", "measure the CPU of processes with no commands sent (the idle worker and its NATS server); write it as JSON", runIdle},
		{"memory", "print the backlog drains' peak RSS and fail when one is over a budget (make bench-memory)", runMemory},
		{"report", "aggregate runs into REPORT.md, results.json and the chart", runReport},
		{"free-ports", "print N free TCP ports on 127.0.0.1", runFreePorts},
		{"wait", "wait until an HTTP URL answers with a status, or a TCP address accepts", runWait},
		{"fetch", "GET a URL (e.g. a pprof profile) into a file, bounded in time", runFetch},
		{"otlp-sink", "receive OTLP/HTTP spans and count them (the tracing rounds' collector)", runOTLPSink},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "help" || args[0] == "--help" {
		fmt.Fprintln(stderr, "Usage: loadgen <command> [flags]\n\nCommands:")
		for _, sc := range subcommands() {
			fmt.Fprintf(stderr, "  %-11s %s\n", sc.name, sc.summary)
		}
		fmt.Fprintln(stderr, "\nRun 'loadgen <command> -h' for its flags.")
		if len(args) == 0 {
			return usageError{errors.New("no command given")}
		}
		return nil
	}
	for _, sc := range subcommands() {
		if sc.name == args[0] {
			return sc.run(ctx, args[1:], stdout, stderr)
		}
	}
	return usageError{fmt.Errorf("unknown command %q", args[0])}
}

// newFlagSet returns a flag set whose errors are returned, not fatal.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("loadgen "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}
