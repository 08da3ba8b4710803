package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/telemetry"
)

func runPublishRaw(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("publish", "-raw [-msg-id id] [-wait=false] [flags] SUBJECT FILE",
		"Publishes the bytes of FILE (- for stdin) to SUBJECT through JetStream, unchecked, with\n"+
			"header Nats-Msg-Id, and prints the stream's ack as JSON. When SUBJECT is a command\n"+
			"subject (<prefix>.cmd.<cart_id>.<type>) it then waits for the worker's outcome event\n"+
			"and prints it too: the event of the body's id, or of the Nats-Msg-Id for a body the\n"+
			"worker cannot read. It is for trying the worker with hand-made or malformed commands;\n"+
			"cache, add and delete build valid ones. Flags go before SUBJECT.")
	var (
		raw   bool
		msgID string
		wait  bool
	)
	f.fs.BoolVar(&raw, "raw", false, "send FILE's bytes as they are (required: publish has no other mode)")
	f.fs.StringVar(&msgID, "msg-id", "", "Nats-Msg-Id header `id`; default a new unique id. Reuse one to see JetStream drop a duplicate")
	f.fs.BoolVar(&wait, "wait", true, "on a command subject, wait for the outcome event and print it")
	no := f.natsFlags()
	timeout := f.timeoutFlag("how long to wait for the ack and the outcome")
	f.positional("SUBJECT", "FILE")
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	if !raw {
		return f.usageErr(errors.New("-raw is required: publish sends a file's bytes unchecked; cache, add and delete build checked commands"))
	}
	subject, file := f.Args()[0], f.Args()[1]
	if !publishableSubject(subject) {
		return f.usageErr(fmt.Errorf("subject %q: want tokens separated by dots, without wildcards or spaces", subject))
	}
	body, err := c.readBody(file)
	if err != nil {
		return f.usageErr(fmt.Errorf("FILE: %w", err))
	}
	if msgID == "" {
		msgID = nuid.Next()
	}

	s, err := c.connect(ctx, f, no, *timeout)
	if err != nil {
		return err
	}
	defer s.close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	var events *nats.Subscription
	cartID, _, isCommand := s.subjects.ParseCommand(subject)
	// A cart id the worker cannot use gets no event: it is dead-lettered
	// as _invalid_.
	if wait && isCommand && command.ValidCartID(cartID) {
		if events, err = s.subscribeEvents(ctx, cartID); err != nil {
			return err
		}
		defer func() { _ = events.Unsubscribe() }()
	}

	msg := nats.NewMsg(subject)
	msg.Data = body
	msg.Header.Set(command.HeaderMsgID, msgID)
	telemetry.Inject(traced(ctx, c.stderr), msg.Header)
	ack, err := s.js.PublishMsg(ctx, msg)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", subject, err)
	}
	if err := writeJSON(c.stdout, rawAckJSON{
		Subject: subject, MsgID: msgID, Stream: ack.Stream, Seq: ack.Sequence, Duplicate: ack.Duplicate, Domain: ack.Domain,
	}); err != nil {
		return err
	}
	if events == nil {
		return nil
	}
	if ack.Duplicate {
		fmt.Fprintf(c.stderr, "JetStream already held a message with Nats-Msg-Id %s and dropped this one: no outcome to wait for\n", msgID)
		return nil
	}
	return c.waitRaw(ctx, events, cartID, bodyID(body), msgID, *timeout)
}

// waitRaw prints the outcome event of the command that bodyID or msgID
// identify, and fails when it is a rejection.
func (c *cli) waitRaw(ctx context.Context, events *nats.Subscription, cartID, bodyID, msgID string, timeout time.Duration) error {
	for {
		m, err := events.NextMsgWithContext(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no outcome on cart %s within %s: the message is stored and will be handled when cartworker "+
				"gets to it (is it running?); '%s watch -cart %s' shows outcomes", cartID, timeout, c.self(), cartID)
		}
		if err != nil {
			return fmt.Errorf("wait for the outcome on cart %s: %w", cartID, err)
		}
		var ev command.Event
		if json.Unmarshal(m.Data, &ev) != nil || ev.CommandID == "" ||
			(ev.CommandID != bodyID && ev.CommandID != msgID) {
			continue // another command's event, or not an event at all
		}
		if err := writeJSON(c.stdout, ev); err != nil {
			return err
		}
		if ev.Outcome == command.OutcomeRejected {
			code, why := "", ""
			if ev.Error != nil {
				code, why = ev.Error.Code, ev.Error.Message
			}
			return fmt.Errorf("%s %s on cart %s rejected: %s: %s", ev.Type, ev.CommandID, ev.CartID, code, why)
		}
		return nil
	}
}

// rawAckJSON is how publish prints JetStream's ack.
type rawAckJSON struct {
	Subject   string `json:"subject"`
	MsgID     string `json:"msg_id"`
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	Domain    string `json:"domain,omitempty"`
}

// readBody reads file, or stdin for "-".
func (c *cli) readBody(file string) ([]byte, error) {
	if file == "-" {
		if c.stdin == nil {
			return nil, errors.New("no stdin")
		}
		return io.ReadAll(c.stdin)
	}
	return os.ReadFile(file)
}

// publishableSubject reports whether s is a subject one can publish to:
// non-empty tokens, no wildcard, no white space.
func publishableSubject(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t\r\n") {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
	}
	return true
}

// subscribeEvents subscribes to cart cartID's outcome events, and returns
// once the server holds the interest, so that the worker's answer cannot
// come before it.
func (s *session) subscribeEvents(ctx context.Context, cartID string) (*nats.Subscription, error) {
	subject := s.subjects.CartEvents(cartID)
	events, err := s.nc.SubscribeSync(subject)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	if err := s.nc.FlushWithContext(ctx); err != nil {
		_ = events.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return events, nil
}
