// Command worker is cartworker: it pulls cart commands from NATS JetStream
// and applies them to carts in a Dapr state store through one pooled,
// circuit-broken HTTP client. Run it with -h for every setting.
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

	"github.com/cartworker/cartworker/internal/app"
	"github.com/cartworker/cartworker/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "cartworker:", err)
		os.Exit(1)
	}
}

// run loads the configuration and runs the worker until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	return app.Run(ctx, cfg, app.NewLogger(cfg, stderr))
}
