package cartcache

import (
	"errors"
	"fmt"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
)

// Epoch orders the ownerships of a partition: (Era, Seq) compared
// lexicographically. Era is when the coordination bucket was created (Unix
// milliseconds), so that a re-created bucket, whose revisions restart at 1,
// still gives larger epochs; Seq is the lease's creation revision. Both stay
// under 2^53, so that they survive daprd's HTTP API, which stores every JSON
// number as a float64.
//
// A cart stores the Epoch of its last fenced writer (cart.WriterEpochField)
// and refuses a write with a lower one (ErrFenced). The zero Epoch is an
// unfenced writer's: it is never refused and leaves the stored Epoch as it
// was.
type Epoch struct {
	Era int64
	Seq uint64
}

// IsZero reports whether e is the zero Epoch, an unfenced writer's.
func (e Epoch) IsZero() bool { return e == Epoch{} }

// Before reports whether e is an older ownership than o.
func (e Epoch) Before(o Epoch) bool {
	return e.Era < o.Era || (e.Era == o.Era && e.Seq < o.Seq)
}

// String spells e as era/seq, for errors and logs.
func (e Epoch) String() string { return fmt.Sprintf("%d/%d", e.Era, e.Seq) }

// ErrFenced: the cart was last written by a newer owner of its partition (a
// higher Epoch); nothing was written. Not transient: the caller must drop
// the batch unsettled.
//
// The newer owner has taken the partition over and replays it from its
// own floor, so the stale owner's commands are the newer owner's to
// settle: acking them would lose their outcome, and retrying them can only
// be fenced again.
var ErrFenced = errors.New("cart fenced: written by a newer owner of its partition")

// fence checks a write at epoch against the Epoch the cart (or its
// tombstone) was read with, and returns the Epoch the write stores: the
// writer's, or the stored one for an unfenced writer, which must not erase
// a fenced writer's mark. It is checked on the document the write is
// guarded by, so the ETag compare-and-swap makes check and write one step.
func fence(cartID string, stored, epoch Epoch) (Epoch, error) {
	if epoch.IsZero() {
		return stored, nil
	}
	if epoch.Before(stored) {
		return Epoch{}, fmt.Errorf("cart %s: written at epoch %s, this write's is %s: %w", cartID, stored, epoch, ErrFenced)
	}
	return epoch, nil
}

// PriorRejection is the outcome of a command the cart already refused: a
// replay is refused again with the same code, as a duplicate.
//
// A refusal is recorded with the cart (cart.RejectedIDsField) because a
// command replayed after a partition takeover must get the outcome it had,
// whatever happened to the cart since: an add-item once refused as
// cart_not_found stays refused after its cart's cache has come.
type PriorRejection struct{ Code string }

// Error names the code the command was refused with.
func (e *PriorRejection) Error() string {
	return "command refused before: " + e.Code
}

// Unwrap returns the cart rule's error for Code (cart.ErrCartNotFound for
// command.CodeCartNotFound, and so on), so that a caller that tells the
// rejections apart with errors.Is refuses a replay as it refused the
// original. nil for a code it does not know.
func (e *PriorRejection) Unwrap() error { return rejectionErrs[e.Code] }

// rejectionErrs is cart.RejectionCode backwards.
var rejectionErrs = map[string]error{
	command.CodeCartNotFound:   cart.ErrCartNotFound,
	command.CodeInvalidState:   cart.ErrInvalidState,
	command.CodeUnknownTaxCode: cart.ErrUnknownTaxCode,
	command.CodeAmountOverflow: cart.ErrAmountOverflow,
	command.CodeCartTooLarge:   cart.ErrCartTooLarge,
}

// withCode returns rejected with id's code set, allocating the map on the
// first refusal only, so that the applied path never does.
func withCode(rejected map[string]string, id, code string) map[string]string {
	if rejected == nil {
		rejected = make(map[string]string, 1)
	}
	rejected[id] = code
	return rejected
}

// recordedRejection reports whether a step's error is one plan records.
func recordedRejection(err error) bool {
	_, ok := cart.RejectionCode(err)
	return ok
}
