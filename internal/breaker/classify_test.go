package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/cartworker/cartworker/internal/breaker"
	"github.com/cartworker/cartworker/internal/statepool"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func wrapped(err error) error { return fmt.Errorf("statepool: get \"k\": %w", err) }

func status(code int) error {
	return &statepool.StatusError{Op: statepool.OpGet, Key: "k", StatusCode: code}
}

func grpcStatus(code codes.Code) error {
	return &statepool.GRPCError{Op: statepool.OpGet, Key: "k", Code: code}
}

func TestIsFailure(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"not found", statepool.ErrNotFound, false},
		{"etag mismatch", statepool.ErrETagMismatch, false},
		{"wrapped etag mismatch", wrapped(statepool.ErrETagMismatch), false},
		{"empty key", statepool.ErrEmptyKey, false},
		{"invalid value", statepool.ErrInvalidValue, false},
		{"400", status(http.StatusBadRequest), false},
		{"401", status(http.StatusUnauthorized), false},
		{"404", status(http.StatusNotFound), false},
		{"409", status(http.StatusConflict), false},
		{"429", status(http.StatusTooManyRequests), false},
		{"500", status(http.StatusInternalServerError), true},
		{"502", status(http.StatusBadGateway), true},
		{"503 wrapped", wrapped(status(http.StatusServiceUnavailable)), true},
		{"grpc InvalidArgument", grpcStatus(codes.InvalidArgument), false},
		{"grpc Unauthenticated", grpcStatus(codes.Unauthenticated), false},
		{"grpc PermissionDenied", grpcStatus(codes.PermissionDenied), false},
		{"grpc NotFound", grpcStatus(codes.NotFound), false},
		{"grpc FailedPrecondition", grpcStatus(codes.FailedPrecondition), false},
		{"grpc Aborted", grpcStatus(codes.Aborted), false},
		{"grpc ResourceExhausted", grpcStatus(codes.ResourceExhausted), false},
		{"grpc Canceled", grpcStatus(codes.Canceled), false},
		{"grpc Unknown", grpcStatus(codes.Unknown), true},
		{"grpc DeadlineExceeded", grpcStatus(codes.DeadlineExceeded), true},
		{"grpc Unimplemented", grpcStatus(codes.Unimplemented), true},
		{"grpc Internal", grpcStatus(codes.Internal), true},
		{"grpc Unavailable wrapped", wrapped(grpcStatus(codes.Unavailable)), true},
		{"grpc DataLoss", grpcStatus(codes.DataLoss), true},
		{"canceled", wrapped(context.Canceled), false},
		{"deadline", wrapped(context.DeadlineExceeded), true},
		{"net timeout", wrapped(timeoutErr{}), true},
		{"dial refused", wrapped(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), true},
		{"read reset", wrapped(&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}), true},
		{"broken pipe", wrapped(syscall.EPIPE), true},
		{"eof", wrapped(io.EOF), true},
		{"unexpected eof", wrapped(io.ErrUnexpectedEOF), true},
		{"unknown transport error", wrapped(errors.New("http: server closed idle connection")), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, breaker.IsFailure(tt.err))
		})
	}
}

func TestStateNumbers(t *testing.T) {
	tests := []struct {
		state breaker.State
		num   int
		str   string
	}{
		{breaker.StateClosed, 0, "closed"},
		{breaker.StateHalfOpen, 1, "half-open"},
		{breaker.StateOpen, 2, "open"},
		{breaker.State(7), 7, "State(7)"},
	}
	for _, tt := range tests {
		t.Run(tt.str, func(t *testing.T) {
			require.Equal(t, tt.num, int(tt.state))
			require.Equal(t, tt.str, tt.state.String())
		})
	}
}
