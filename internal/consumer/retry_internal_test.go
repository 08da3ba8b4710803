package consumer

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
)

// The retry policy, failure by failure: an apply is retried after the
// backoff until it has failed MaxDeliver times, then given up with an
// exhaustedError; a publish is retried without end. Every failure of an
// apply is logged, a publish's first and every tenth.
func TestRetryPolicy(t *testing.T) {
	var logs bytes.Buffer
	w, err := New(nil, nil, nil, Config{MaxDeliver: 4, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	msg := &jsMsg{plainMsg: plainMsg{subject: "cart.pcmd.03.c1.add-item"}, headers: nats.Header{command.HeaderMsgID: []string{"hdr-id"}}}
	d := &delivery{msg: msg, cmd: command.Command{ID: "a1", CartID: "c1"}}
	errDown := errors.New("dapr: connection reset")
	lines := func() int {
		defer logs.Reset()
		return strings.Count(logs.String(), "retrying in place")
	}

	for n := 1; n < 4; n++ {
		delay, err := w.afterFailure(failure{step: stepApply, d: d, batch: 2, n: n, err: errDown})
		require.NoError(t, err, "failure %d of 4", n)
		require.Equal(t, w.backoffAfter(n), delay)
		require.Equal(t, 1, lines(), "every failure of an apply is logged")
	}
	_, err = w.afterFailure(failure{step: stepApply, d: d, batch: 2, n: 4, err: errDown})
	var ex *exhaustedError
	require.ErrorAs(t, err, &ex, "given up at MaxDeliver")
	require.Equal(t, 4, ex.failed)
	require.ErrorIs(t, err, errDown)
	require.Equal(t, "failed 4 times, last: "+errDown.Error(), err.Error())
	require.Zero(t, lines(), "giving up is no retry")

	logged := 0
	for n := 1; n <= 25; n++ {
		delay, err := w.afterFailure(failure{step: "outcome event", d: d, batch: 1, n: n, err: errDown})
		require.NoError(t, err, "a publish is never given up")
		require.Equal(t, w.backoffAfter(n), delay)
		logged += lines()
	}
	require.Equal(t, 3, logged, "failures 1, 10 and 20 of a publish are logged")
}
