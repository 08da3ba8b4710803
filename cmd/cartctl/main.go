// Command cartctl publishes cart commands to cartworker, waits for their
// outcomes, reads carts back through Dapr, watches outcome events, publishes
// raw messages, and lists, replays and removes dead letters.
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
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	c := &cli{prog: invokedAs(os.Args[0]), stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv}
	err := c.run(ctx, os.Args[1:])
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// invokedAs is how to run cartctl again the way it was run, for the
// commands it suggests: "cartctl" when the shell found it on PATH, the path
// that was typed (such as bin/cartctl, which `make build` writes) otherwise,
// and "go run ./cmd/cartctl" for a binary go run built in a temporary
// directory.
func invokedAs(arg0 string) string {
	switch {
	case !strings.ContainsRune(arg0, os.PathSeparator):
		return "cartctl"
	case strings.Contains(arg0, "go-build"):
		return "go run ./cmd/cartctl"
	}
	return arg0
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

// cli carries what every command needs. The environment is a function so that
// tests can run commands in parallel without touching the process's.
type cli struct {
	// prog is how the user runs cartctl (see invokedAs); empty means
	// "cartctl".
	prog           string
	stdin          io.Reader
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
}

// self is the command that runs cartctl, for the commands it suggests.
func (c *cli) self() string {
	if c.prog == "" {
		return "cartctl"
	}
	return c.prog
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
		{"publish", "publish a raw message body from a file (publish -raw)", runPublishRaw},
		{"dlq", "list, replay or remove dead letters (dlq list, replay, rm, purge)", runDLQ},
		{"demo", "create a cart, add three items and print its totals", runDemo},
	}
}

func (c *cli) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		c.printUsage(c.stderr)
		return &usageError{self: c.prog, err: errors.New("no command given")}
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
	return &usageError{self: c.prog, err: fmt.Errorf("unknown command %q", name)}
}

func (c *cli) printUsage(w io.Writer) {
	fmt.Fprintf(w, `cartctl publishes cart commands to cartworker and shows what it did.

Usage:
  %[1]s <command> [flags]

Commands:
`, c.self())
	for _, sc := range subcommands() {
		fmt.Fprintf(w, "  %-7s  %s\n", sc.name, sc.summary)
	}
	fmt.Fprintf(w, `
Run '%[1]s <command> -h' for the flags of a command.

Examples:
  %[1]s demo
  %[1]s cache -cart c-1 -tenant T1 -store-code S1 -terminal 1
  %[1]s add -cart c-1 -item ITEM001 -qty 2 -price 120 -tax 01 -desc Coffee
  %[1]s get -cart c-1
  %[1]s watch -cart c-1
  %[1]s publish -raw cart.cmd.c-1.delete delete.json
  %[1]s dlq list
  %[1]s dlq replay -seq 3
  %[1]s dlq rm -seq 3

Environment (a flag given on the command line wins):
  NATS_URL             -nats-url
  NATS_USER            NATS user name, with NATS_PASSWORD
  NATS_PASSWORD        NATS password
  NATS_TOKEN           NATS authentication token
  NATS_CREDS           NATS credentials (.creds) file
  NATS_NKEY_SEED       -nats-nkey-seed, file of a NATS user nkey seed
  NATS_TLS_CA          -nats-tls-ca, CA bundle that signed the server's certificate
  NATS_TLS_CERT        -nats-tls-cert, client certificate (mutual TLS), with NATS_TLS_KEY
  NATS_TLS_KEY         -nats-tls-key, its private key
  CART_SUBJECT_PREFIX  -prefix
  DAPR_HTTP_ENDPOINT   -dapr
  DAPR_API_TOKEN       -dapr-token
  CART_STATE_STORE     -store

Exit status: 0 success, 1 failure or rejected command, 2 usage error.
`, c.self())
}
