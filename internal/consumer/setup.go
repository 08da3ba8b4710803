package consumer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/ownership"
)

// ErrStreamIncompatible is wrapped by Setup's error when a stream already
// exists with a configuration the worker cannot use. Setup leaves such a
// stream exactly as it found it and does not retry: only its operator can
// fix it.
var ErrStreamIncompatible = errors.New("the existing stream cannot be used by cartworker")

// wantStream is a stream the worker needs: the configuration it creates
// it with, the subjects it must capture and those it must leave alone.
type wantStream struct {
	cfg jetstream.StreamConfig
	// own must be matched by one of an existing stream's subjects.
	own string
	// foreign belongs to stream foreignStream; a stream capturing it
	// would keep that one from existing next to it.
	foreign, foreignStream string
	// deadLetters marks CART_DLQ, which no consumer of ours reads.
	deadLetters bool
}

// Consumers are the durable consumers Setup ensures on the command stream.
type Consumers struct {
	// Strays reads what no partition holds: commands stored before the
	// stream was partitioned, and subjects the transform does not match.
	Strays jetstream.Consumer
	// Partitions[p] reads partition p.
	Partitions []jetstream.Consumer
	// Failures counts the commands' transient failures.
	Failures jetstream.KeyValue
	// Members holds a key per live instance; Leases, a key per partition
	// naming the instance that consumes it (internal/ownership). Both nil:
	// this instance consumes every partition.
	Members, Leases jetstream.KeyValue
}

func (w *Worker) wantStreams() []wantStream {
	s := w.cfg.Subjects
	src, dst := s.PartitionTransform(w.cfg.Partitions)
	return []wantStream{{
		cfg: jetstream.StreamConfig{
			Name:        command.StreamCommands,
			Description: "cart commands, consumed by cartworker",
			Subjects:    []string{s.Commands()},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      w.cfg.CommandMaxAge,
			Duplicates:  w.cfg.DuplicateWindow,
			Replicas:    w.cfg.Replicas,
			SubjectTransform: &jetstream.SubjectTransformConfig{
				Source: src, Destination: dst,
			},
		},
		own:           s.Commands(),
		foreign:       s.DeadLetters(),
		foreignStream: command.StreamDeadLetters,
	}, {
		cfg: jetstream.StreamConfig{
			Name:        command.StreamDeadLetters,
			Description: "cart commands that can never be applied",
			Subjects:    []string{s.DeadLetters()},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      w.cfg.DeadLetterMaxAge,
			Duplicates:  w.cfg.DuplicateWindow,
			Replicas:    w.cfg.Replicas,
		},
		own:           s.DeadLetters(),
		foreign:       s.Commands(),
		foreignStream: command.StreamCommands,
		deadLetters:   true,
	}}
}

// Setup makes sure the command and dead-letter streams exist, then creates
// or updates the coordination buckets and the durable consumers: one per
// partition, and one for the commands no partition holds. A missing stream is created with
// the worker's configuration. An existing one may belong to an operator
// (more replicas, longer retention, its own limits), so it is only checked
// and never lowered: without ManageStreams it is left exactly as it is;
// with it, its replicas, limits, duplicate window and subjects are raised
// to at least the worker's. Every instance calls Setup at start-up; it is
// idempotent.
//
// Order per cart rests on what is set here. The command stream's subject
// transform stores each cart's commands in one of Partitions partitions; an
// unpartitioned stream, as earlier versions made it, is given the transform
// (on new messages only: it lowers nothing). Only the instance holding a
// partition's lease pulls it (internal/ownership), and runs each cart's
// commands in order, so a partition can have Buffer/Partitions commands in
// flight and a cart's backlog can form into one read-modify-write. And an
// instance that takes a partition rewinds its consumer to its ack floor
// first, so that whatever the last holder left unacknowledged comes back in
// stream order, before anything newer.
func (w *Worker) Setup(ctx context.Context) (Consumers, error) {
	wants := w.wantStreams()
	// Look at both streams before creating either, so that an unusable one
	// is reported before anything is changed.
	found := make([]*jetstream.StreamInfo, len(wants))
	for i, want := range wants {
		info, err := w.lookupStream(ctx, want)
		if err != nil {
			return Consumers{}, w.explain(fmt.Errorf("stream %s: %w", want.cfg.Name, err))
		}
		found[i] = info
	}
	for i, want := range wants {
		if err := w.ensureStream(ctx, want, found[i]); err != nil {
			return Consumers{}, w.explain(fmt.Errorf("stream %s: %w", want.cfg.Name, err))
		}
	}

	s := w.cfg.Subjects
	var out Consumers
	var err error
	if out.Failures, err = w.ensureFailures(ctx); err != nil {
		return Consumers{}, err
	}
	if out.Members, out.Leases, err = ownership.EnsureBuckets(ctx, w.js, w.ownershipConfig()); err != nil {
		return Consumers{}, w.explain(err)
	}
	out.Strays, err = w.ensureConsumer(ctx, command.ConsumerName, s.Commands(),
		"cartworker: commands stored before partitioning, and strays", false)
	if err != nil {
		return Consumers{}, err
	}
	for p := range w.cfg.Partitions {
		c, err := w.ensureConsumer(ctx, command.PartitionConsumer(p), s.Partition(p),
			fmt.Sprintf("cartworker: partition %d of %d", p, w.cfg.Partitions), true)
		if err != nil {
			return Consumers{}, err
		}
		out.Partitions = append(out.Partitions, c)
	}
	return out, nil
}

// ensureConsumer creates or updates one of the worker's durable consumers.
// They are the worker's own, so unlike the streams they are always brought
// to its configuration. A partition's consumer is pulled by the one
// instance holding its lease, with Buffer/Partitions commands in flight.
// The strays' consumer, which only drains what an unpartitioned version
// left and subjects no partition matches, is pulled by every instance and
// keeps one command in flight across all of them instead.
func (w *Worker) ensureConsumer(ctx context.Context, name, filter, desc string, partition bool) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   desc,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		// The worker, not the server, decides when to give up, so that an
		// open breaker never exhausts a command's deliveries and every give
		// up is a dead letter rather than a silent drop.
		MaxDeliver:    -1,
		MaxAckPending: 1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// 0 inherits the stream's replicas: the consumer's delivery state
		// is then exactly as durable as the commands it tracks, whoever
		// sized the stream.
		Replicas: 0,
	}
	if partition {
		cfg.MaxAckPending = w.partitionBuffer()
	}
	c, err := w.js.CreateOrUpdateConsumer(ctx, command.StreamCommands, cfg)
	if err != nil {
		return nil, w.explain(fmt.Errorf("consumer %s: %w", name, err))
	}
	return c, nil
}

// partitionBuffer is how many of a partition's commands its instance may
// hold: an equal share of Buffer, so that an instance holding every
// partition holds Buffer at most.
func (w *Worker) partitionBuffer() int {
	return max(1, w.cfg.Buffer/w.cfg.Partitions)
}

// lookupStream returns the stream's info, nil when it does not exist, and
// an ErrStreamIncompatible error when it exists but cannot be used.
func (w *Worker) lookupStream(ctx context.Context, want wantStream) (*jetstream.StreamInfo, error) {
	st, err := w.js.Stream(ctx, want.cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	info := st.CachedInfo()
	if err := checkStream(info.Config, want, w.cfg.ManageStreams); err != nil {
		return nil, err
	}
	return info, nil
}

// ensureStream creates the stream when found is nil, and otherwise adopts
// the existing one.
func (w *Worker) ensureStream(ctx context.Context, want wantStream, found *jetstream.StreamInfo) error {
	if found == nil {
		_, err := w.js.CreateStream(ctx, want.cfg)
		if err == nil {
			w.log.Info("created stream", "stream", want.cfg.Name, "subjects", want.cfg.Subjects,
				"replicas", want.cfg.Replicas, "storage", want.cfg.Storage.String(), "max_age", want.cfg.MaxAge.String())
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create: %w", err)
		}
		// Created meanwhile, by another instance or an operator, with
		// another configuration: theirs stands, as for any existing stream.
		if found, err = w.lookupStream(ctx, want); err != nil {
			return err
		}
		if found == nil {
			return fmt.Errorf("create: %w", jetstream.ErrStreamNameAlreadyInUse)
		}
	}
	return w.adoptStream(ctx, want, found.Config)
}

// adoptStream logs what an existing stream is, warns about what the worker
// would have set otherwise, and with ManageStreams raises it.
func (w *Worker) adoptStream(ctx context.Context, want wantStream, have jetstream.StreamConfig) error {
	name := have.Name
	w.log.Info("using existing stream", "stream", name, "subjects", have.Subjects,
		"replicas", have.Replicas, "storage", have.Storage.String(), "max_age", have.MaxAge.String(),
		"retention", have.Retention.String(), "duplicates", have.Duplicates.String(),
		"manage_streams", w.cfg.ManageStreams)
	if want.deadLetters && have.Retention == jetstream.InterestPolicy {
		w.log.Warn("stream has interest retention: a dead letter is kept only if some consumer is interested in it when it is stored",
			"stream", name)
	}
	if want.cfg.SubjectTransform != nil && have.SubjectTransform == nil {
		// Partitioning an existing stream adds a transform for new
		// messages and changes nothing else, so it is done whether or not
		// the worker manages the stream: without it per-cart order across
		// instances cannot hold. Commands stored before it are read by the
		// strays consumer first.
		have.SubjectTransform = want.cfg.SubjectTransform
		if _, err := w.js.UpdateStream(ctx, have); err != nil {
			return fmt.Errorf("partition into %d: %w", w.cfg.Partitions, err)
		}
		w.log.Warn("partitioned an existing stream: new commands are stored by partition",
			"stream", name, "partitions", w.cfg.Partitions, "transform", have.SubjectTransform.Destination)
	}
	if !w.cfg.ManageStreams {
		if have.Duplicates < MinDuplicateWindow {
			w.log.Warn("stream's duplicate window is below the 2m publishers rely on to drop a republished command",
				"stream", name, "duplicates", have.Duplicates.String(), "want", MinDuplicateWindow.String())
		}
		if have.Replicas < want.cfg.Replicas {
			w.log.Warn("stream has fewer replicas than NATS_STREAM_REPLICAS; left as it is (NATS_MANAGE_STREAMS=true raises it)",
				"stream", name, "replicas", have.Replicas, "want", want.cfg.Replicas)
		}
		return nil
	}

	if have.Storage != want.cfg.Storage {
		w.log.Warn("stream's storage differs from the worker's; JetStream cannot change it in place, so it is kept",
			"stream", name, "storage", have.Storage.String(), "want", want.cfg.Storage.String())
	}
	raised, changes := raiseStream(have, want)
	if len(changes) == 0 {
		return nil
	}
	if _, err := w.js.UpdateStream(ctx, raised); err != nil {
		return fmt.Errorf("raise %s: %w", strings.Join(changes, ", "), err)
	}
	w.log.Info("raised stream", "stream", name, "changes", strings.Join(changes, ", "))
	return nil
}

// checkStream reports why an existing stream cannot be used, wrapping
// ErrStreamIncompatible, or nil. With manage, subjects it lacks are not a
// problem: they will be added.
func checkStream(have jetstream.StreamConfig, want wantStream, manage bool) error {
	var problems []string
	if have.Mirror != nil {
		problems = append(problems, fmt.Sprintf("it mirrors stream %s, so it takes no publishes", have.Mirror.Name))
	} else if !manage && !slices.ContainsFunc(have.Subjects, func(s string) bool { return subjectCovers(s, want.own) }) {
		problems = append(problems, fmt.Sprintf("its subjects %v do not cover %s (NATS_MANAGE_STREAMS=true would add it)", have.Subjects, want.own))
	}
	for _, s := range have.Subjects {
		if subjectsOverlap(s, want.foreign) {
			problems = append(problems, fmt.Sprintf("its subject %s also takes %s, the subjects of stream %s", s, want.foreign, want.foreignStream))
		}
	}
	switch have.Retention {
	case jetstream.LimitsPolicy, jetstream.InterestPolicy:
	case jetstream.WorkQueuePolicy:
		// Usable: the durable consumer is then the stream's only one, which
		// the server enforces when it is created.
	default:
		problems = append(problems, fmt.Sprintf("retention %s is not limits, interest or workqueue", have.Retention))
	}
	if have.Sealed {
		problems = append(problems, "it is sealed, so it takes no publishes")
	}
	if have.NoAck {
		problems = append(problems, "no_ack is set, so publishes are never confirmed as stored")
	}
	if t, w := have.SubjectTransform, want.cfg.SubjectTransform; t != nil && (w == nil || *t != *w) {
		want := "none"
		if w != nil {
			want = w.Source + " → " + w.Destination
		}
		problems = append(problems, fmt.Sprintf("its subject transform %s → %s is not the worker's (%s): "+
			"a different WORKER_PARTITIONS, or an operator's own; changing the partition count needs the "+
			"stream drained first (README, Scaling out)", t.Source, t.Destination, want))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w, so it was left unchanged: %s", ErrStreamIncompatible, strings.Join(problems, "; "))
}

// raiseStream returns have with every setting the worker cares about
// raised to at least want's, and what changed. It never lowers anything:
// replicas and the duplicate window become the larger, each limit the
// longer or larger (0 or -1 being unlimited), subjects the union. Storage
// and every setting the worker does not set are kept as they are: the
// worker having no opinion on MaxMsgs is not a reason to lift an
// operator's bound on it.
func raiseStream(have jetstream.StreamConfig, want wantStream) (jetstream.StreamConfig, []string) {
	out := have
	out.Subjects = slices.Clone(have.Subjects)
	var changes []string
	change := func(what string, from, to any) {
		changes = append(changes, fmt.Sprintf("%s %v→%v", what, from, to))
	}
	if want.cfg.Replicas > have.Replicas {
		out.Replicas = want.cfg.Replicas
		change("replicas", have.Replicas, out.Replicas)
	}
	if want.cfg.Duplicates > have.Duplicates {
		out.Duplicates = want.cfg.Duplicates
		change("duplicates", have.Duplicates, out.Duplicates)
	}
	if d := raiseLimit(int64(have.MaxAge), int64(want.cfg.MaxAge)); d != int64(have.MaxAge) {
		out.MaxAge = time.Duration(d)
		change("max_age", have.MaxAge, out.MaxAge)
	}
	for _, l := range []struct {
		name       string
		have, want int64
		set        *int64
	}{
		{"max_msgs", have.MaxMsgs, want.cfg.MaxMsgs, &out.MaxMsgs},
		{"max_bytes", have.MaxBytes, want.cfg.MaxBytes, &out.MaxBytes},
		{"max_msgs_per_subject", have.MaxMsgsPerSubject, want.cfg.MaxMsgsPerSubject, &out.MaxMsgsPerSubject},
	} {
		if v := raiseLimit(l.have, l.want); v != l.have {
			*l.set = v
			change(l.name, l.have, v)
		}
	}
	if !slices.ContainsFunc(have.Subjects, func(s string) bool { return subjectCovers(s, want.own) }) {
		out.Subjects = append(out.Subjects, want.own)
		change("subjects", have.Subjects, out.Subjects)
	}
	return out, changes
}

// raiseLimit returns the larger of two JetStream limits where 0 or less is
// unlimited. want 0 is no opinion and keeps have.
func raiseLimit(have, want int64) int64 {
	switch {
	case want == 0, have <= 0:
		return have
	case want < 0:
		return -1
	default:
		return max(have, want)
	}
}

// subjectCovers reports whether every subject matching sub (which may hold
// wildcards) also matches pattern.
func subjectCovers(pattern, sub string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(sub, ".")
	for i, pt := range p {
		if pt == ">" {
			return i < len(s)
		}
		if i >= len(s) {
			return false
		}
		switch st := s[i]; {
		case st == ">":
			return false
		case pt == "*":
		case st == "*" || st != pt:
			return false
		}
	}
	return len(p) == len(s)
}

// subjectsOverlap reports whether some subject matches both a and b.
func subjectsOverlap(a, b string) bool {
	ta, tb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		if i == len(ta) || i == len(tb) {
			return len(ta) == len(tb)
		}
		x, y := ta[i], tb[i]
		if x == ">" || y == ">" {
			return true
		}
		if x != "*" && y != "*" && x != y {
			return false
		}
	}
}

// jetStreamMissing reports whether err says the server, or the account the
// worker connected as, has no JetStream. Retrying cannot help.
func jetStreamMissing(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
}

// explain turns a missing JetStream into a message that says where to look.
func (w *Worker) explain(err error) error {
	if !jetStreamMissing(err) {
		return err
	}
	where := serverURL(w.js.Conn())
	if errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("NATS_URL %s: JetStream is not enabled for the account of NATS_USER, NATS_TOKEN or NATS_CREDS: %w", where, err)
	}
	return fmt.Errorf("NATS_URL %s: JetStream is not enabled on this server (run nats-server with -js, or a jetstream block in its config): %w", where, err)
}

// serverURL is the URL of the server nc is connected to, without the
// credentials it may hold: nats.go's own redaction keeps a token given as
// the URL's user.
func serverURL(nc *nats.Conn) string {
	if nc == nil {
		return "(not connected)"
	}
	u, err := url.Parse(nc.ConnectedUrl())
	if err != nil || u.Host == "" {
		return "(not connected)"
	}
	u.User = nil
	return u.String()
}

// setupWithRetry retries Setup for up to SetupTimeout, for a JetStream
// cluster still electing its leaders at start-up. A stream it must not
// change and a server without JetStream fail at once: waiting cannot fix
// them.
func (w *Worker) setupWithRetry(ctx context.Context) (Consumers, error) {
	deadline := time.Now().Add(w.cfg.SetupTimeout)
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, setupAttemptTimeout)
		cons, err := w.Setup(attemptCtx)
		cancel()
		if err == nil {
			return cons, nil
		}
		if errors.Is(err, ErrStreamIncompatible) || jetStreamMissing(err) ||
			ctx.Err() != nil || time.Now().After(deadline) {
			return Consumers{}, err
		}
		w.log.Warn("JetStream setup failed, retrying", "err", err)
		t := time.NewTimer(setupRetryDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return Consumers{}, err
		case <-t.C:
		}
	}
}
