package cartcache

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/cartworker/cartworker/internal/cart"
)

// PriorRejection unwraps to the very error cart.RejectionCode maps to its
// code: the two tables must not drift apart.
func TestRejectionErrsAreRejectionCodeBackwards(t *testing.T) {
	assert.Len(t, rejectionErrs, 5)
	for code, err := range rejectionErrs {
		got, ok := cart.RejectionCode(err)
		assert.True(t, ok, code)
		assert.Equal(t, code, got)
		assert.ErrorIs(t, &PriorRejection{Code: code}, err)
	}
	assert.NoError(t, (&PriorRejection{Code: "no_such_code"}).Unwrap())
}

func TestTrimHistory(t *testing.T) {
	tests := []struct {
		name         string
		ids          []string
		rejected     map[string]string
		keep         int
		wantIDs      []string
		wantRejected map[string]string
	}{
		{name: "no refusals stay nil", ids: []string{"a", "b", "c"}, keep: 2, wantIDs: []string{"b", "c"}},
		{name: "codes go with their ids", ids: []string{"a", "b", "c"}, rejected: map[string]string{"a": "x", "c": "y"}, keep: 2,
			wantIDs: []string{"b", "c"}, wantRejected: map[string]string{"c": "y"}},
		{name: "the last code gone leaves nil", ids: []string{"a", "b"}, rejected: map[string]string{"a": "x"}, keep: 1,
			wantIDs: []string{"b"}},
		{name: "codes of unlisted ids are dropped", ids: []string{"a"}, rejected: map[string]string{"a": "x", "q": "y"}, keep: 5,
			wantIDs: []string{"a"}, wantRejected: map[string]string{"a": "x"}},
	}
	for _, tt := range tests {
		ids, rejected := trimHistory(tt.ids, tt.rejected, tt.keep)
		assert.Equal(t, tt.wantIDs, ids, tt.name)
		assert.Equal(t, tt.wantRejected, rejected, tt.name)
	}
}
