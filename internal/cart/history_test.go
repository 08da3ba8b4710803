package cart_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/cart"
)

// The handled ids, the refused ones' codes and the writer's epoch read
// back as written; a document from before they existed reads as having
// no refusals and the zero epoch, and is written back without them.
func TestHistoryFieldsRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		applied  []string
		rejected map[string]string
		epoch    cart.Epoch
	}{
		{name: "old document", doc: `{"status":"Idle","applied_command_ids":["a"]}`, applied: []string{"a"}},
		{name: "null fields", doc: `{"applied_command_ids":["a"],"rejected_command_ids":null,"writer_epoch":null}`, applied: []string{"a"}},
		{
			name:     "every field",
			doc:      `{"applied_command_ids":["a","b"],"rejected_command_ids":{"b":"cart_not_found"},"writer_epoch":{"era":7,"seq":3}}`,
			applied:  []string{"a", "b"},
			rejected: map[string]string{"b": "cart_not_found"},
			epoch:    cart.Epoch{Era: 7, Seq: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := cart.Parse([]byte(tt.doc))
			require.NoError(t, err)
			assert.Equal(t, tt.applied, d.Applied())
			assert.Equal(t, tt.rejected, d.Rejected())
			assert.Equal(t, tt.epoch, d.Epoch())

			var m map[string]json.RawMessage
			require.NoError(t, json.Unmarshal([]byte(encode(t, d)), &m))
			if tt.epoch.IsZero() {
				assert.NotContains(t, m, cart.WriterEpochField, "a zero epoch is not written")
			} else {
				assert.JSONEq(t, fmt.Sprintf(`{"era":%d,"seq":%d}`, tt.epoch.Era, tt.epoch.Seq), string(m[cart.WriterEpochField]))
			}
			if tt.rejected == nil {
				assert.NotContains(t, m, cart.RejectedIDsField, "no refusals, no field")
			}
		})
	}
}

// The typed fields are the truth: setting them replaces what the document
// carried, and emptying them drops the fields.
func TestSetHistoryFields(t *testing.T) {
	d, err := cart.Parse([]byte(`{"rejected_command_ids":{"x":"invalid_state"},"writer_epoch":{"era":1,"seq":1}}`))
	require.NoError(t, err)
	d.SetEpoch(cart.Epoch{Era: -5, Seq: 1 << 63})
	d.SetRejected(map[string]string{"z": "amount_overflow", "a": "cart_not_found"})
	again, err := cart.Parse([]byte(encode(t, d)))
	require.NoError(t, err)
	assert.Equal(t, cart.Epoch{Era: -5, Seq: 1 << 63}, again.Epoch())
	assert.Equal(t, map[string]string{"z": "amount_overflow", "a": "cart_not_found"}, again.Rejected())
	assert.Equal(t, encode(t, d), encode(t, again), "equal documents encode equally")

	again.SetEpoch(cart.Epoch{})
	again.SetRejected(nil)
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(encode(t, again)), &m))
	assert.NotContains(t, m, cart.WriterEpochField)
	assert.NotContains(t, m, cart.RejectedIDsField)
}

func TestHistoryFieldsOfTheWrongShapeAreAnInvalidCart(t *testing.T) {
	for _, doc := range []string{
		`{"writer_epoch":"7"}`,
		`{"writer_epoch":{"era":1,"seq":-1}}`,
		`{"rejected_command_ids":["a"]}`,
	} {
		_, err := cart.Parse([]byte(doc))
		assert.ErrorIs(t, err, cart.ErrInvalidCart, doc)
	}
}

func TestRejectionCode(t *testing.T) {
	tests := []struct {
		err  error
		code string
		ok   bool
	}{
		{fmt.Errorf("add-item c1: %w", cart.ErrCartNotFound), command.CodeCartNotFound, true},
		{fmt.Errorf("status %q: %w", "Paying", cart.ErrInvalidState), command.CodeInvalidState, true},
		{cart.ErrUnknownTaxCode, command.CodeUnknownTaxCode, true},
		{fmt.Errorf("line 1: %w", cart.ErrAmountOverflow), command.CodeAmountOverflow, true},
		{&cart.TooLargeError{Size: 2097153, Limit: 2097152}, command.CodeCartTooLarge, true},
		{cart.ErrInvalidCart, "", false},
		{cart.ErrUnknownType, "", false},
		{errors.New("store down"), "", false},
		{nil, "", false},
	}
	for _, tt := range tests {
		code, ok := cart.RejectionCode(tt.err)
		assert.Equal(t, tt.ok, ok, "%v", tt.err)
		assert.Equal(t, tt.code, code, "%v", tt.err)
	}
}

// A tombstone from before Rejected and Epoch existed still reads; a new
// one without them writes neither.
func TestTombstoneReadsOldAndOmitsZeroFields(t *testing.T) {
	var ts cart.Tombstone
	require.NoError(t, json.Unmarshal([]byte(`{"cart_id":"c1","deleted_by":"d1","deleted_at":"2026-11-27T10:00:00Z","applied_command_ids":["a","d1"]}`), &ts))
	assert.Equal(t, cart.Tombstone{CartID: "c1", DeletedBy: "d1", DeletedAt: "2026-11-27T10:00:00Z", Applied: []string{"a", "d1"}}, ts)

	b, err := json.Marshal(cart.Delete("c1", "d1", []string{"d1"}, now))
	require.NoError(t, err)
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &m))
	assert.NotContains(t, m, cart.WriterEpochField)
	assert.NotContains(t, m, cart.RejectedIDsField)

	ts = cart.Tombstone{CartID: "c1", Applied: []string{"x"}, Rejected: map[string]string{"x": "cart_not_found"}, Epoch: cart.Epoch{Era: 2, Seq: 9}}
	b, err = json.Marshal(ts)
	require.NoError(t, err)
	assert.JSONEq(t, `{"cart_id":"c1","applied_command_ids":["x"],"rejected_command_ids":{"x":"cart_not_found"},"writer_epoch":{"era":2,"seq":9}}`, string(b))
}

// The message of a size refusal, which becomes the rejected event's, says
// the size and the limit.
func TestTooLargeErrorSaysSizeAndLimit(t *testing.T) {
	err := fmt.Errorf("cart c1: %w", &cart.TooLargeError{Size: 2100042, Limit: 2097152})
	assert.EqualError(t, err, "cart c1: cart would be 2100042 bytes, over WORKER_MAX_CART_BYTES 2097152")
	assert.ErrorIs(t, err, cart.ErrCartTooLarge)
	var tl *cart.TooLargeError
	require.ErrorAs(t, err, &tl)
	assert.Equal(t, 2100042, tl.Size)
}
