// Command cartctl publishes cart commands to cartworker, waits for their
// outcomes, reads carts back through Dapr, watches outcome events and lists
// and replays dead letters.
//
// Run "cartctl -h" for the commands and "cartctl <command> -h" for their
// flags. Exit status: 0 success, 1 failure (including a rejected command),
// 2 usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err on stderr and maps it to the exit status.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var uerr *usageError
	if errors.As(err, &uerr) {
		fmt.Fprintf(stderr, "%s\nRun '%s -h' for usage.\n", uerr.Error(), uerr.prog())
		return 2
	}
	fmt.Fprintf(stderr, "cartctl: %v\n", err)
	return 1
}

// run is the whole program but for the exit: args exclude the program name.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := &cli{stdout: stdout, stderr: stderr, lookupEnv: os.LookupEnv}
	return c.run(ctx, args)
}

// cli carries what every command needs. The environment is a function so that
// tests can run commands in parallel without touching the process's.
type cli struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
}

func (c *cli) getenv(name string) string {
	v, _ := c.lookupEnv(name)
	return v
}

// subcommand is one "cartctl <name>".
type subcommand struct {
	name, summary string
	run           func(ctx context.Context, c *cli, args []string) error
}

func subcommands() []subcommand {
	return []subcommand{
		{"cache", "create or replace a cart and wait for the outcome", runCache},
		{"add", "add line items to a cart and wait for the outcome", runAdd},
		{"delete", "delete a cart and wait for the outcome", runDelete},
		{"get", "read a cart from the Dapr state store", runGet},
		{"watch", "print outcome events as JSON lines", runWatch},
		{"dlq", "list or replay dead letters (dlq list, dlq replay)", runDLQ},
		{"demo", "create a cart, add three items and print its totals", runDemo},
	}
}

func (c *cli) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		c.printUsage(c.stderr)
		return &usageError{err: errors.New("no command given")}
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && name == "help" {
			// "cartctl help add" is "cartctl add -h".
			return c.run(ctx, []string{args[1], "-h"})
		}
		c.printUsage(c.stdout)
		return nil
	}
	for _, sc := range subcommands() {
		if sc.name == name {
			return sc.run(ctx, c, args[1:])
		}
	}
	return &usageError{err: fmt.Errorf("unknown command %q", name)}
}

func (c *cli) printUsage(w io.Writer) {
	fmt.Fprint(w, `cartctl publishes cart commands to cartworker and shows what it did.

Usage:
  cartctl <command> [flags]

Commands:
`)
	for _, sc := range subcommands() {
		fmt.Fprintf(w, "  %-7s  %s\n", sc.name, sc.summary)
	}
	fmt.Fprint(w, `
Run 'cartctl <command> -h' for the flags of a command.

Examples:
  cartctl demo
  cartctl cache -cart c-1 -tenant T1 -store-code S1 -terminal 1
  cartctl add -cart c-1 -item ITEM001 -qty 2 -price 120 -tax 01 -desc Coffee
  cartctl get -cart c-1
  cartctl watch -cart c-1
  cartctl dlq list
  cartctl dlq replay -seq 3

Environment (a flag given on the command line wins):
  NATS_URL             -nats-url
  NATS_USER            NATS user name, with NATS_PASSWORD
  NATS_PASSWORD        NATS password
  NATS_TOKEN           NATS authentication token
  NATS_CREDS           NATS credentials (.creds) file
  CART_SUBJECT_PREFIX  -prefix
  DAPR_HTTP_ENDPOINT   -dapr
  DAPR_API_TOKEN       -dapr-token
  CART_STATE_STORE     -store

Exit status: 0 success, 1 failure or rejected command, 2 usage error.
`)
}
