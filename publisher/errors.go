package publisher

import (
	"errors"

	"github.com/cartworker/cartworker/command"
)

var (
	// ErrTimeout is returned by PublishAndWait when JetStream stored the
	// command but its outcome event did not arrive before the deadline. The
	// command is not lost: the worker applies it when it gets to it. A retry
	// with the same command id cannot apply it twice, but within the
	// stream's duplicate window JetStream drops the retry and its wait ends
	// with ErrDuplicate too.
	ErrTimeout = errors.New("publisher: timed out waiting for the outcome")

	// ErrDuplicate is wrapped alongside ErrTimeout when JetStream reported
	// the publish as a duplicate of a command stored earlier with the same
	// id. Outcome events are not stored, so if the earlier copy had already
	// been handled its event went by before this call started listening.
	ErrDuplicate = errors.New("publisher: a command with this id was already published")

	// ErrClosed is returned by every method of a Publisher after Close, and
	// by PublishAndWait calls still waiting when Close is called.
	ErrClosed = errors.New("publisher: closed")

	// ErrInvalidOption is returned by New when an argument or option cannot
	// be used.
	ErrInvalidOption = errors.New("publisher: invalid option")
)

// RejectedError is returned by PublishAndWait when the worker refused the
// command: it arrived and will never be applied, so retrying it unchanged
// cannot help. Use errors.As to read the code.
type RejectedError struct {
	// CommandID and CartID identify the command.
	CommandID string
	CartID    string
	// Type is the command type.
	Type command.Type
	// Code is machine readable: one of the command.Code* constants.
	Code string
	// Message is a human readable explanation.
	Message string
}

// Error implements error.
func (e *RejectedError) Error() string {
	return "publisher: " + string(e.Type) + " " + e.CommandID + " on cart " + e.CartID +
		" rejected: " + e.Code + ": " + e.Message
}
