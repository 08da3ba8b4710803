package command

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Names the worker creates in JetStream. Every instance shares them.
const (
	// StreamCommands holds cart commands (subjects "<prefix>.cmd.>").
	StreamCommands = "CART_COMMANDS"
	// StreamDeadLetters holds dead letters (subjects "<prefix>.dlq.>").
	StreamDeadLetters = "CART_DLQ"
	// ConsumerName is the durable pull consumer of commands stored before
	// the stream was partitioned, and of subjects the partition transform
	// does not match (which can only be dead-lettered). Every partition has
	// a consumer of its own: PartitionConsumer.
	ConsumerName = "cart-worker"
	// DefaultPartitions is the default number of partitions (the
	// worker's WORKER_PARTITIONS): the most instances that can share the
	// work.
	DefaultPartitions = 32
	// FailuresBucket is the key-value bucket where the worker counts each
	// command's transient failures, by stream sequence.
	FailuresBucket = "cartworker_failures"
	// MembersBucket is the key-value bucket where each live worker
	// instance keeps a key, so that instances can share the partitions.
	MembersBucket = "cartworker_members"
	// LeasesBucket is the key-value bucket where each partition's key
	// names the instance that consumes it.
	LeasesBucket = "cartworker_partitions"
	// MaxPartitions bounds the partition count: each is a consumer, which
	// on a clustered JetStream is a Raft group.
	MaxPartitions = 256
	// DefaultPrefix is the default of CART_SUBJECT_PREFIX.
	DefaultPrefix = "cart"
)

// Headers set on dead letters, besides a copy of the original headers.
const (
	// HeaderMsgID is JetStream's publish de-duplication header.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderDLQReason is a human readable reason for the dead letter.
	HeaderDLQReason = "Cartworker-Dlq-Reason"
	// HeaderDLQCode is a machine readable reason (an InvalidError code,
	// or "max_deliveries").
	HeaderDLQCode = "Cartworker-Dlq-Code"
	// HeaderDLQSubject is the subject the command was published on.
	HeaderDLQSubject = "Cartworker-Original-Subject"
	// HeaderDLQDeliveries is how many times the command was delivered.
	HeaderDLQDeliveries = "Cartworker-Deliveries"
	// HeaderDLQMsgID keeps the command's Nats-Msg-Id: the dead letter's own
	// Nats-Msg-Id is derived from the stream sequence so that storing it
	// twice is harmless.
	HeaderDLQMsgID = "Cartworker-Original-Msg-Id"
	// HeaderDLQSequence is the command's sequence in the command stream,
	// where its body can still be read when the dead letter omits it.
	HeaderDLQSequence = "Cartworker-Original-Sequence"
	// HeaderDLQBodyOmitted is set when the dead letter carries no body
	// because the copy would not fit the server's max_payload or the
	// stream's max_msg_size; its value says what was left out.
	HeaderDLQBodyOmitted = "Cartworker-Dlq-Body-Omitted"
)

// UnknownCartID stands in for the cart id token of a dead-letter subject when
// the command's subject carried no valid cart id.
const UnknownCartID = "_invalid_"

// Subjects builds and parses subjects under one prefix. The zero value uses
// DefaultPrefix.
type Subjects struct {
	Prefix string
}

func (s Subjects) prefix() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// Command is "<prefix>.cmd.<cart_id>.<type>".
func (s Subjects) Command(cartID string, t Type) string {
	return s.prefix() + ".cmd." + cartID + "." + string(t)
}

// Event is "<prefix>.evt.<cart_id>.<outcome>".
func (s Subjects) Event(cartID string, o Outcome) string {
	return s.prefix() + ".evt." + cartID + "." + string(o)
}

// DeadLetter is "<prefix>.dlq.<cart_id>.<type>".
func (s Subjects) DeadLetter(cartID, typ string) string {
	return s.prefix() + ".dlq." + cartID + "." + typ
}

// Commands is the wildcard of every command subject.
func (s Subjects) Commands() string { return s.prefix() + ".cmd.>" }

// Events is the wildcard of every event subject.
func (s Subjects) Events() string { return s.prefix() + ".evt.>" }

// CartEvents is the wildcard of one cart's events.
func (s Subjects) CartEvents(cartID string) string { return s.prefix() + ".evt." + cartID + ".*" }

// DeadLetters is the wildcard of every dead-letter subject.
func (s Subjects) DeadLetters() string { return s.prefix() + ".dlq.>" }

// PartitionConsumer is the durable consumer of partition p, such as
// "cart-worker-p07".
func PartitionConsumer(p int) string { return fmt.Sprintf("%s-p%02d", ConsumerName, p) }

// PartitionTransform is the command stream's subject transform for n
// partitions. JetStream stores "<prefix>.cmd.<cart_id>.<type>" as
// "<prefix>.pcmd.<p>.<cart_id>.<type>", p = partition(n, cart_id): the
// FNV-1a hash of the cart id modulo n, so a cart's commands always share a
// partition. Publishers never see it.
func (s Subjects) PartitionTransform(n int) (source, destination string) {
	return s.prefix() + ".cmd.*.*",
		fmt.Sprintf("%s.pcmd.{{partition(%d,1)}}.{{wildcard(1)}}.{{wildcard(2)}}", s.prefix(), n)
}

// CartPartition is the partition of cart cartID's commands among n: what
// PartitionTransform's partition(n, cart_id) computes on the server, the
// FNV-1a hash of the cart id modulo n.
func CartPartition(cartID string, n int) int {
	if n <= 0 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(cartID))
	return int(h.Sum32() % uint32(n))
}

// Partition is the subject filter of partition p's commands.
func (s Subjects) Partition(p int) string {
	return s.prefix() + ".pcmd." + strconv.Itoa(p) + ".*.*"
}

// Published returns the subject a command was published on: the stored
// subject of a partitioned command, "<prefix>.pcmd.<p>.<cart_id>.<type>",
// becomes "<prefix>.cmd.<cart_id>.<type>" again; any other subject is
// returned as is.
func (s Subjects) Published(stored string) string {
	rest, ok := strings.CutPrefix(stored, s.prefix()+".pcmd.")
	if !ok {
		return stored
	}
	_, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return stored
	}
	return s.prefix() + ".cmd." + rest
}

// PartitionOf returns the partition of a stored, partitioned command
// subject, "<prefix>.pcmd.<p>.<cart_id>.<type>"; ok is false for any
// other subject.
func (s Subjects) PartitionOf(stored string) (p int, ok bool) {
	rest, ok := strings.CutPrefix(stored, s.prefix()+".pcmd.")
	if !ok {
		return 0, false
	}
	tok, _, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, false
	}
	p, err := strconv.Atoi(tok)
	return p, err == nil && p >= 0
}

// ParseCommand splits a command subject into its cart id and type tokens.
// It does not validate them; ok is false when the subject has another shape.
func (s Subjects) ParseCommand(subject string) (cartID, typ string, ok bool) {
	return s.parse(subject, ".cmd.")
}

// ParseDeadLetter splits a dead-letter subject like ParseCommand.
func (s Subjects) ParseDeadLetter(subject string) (cartID, typ string, ok bool) {
	return s.parse(subject, ".dlq.")
}

func (s Subjects) parse(subject, kind string) (cartID, typ string, ok bool) {
	rest, found := strings.CutPrefix(subject, s.prefix()+kind)
	if !found {
		return "", "", false
	}
	cartID, typ, found = strings.Cut(rest, ".")
	if !found || cartID == "" || typ == "" || strings.Contains(typ, ".") {
		return "", "", false
	}
	return cartID, typ, true
}

// ValidCartID reports whether id is 1 to MaxCartIDLen characters of
// [A-Za-z0-9_-].
func ValidCartID(id string) bool {
	if len(id) == 0 || len(id) > MaxCartIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
