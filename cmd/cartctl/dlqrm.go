package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
)

// errNotConfirmed is the answer to a confirmation that was anything but yes.
var errNotConfirmed = errors.New("not confirmed")

func runDLQRemove(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("dlq rm", "-seq n [-yes] [flags]",
		"Deletes the dead letter at stream sequence -seq from CART_DLQ, for good, after showing\n"+
			"it and asking for confirmation (y) on the terminal; -yes skips the question for scripts.\n"+
			"'cartctl dlq replay' deletes a dead letter once it is replayed.")
	var (
		seq     uint64
		yes     bool
		no      = f.natsFlags()
		timeout = f.timeoutFlag("how long reading and deleting may take (the question waits as long as it must)")
	)
	f.fs.Uint64Var(&seq, "seq", 0, "stream sequence `seq` of the dead letter (required)")
	f.fs.BoolVar(&yes, "yes", false, "do not ask for confirmation")
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	if seq == 0 {
		return f.usageErr(errors.New("-seq is required"))
	}
	s, err := c.connect(ctx, f, no, *timeout)
	if err != nil {
		return err
	}
	defer s.close()
	st, m, err := func() (jetstream.Stream, *jetstream.RawStreamMsg, error) {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		st, err := dlqStream(ctx, s)
		if err != nil {
			return nil, nil, err
		}
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil, fmt.Errorf("no dead letter at seq %d in %s", seq, command.StreamDeadLetters)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read %s at seq %d: %w", command.StreamDeadLetters, seq, err)
		}
		return st, m, nil
	}()
	if err != nil {
		return err
	}

	if !yes {
		if err := printDeadLetters(c.stderr, []deadLetter{newDeadLetter(m)}, false); err != nil {
			return err
		}
		prompt := fmt.Sprintf("Delete dead letter %d from %s for good? [y/N] ", seq, command.StreamDeadLetters)
		if err := c.confirm(ctx, prompt, func(answer string) bool {
			a := strings.ToLower(answer)
			return a == "y" || a == "yes"
		}); err != nil {
			return fmt.Errorf("seq %d kept: %w", seq, err)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := st.DeleteMsg(dctx, seq); err != nil {
		return fmt.Errorf("delete seq %d from %s: %w", seq, command.StreamDeadLetters, err)
	}
	fmt.Fprintf(c.stdout, "seq %d deleted from %s\n", seq, command.StreamDeadLetters)
	return nil
}

func runDLQPurge(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("dlq purge", "[-yes] [flags]",
		"Deletes every dead letter of CART_DLQ, for good, after asking to type the stream's name\n"+
			"on the terminal; -yes skips the question for scripts. Dead letters that arrive while\n"+
			"the question waits are kept: only those counted in it are purged.")
	var (
		yes     bool
		no      = f.natsFlags()
		timeout = f.timeoutFlag("how long reading and purging may take (the question waits as long as it must)")
	)
	f.fs.BoolVar(&yes, "yes", false, "do not ask for confirmation")
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	s, err := c.connect(ctx, f, no, *timeout)
	if err != nil {
		return err
	}
	defer s.close()
	st, state, err := func() (jetstream.Stream, jetstream.StreamState, error) {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		st, err := dlqStream(ctx, s)
		if err != nil {
			return nil, jetstream.StreamState{}, err
		}
		return st, st.CachedInfo().State, nil
	}()
	if err != nil {
		return err
	}
	if state.Msgs == 0 {
		fmt.Fprintf(c.stderr, "%s is empty\n", command.StreamDeadLetters)
		return nil
	}

	name := command.StreamDeadLetters
	if !yes {
		prompt := fmt.Sprintf("Purge all %d dead letters of %s (seq %d..%d) for good? Type %s to confirm: ",
			state.Msgs, name, state.FirstSeq, state.LastSeq, name)
		if err := c.confirm(ctx, prompt, func(answer string) bool { return answer == name }); err != nil {
			return fmt.Errorf("%s kept: %w", name, err)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// Up to what was counted: a dead letter stored since was not agreed to.
	if err := st.Purge(pctx, jetstream.WithPurgeSequence(state.LastSeq+1)); err != nil {
		return fmt.Errorf("purge %s: %w", name, err)
	}
	fmt.Fprintf(c.stdout, "purged %d dead letters (seq %d..%d) from %s\n", state.Msgs, state.FirstSeq, state.LastSeq, name)
	return nil
}

// confirm writes prompt to stderr and reads one line from stdin, which
// accept must take as yes. End of input, as from a script without -yes,
// is a no.
//
// The read does not stop with ctx: a terminal cannot be interrupted
// portably. On ctrl-C confirm returns at once and the goroutine stays
// blocked in the read until the process exits, which it does next.
func (c *cli) confirm(ctx context.Context, prompt string, accept func(answer string) bool) error {
	if c.stdin == nil {
		return fmt.Errorf("%w: no terminal to ask on; use -yes", errNotConfirmed)
	}
	fmt.Fprint(c.stderr, prompt)
	type reply struct {
		line string
		err  error
	}
	answered := make(chan reply, 1)
	go func() {
		line, err := bufio.NewReader(c.stdin).ReadString('\n')
		answered <- reply{line, err}
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(c.stderr)
		return fmt.Errorf("%w: %w", errNotConfirmed, ctx.Err())
	case r := <-answered:
		answer := strings.TrimSpace(r.line)
		if r.err != nil && answer == "" {
			fmt.Fprintln(c.stderr)
			return fmt.Errorf("%w: no answer on stdin (use -yes in scripts)", errNotConfirmed)
		}
		if !accept(answer) {
			return fmt.Errorf("%w: the answer was %q", errNotConfirmed, answer)
		}
		return nil
	}
}
