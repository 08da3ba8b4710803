package main

import (
	"errors"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
)

func TestDLQRemoveAsksFirst(t *testing.T) {
	e := newEnv(t)
	seq := e.putDeadLetter(t, "c-9", "add-item", "", `{"id":"cmd-1"}`, "max_deliveries", "failed 10 deliveries")
	e.putDeadLetter(t, "c-8", "cache", "", `{"id":"cmd-2"}`, "invalid_cart", "cart must be a JSON object")
	s := strconv.FormatUint(seq, 10)
	held := func() uint64 { return e.streamState(t, command.StreamDeadLetters).Msgs }

	for _, answer := range []string{"n\n", "\n", "maybe\n", ""} {
		r := e.runWithStdin(t, answer, "dlq", "rm", "-seq", s)
		require.ErrorIs(t, r.err, errNotConfirmed, "answer %q", answer)
		require.Contains(t, r.err.Error(), "seq "+s+" kept")
		require.Contains(t, r.stderr, "cart.dlq.c-9.add-item", "the dead letter is shown before the question")
		require.Contains(t, r.stderr, "Delete dead letter "+s+" from CART_DLQ for good? [y/N]")
		require.Equal(t, uint64(2), held())
	}
	r := e.run(t, "dlq", "rm", "-seq", s)
	require.Contains(t, r.err.Error(), "no answer on stdin (use -yes in scripts)")

	r = e.runWithStdin(t, "Y\n", "dlq", "rm", "-seq", s)
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, "seq "+s+" deleted from CART_DLQ\n", r.stdout)
	require.Equal(t, uint64(1), held())

	r = e.run(t, "dlq", "rm", "-seq", "2", "-yes")
	require.NoError(t, r.err, r.stderr)
	require.NotContains(t, r.stderr, "[y/N]", "-yes asks nothing")
	require.Equal(t, uint64(0), held())

	r = e.run(t, "dlq", "rm", "-seq", "2", "-yes")
	require.Error(t, r.err)
	require.Contains(t, r.err.Error(), "no dead letter at seq 2")
}

func TestDLQPurgeAsksForTheStreamName(t *testing.T) {
	e := newEnv(t)
	for _, cart := range []string{"c-1", "c-2", "c-3"} {
		e.putDeadLetter(t, cart, "delete", "", `{"id":"d-`+cart+`"}`, "max_deliveries", "x")
	}
	held := func() uint64 { return e.streamState(t, command.StreamDeadLetters).Msgs }

	for _, answer := range []string{"y\n", "cart_dlq\n", ""} {
		r := e.runWithStdin(t, answer, "dlq", "purge")
		require.True(t, errors.Is(r.err, errNotConfirmed), "answer %q: %v", answer, r.err)
		require.Contains(t, r.err.Error(), "CART_DLQ kept")
		require.Contains(t, r.stderr, "Purge all 3 dead letters of CART_DLQ (seq 1..3) for good? Type CART_DLQ to confirm: ")
		require.Equal(t, uint64(3), held())
	}
	r := e.runWithStdin(t, "CART_DLQ\n", "dlq", "purge")
	require.NoError(t, r.err, r.stderr)
	require.Equal(t, "purged 3 dead letters (seq 1..3) from CART_DLQ\n", r.stdout)
	require.Equal(t, uint64(0), held())

	r = e.run(t, "dlq", "purge")
	require.NoError(t, r.err)
	require.Contains(t, r.stderr, "CART_DLQ is empty")

	e.putDeadLetter(t, "c-4", "delete", "", `{"id":"d-4"}`, "max_deliveries", "x")
	r = e.run(t, "dlq", "purge", "-yes")
	require.NoError(t, r.err, r.stderr)
	require.NotContains(t, r.stderr, "Type CART_DLQ")
	require.Contains(t, r.stdout, "purged 1 dead letters (seq 4..4)")
	require.Equal(t, uint64(0), held())
}
