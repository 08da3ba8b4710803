package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/cartworker/cartworker/command"
)

func runWatch(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("watch", "[-cart id] [-count n] [flags]",
		"Prints outcome events, of every cart or of -cart, one JSON object a line, until\n"+
			"interrupted or -count events have been printed. Events are not stored: only\n"+
			"those sent while watching are seen.")
	var (
		cartID string
		count  int
	)
	f.fs.StringVar(&cartID, "cart", "", "only events of this cart `id`")
	f.fs.IntVar(&count, "count", 0, "stop after `n` events; 0 means never")
	no := f.natsFlags()
	timeout := f.timeoutFlag("how long to wait for NATS to connect")
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	if count < 0 {
		return f.usageErr(fmt.Errorf("-count %d: must not be negative", count))
	}
	if cartID != "" && !command.ValidCartID(cartID) {
		return f.usageErr(fmt.Errorf("-cart %q: want 1-%d of [A-Za-z0-9_-]", cartID, command.MaxCartIDLen))
	}
	s, err := c.connect(ctx, f, no, *timeout)
	if err != nil {
		return err
	}
	defer s.close()

	subject := s.subjects.Events()
	if cartID != "" {
		subject = s.subjects.CartEvents(cartID)
	}
	sub, err := s.nc.SubscribeSync(subject)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Say "watching" only once the server has the interest, so that a
	// script can start publishing when it sees the line.
	if err := s.nc.FlushTimeout(*timeout); err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	fmt.Fprintf(c.stderr, "watching %s (ctrl-C to stop)\n", subject)

	var line bytes.Buffer
	for n := 0; count == 0 || n < count; {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted: the normal way to stop
			}
			return fmt.Errorf("watch %s: %w", subject, err)
		}
		line.Reset()
		if err := json.Compact(&line, m.Data); err != nil {
			fmt.Fprintf(c.stderr, "skipping an event on %s that is not JSON\n", m.Subject)
			continue
		}
		line.WriteByte('\n')
		if _, err := c.stdout.Write(line.Bytes()); err != nil {
			return err
		}
		n++
	}
	return nil
}
