package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
)

func runDLQ(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 {
		printDLQUsage(c.stderr, c.self())
		return &usageError{self: c.prog, cmd: "dlq", err: errors.New("no dlq command given: list, replay, rm or purge")}
	}
	switch args[0] {
	case "list":
		return runDLQList(ctx, c, args[1:])
	case "replay":
		return runDLQReplay(ctx, c, args[1:])
	case "rm":
		return runDLQRemove(ctx, c, args[1:])
	case "purge":
		return runDLQPurge(ctx, c, args[1:])
	case "-h", "-help", "--help", "help":
		printDLQUsage(c.stdout, c.self())
		return nil
	}
	return &usageError{self: c.prog, cmd: "dlq", err: fmt.Errorf("unknown dlq command %q: want list, replay, rm or purge", args[0])}
}

func printDLQUsage(w io.Writer, self string) {
	fmt.Fprintf(w, `Usage: %[1]s dlq <list|replay|rm|purge> [flags]

Dead letters are commands cartworker can never apply, kept in stream CART_DLQ
on subjects "<prefix>.dlq.<cart_id>.<type>".

  list    list dead letters, oldest first
  replay  publish dead letters again to their original subjects
  rm      delete one dead letter, after confirmation
  purge   delete every dead letter, after confirmation

Run '%[1]s dlq <command> -h' for the flags of each.
`, self)
}

// deadLetter is one message of CART_DLQ as list prints it.
type deadLetter struct {
	Seq             uint64          `json:"seq"`
	Subject         string          `json:"subject"`
	Code            string          `json:"code"`
	Reason          string          `json:"reason"`
	OriginalSubject string          `json:"original_subject"`
	Deliveries      string          `json:"deliveries,omitempty"`
	CommandID       string          `json:"command_id,omitempty"`
	Time            time.Time       `json:"time"`
	Body            json.RawMessage `json:"body"`
}

func newDeadLetter(m *jetstream.RawStreamMsg) deadLetter {
	d := deadLetter{
		Seq:             m.Sequence,
		Subject:         m.Subject,
		Code:            m.Header.Get(command.HeaderDLQCode),
		Reason:          m.Header.Get(command.HeaderDLQReason),
		OriginalSubject: m.Header.Get(command.HeaderDLQSubject),
		Deliveries:      m.Header.Get(command.HeaderDLQDeliveries),
		CommandID:       bodyID(m.Data),
		Time:            m.Time.UTC(),
		Body:            m.Data,
	}
	// A body that is not JSON (one reason to dead-letter) is shown as a
	// string so that the line stays valid JSON.
	if !json.Valid(m.Data) {
		d.Body, _ = json.Marshal(string(m.Data))
	}
	return d
}

// bodyID is the command id in a body, if the body is readable at all.
func bodyID(data []byte) string {
	var b struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(data, &b) != nil {
		return ""
	}
	return b.ID
}

// dlqStream opens CART_DLQ, explaining its absence.
func dlqStream(ctx context.Context, s *session) (jetstream.Stream, error) {
	st, err := s.js.Stream(ctx, command.StreamDeadLetters)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s not found: cartworker creates it when it starts", command.StreamDeadLetters)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", command.StreamDeadLetters, err)
	}
	return st, nil
}

// nextDeadLetter returns the first message at or after seq, or nil at the
// end. It reads by sequence, so no consumer is created and nothing changes.
func nextDeadLetter(ctx context.Context, st jetstream.Stream, seq uint64) (*jetstream.RawStreamMsg, error) {
	m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s at seq %d: %w", command.StreamDeadLetters, seq, err)
	}
	return m, nil
}

func runDLQList(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("dlq list", "[-limit n] [-from seq] [-json] [flags]",
		"Lists dead letters of stream CART_DLQ, oldest first, one a line: sequence, subject,\n"+
			"code, reason, original subject and time. It reads messages by sequence and creates\n"+
			"no consumer, so listing changes nothing.")
	var (
		limit   int
		from    uint64
		asJSON  bool
		no      = f.natsFlags()
		timeout = f.timeoutFlag("how long listing may take")
	)
	f.fs.IntVar(&limit, "limit", 20, "list at most `n` dead letters")
	f.fs.Uint64Var(&from, "from", 0, "start at stream sequence `seq`; 0 means the oldest")
	f.fs.BoolVar(&asJSON, "json", false, "print one JSON object a line, with the headers and the body")
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	if limit < 1 {
		return f.usageErr(fmt.Errorf("-limit %d: want at least 1", limit))
	}
	s, err := c.connect(ctx, f, no, *timeout)
	if err != nil {
		return err
	}
	defer s.close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, err := dlqStream(ctx, s)
	if err != nil {
		return err
	}
	state := st.CachedInfo().State
	if state.Msgs == 0 {
		fmt.Fprintf(c.stderr, "%s is empty\n", command.StreamDeadLetters)
		return nil
	}

	var list []deadLetter
	seq := max(from, state.FirstSeq)
	for len(list) < limit {
		m, err := nextDeadLetter(ctx, st, seq)
		if err != nil {
			return err
		}
		if m == nil {
			break
		}
		list = append(list, newDeadLetter(m))
		seq = m.Sequence + 1
	}
	if err := printDeadLetters(c.stdout, list, asJSON); err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "%s holds %d dead letters (seq %d..%d)\n", command.StreamDeadLetters, state.Msgs, state.FirstSeq, state.LastSeq)
	if len(list) == limit && seq <= state.LastSeq {
		fmt.Fprintf(c.stderr, "more after seq %d: use -from %d\n", seq-1, seq)
	}
	return nil
}

func printDeadLetters(w io.Writer, list []deadLetter, asJSON bool) error {
	if asJSON {
		for _, d := range list {
			b, err := json.Marshal(d)
			if err != nil {
				return fmt.Errorf("encode dead letter %d: %w", d.Seq, err)
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return err
			}
		}
		return nil
	}
	if len(list) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSUBJECT\tCODE\tREASON\tORIGINAL SUBJECT\tTIME")
	for _, d := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", d.Seq, d.Subject, orDash(d.Code),
			strconv.Quote(shorten(d.Reason, 60)), orDash(d.OriginalSubject), d.Time.Format(time.RFC3339))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shorten keeps at most n runes of s, marking the cut.
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func runDLQReplay(ctx context.Context, c *cli, args []string) error {
	f := c.newFlagSet("dlq replay", "(-seq n | -all) [-keep] [flags]",
		"Publishes dead letters again, body and headers unchanged, to their original subject\n"+
			"(header Cartworker-Original-Subject), with a new Nats-Msg-Id \"<command id>-replay-<seq>\"\n"+
			"so that JetStream does not drop it as a duplicate of the original. Once JetStream has\n"+
			"stored the copy, the dead letter is deleted from CART_DLQ unless -keep is given.\n"+
			"\n"+
			"The worker de-duplicates on the body's id, per cart: a command that was never applied\n"+
			"(for example dead-lettered after max_deliveries while Dapr was down) is applied once,\n"+
			"and one whose effect had landed is reported as an applied duplicate. Replaying one seq\n"+
			"twice within the stream's duplicate window (2m) publishes it once. A command that was\n"+
			"dead-lettered as invalid is unchanged, so it is most likely dead-lettered again.")
	var (
		seq     uint64
		all     bool
		keep    bool
		no      = f.natsFlags()
		timeout = f.timeoutFlag("how long replaying may take")
	)
	f.fs.Uint64Var(&seq, "seq", 0, "replay the dead letter at stream sequence `seq`")
	f.fs.BoolVar(&all, "all", false, "replay every dead letter stored when the command starts")
	f.fs.BoolVar(&keep, "keep", false, "keep replayed dead letters in CART_DLQ")
	if help, err := f.parse(args); help || err != nil {
		return err
	}
	switch {
	case seq == 0 && !all:
		return f.usageErr(errors.New("give -seq or -all"))
	case seq != 0 && all:
		return f.usageErr(errors.New("-seq and -all exclude each other"))
	}
	s, err := c.connect(ctx, f, no, *timeout)
	if err != nil {
		return err
	}
	defer s.close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, err := dlqStream(ctx, s)
	if err != nil {
		return err
	}

	if !all {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("no dead letter at seq %d in %s", seq, command.StreamDeadLetters)
		}
		if err != nil {
			return fmt.Errorf("read %s at seq %d: %w", command.StreamDeadLetters, seq, err)
		}
		return c.replay(ctx, s, st, m, keep)
	}

	return c.replayAll(ctx, s, st, keep)
}

// replayAll replays every dead letter stored when it starts.
func (c *cli) replayAll(ctx context.Context, s *session, st jetstream.Stream, keep bool) error {
	// Only what is stored now: a replay that is dead-lettered again lands
	// after last and must not be replayed in a loop.
	state := st.CachedInfo().State
	replayed := 0
	var errs []error
	for next := state.FirstSeq; state.Msgs > 0 && next <= state.LastSeq; {
		m, err := nextDeadLetter(ctx, st, next)
		if err != nil {
			errs = append(errs, err)
			break
		}
		if m == nil || m.Sequence > state.LastSeq {
			break
		}
		next = m.Sequence + 1
		if err := c.replay(ctx, s, st, m, keep); err != nil {
			errs = append(errs, err)
			continue
		}
		replayed++
	}
	fmt.Fprintf(c.stderr, "replayed %d dead letters\n", replayed)
	if len(errs) > 0 {
		return fmt.Errorf("%d dead letters not replayed: %w", len(errs), errors.Join(errs...))
	}
	return nil
}

// replay republishes one dead letter and deletes it unless keep.
func (c *cli) replay(ctx context.Context, s *session, st jetstream.Stream, m *jetstream.RawStreamMsg, keep bool) error {
	orig := m.Header.Get(command.HeaderDLQSubject)
	if orig == "" {
		return fmt.Errorf("seq %d: no %s header, cannot tell where to replay it", m.Sequence, command.HeaderDLQSubject)
	}
	if code := m.Header.Get(command.HeaderDLQCode); code != "" && code != command.CodeMaxDeliveries {
		fmt.Fprintf(c.stderr, "seq %d: dead-lettered as %s; unchanged, it will most likely be dead-lettered again\n", m.Sequence, code)
	}
	msg := nats.NewMsg(orig)
	msg.Data = m.Data
	for k, v := range m.Header {
		// The worker's annotations are not part of the command, and Nats-*
		// headers (the old id, expectations) would change how it is stored.
		if hasPrefixFold(k, "Cartworker-") || hasPrefixFold(k, "Nats-") {
			continue
		}
		msg.Header[k] = v
	}
	id := "replay-" + strconv.FormatUint(m.Sequence, 10)
	if bid := bodyID(m.Data); bid != "" {
		id = bid + "-" + id
	}
	msg.Header.Set(command.HeaderMsgID, id)
	// WithExpectStream makes sure the copy lands where the worker reads.
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(command.StreamCommands))
	if err != nil {
		return fmt.Errorf("seq %d: publish to %s: %w", m.Sequence, orig, err)
	}
	dup := ""
	if ack.Duplicate {
		dup = ", duplicate of an earlier replay"
	}
	where := fmt.Sprintf("seq %d replayed to %s as %s (%s seq %d%s)", m.Sequence, orig, id, ack.Stream, ack.Sequence, dup)
	if keep {
		fmt.Fprintf(c.stdout, "%s; kept in %s\n", where, command.StreamDeadLetters)
		return nil
	}
	if err := st.DeleteMsg(ctx, m.Sequence); err != nil {
		return fmt.Errorf("%s, but not deleted from %s: %w", where, command.StreamDeadLetters, err)
	}
	fmt.Fprintf(c.stdout, "%s; deleted from %s\n", where, command.StreamDeadLetters)
	return nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
