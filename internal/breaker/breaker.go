// Package breaker guards the Dapr state store with a circuit breaker.
//
// Breaker decorates a cartcache.Store with one sony/gobreaker breaker shared by
// all its calls, Get, Save and Delete and the bulk GetBulk and SaveBulk, so a
// sick sidecar is detected whichever operation hits it first. A bulk call
// counts once, like any other call; a GetBulk in which a key failed on its
// own (anything but statepool.ErrNotFound) fails as a whole with that key's
// error. While the breaker is open calls fail fast with ErrOpen instead of
// piling up on timeouts. Which errors count against the store is decided by
// IsFailure.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/sony/gobreaker/v2"

	"github.com/cartworker/cartworker/internal/cartcache"
	"github.com/cartworker/cartworker/internal/statepool"
)

var _ cartcache.Store = (*Breaker)(nil)

// State is the breaker's state. The values are exported as the metric
// cartworker_breaker_state, so they must not change.
type State int

// Breaker states.
const (
	StateClosed   State = 0
	StateHalfOpen State = 1
	StateOpen     State = 2
)

// String implements fmt.Stringer.
func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half-open"
	case StateOpen:
		return "open"
	default:
		return fmt.Sprintf("State(%d)", int(s))
	}
}

func fromGobreaker(s gobreaker.State) State {
	switch s {
	case gobreaker.StateHalfOpen:
		return StateHalfOpen
	case gobreaker.StateOpen:
		return StateOpen
	default:
		return StateClosed
	}
}

// Breaker is a cartcache.Store that fails fast while the wrapped Store is unhealthy.
// It is safe for concurrent use.
type Breaker struct {
	next cartcache.Store
	cb   *gobreaker.CircuitBreaker[statepool.Entry]

	// Built once so rejections, which come in floods, cost no allocation.
	errOpenState       error
	errTooManyRequests error

	// opens counts the breaker's transitions to open. A call reads it
	// before and after it waits on the store to learn whether an outage was
	// declared meanwhile; atomic because calls read it outside gobreaker's
	// lock.
	opens atomic.Uint64
	// failing is the failed call whose outcome gobreaker is applying: set
	// by IsSuccessful for OnStateChange, which gobreaker calls right after
	// it, in the same critical section, when that outcome opens the
	// breaker. gobreaker's lock guards it: only those callbacks touch it.
	failing *callError

	// afterExecute, when set, runs after each call returns from gobreaker
	// and before its error is classified. Tests use it to move the breaker
	// on in between, which a classification read from the breaker's state
	// would not survive. Nil outside tests.
	afterExecute func()
}

// New wraps next. st must pass Validate.
func New(next cartcache.Store, st Settings) (*Breaker, error) {
	if next == nil {
		return nil, errNilStore
	}
	if err := st.Validate(); err != nil {
		return nil, err
	}
	st = st.withDefaults()

	b := &Breaker{
		next:               next,
		errOpenState:       fmt.Errorf("%w: %w", ErrOpen, gobreaker.ErrOpenState),
		errTooManyRequests: fmt.Errorf("%w: %w", ErrOpen, gobreaker.ErrTooManyRequests),
	}
	gs := gobreaker.Settings{
		Name:        st.Name,
		MaxRequests: st.MaxRequests,
		Interval:    st.Interval,
		Timeout:     st.Timeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= st.ConsecutiveFailures
		},
		IsSuccessful: func(err error) bool {
			if !IsFailure(err) {
				b.failing = nil
				return true
			}
			b.failing, _ = err.(*callError)
			return false
		},
		IsExcluded: func(err error) bool {
			var ex *excludedError
			return errors.As(err, &ex)
		},
		// gobreaker calls this in the goroutine whose call's outcome
		// changed the state, before that call's Execute returns, so the
		// mark it leaves on the call is read there without a race.
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				b.opens.Add(1)
				if b.failing != nil {
					b.failing.opened = true
				}
			}
			b.failing = nil
			if st.OnStateChange != nil {
				st.OnStateChange(fromGobreaker(from), fromGobreaker(to))
			}
		},
	}
	b.cb = gobreaker.NewCircuitBreaker[statepool.Entry](gs)
	return b, nil
}

// State returns the breaker's current state.
func (b *Breaker) State() State { return fromGobreaker(b.cb.State()) }

// Get implements cartcache.Store.
func (b *Breaker) Get(ctx context.Context, key string) (statepool.Entry, error) {
	e, err := b.cb.Execute(func() (statepool.Entry, error) {
		opens := b.opens.Load()
		e, err := b.next.Get(ctx, key)
		return e, b.mark(ctx, opens, err)
	})
	return e, b.unwrap(err)
}

// Save implements cartcache.Store.
func (b *Breaker) Save(ctx context.Context, key string, value []byte, opts statepool.SaveOptions) error {
	_, err := b.cb.Execute(func() (statepool.Entry, error) {
		opens := b.opens.Load()
		return statepool.Entry{}, b.mark(ctx, opens, b.next.Save(ctx, key, value, opts))
	})
	return b.unwrap(err)
}

// Delete implements cartcache.Store.
func (b *Breaker) Delete(ctx context.Context, key, etag string) error {
	_, err := b.cb.Execute(func() (statepool.Entry, error) {
		opens := b.opens.Load()
		return statepool.Entry{}, b.mark(ctx, opens, b.next.Delete(ctx, key, etag))
	})
	return b.unwrap(err)
}

// GetBulk implements cartcache.Store. A bulk call counts once, like any
// other call: a key that failed alone fails the call for the breaker.
func (b *Breaker) GetBulk(ctx context.Context, keys []string) ([]statepool.BulkEntry, error) {
	var out []statepool.BulkEntry
	_, err := b.cb.Execute(func() (statepool.Entry, error) {
		opens := b.opens.Load()
		var err error
		out, err = b.next.GetBulk(ctx, keys)
		if err == nil {
			err = itemFailure(out)
		}
		return statepool.Entry{}, b.mark(ctx, opens, err)
	})
	if err = b.unwrap(err); err != nil {
		return nil, err
	}
	return out, nil
}

// itemFailure returns the first key's own failure in a bulk answer, nil
// when every key was read or missing.
func itemFailure(entries []statepool.BulkEntry) error {
	for _, e := range entries {
		if e.Err != nil && !errors.Is(e.Err, statepool.ErrNotFound) {
			return e.Err
		}
	}
	return nil
}

// SaveBulk implements cartcache.Store.
func (b *Breaker) SaveBulk(ctx context.Context, items []statepool.SaveItem) error {
	_, err := b.cb.Execute(func() (statepool.Entry, error) {
		opens := b.opens.Load()
		return statepool.Entry{}, b.mark(ctx, opens, b.next.SaveBulk(ctx, items))
	})
	return b.unwrap(err)
}

// excludedError marks an error that says nothing about the store's health,
// so IsExcluded can see it; gobreaker passes IsExcluded only the error.
type excludedError struct{ err error }

func (e *excludedError) Error() string { return e.err.Error() }
func (e *excludedError) Unwrap() error { return e.err }

// markExcluded marks errors caused by the caller giving up: its context was
// cancelled or its own deadline passed before the store answered.
func markExcluded(ctx context.Context, err error) error {
	if err != nil && (ctx.Err() != nil || errors.Is(err, context.Canceled)) {
		return &excludedError{err: err}
	}
	return err
}

// callError carries a failed call's error through gobreaker, so that
// whether the call ends as ErrOpen is settled while it runs rather than
// read from the breaker's state after Execute returns, when other calls may
// have moved the breaker on. opened is written only in the call's own
// goroutine: by mark, and by OnStateChange when gobreaker applies this
// call's outcome.
type callError struct {
	err error
	// opened: the breaker opened while the call waited on the store, or
	// the call's own failure opened it (it tripped the breaker or was a
	// failed half-open probe).
	opened bool
}

func (e *callError) Error() string { return e.err.Error() }
func (e *callError) Unwrap() error { return e.err }

// mark prepares the store's answer for gobreaker: excluded errors marked as
// such, failures wrapped in a callError that notes whether the breaker
// opened since opens was read, before the call went to the store.
func (b *Breaker) mark(ctx context.Context, opens uint64, err error) error {
	err = markExcluded(ctx, err)
	if !IsFailure(err) {
		return err
	}
	return &callError{err: err, opened: b.opens.Load() != opens}
}

// unwrap turns gobreaker's rejections into ErrOpen and strips the exclusion
// mark, so callers see the store's own error.
func (b *Breaker) unwrap(err error) error {
	if b.afterExecute != nil {
		b.afterExecute()
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gobreaker.ErrOpenState):
		return b.errOpenState
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		return b.errTooManyRequests
	}
	ce, _ := err.(*callError)
	if ce != nil {
		err = ce.err
	}
	var ex *excludedError
	if errors.As(err, &ex) {
		return ex.err
	}
	if ce != nil && ce.opened {
		// This call opened the breaker, or the breaker opened while it
		// waited on the store: it is as much an outage as a rejected
		// call, so the caller must treat it like one (the consumer then
		// never dead-letters a command because Dapr was down).
		return &openError{err: err}
	}
	return err
}

// openError is a store failure that opened the breaker or was in flight
// when it opened. It matches both ErrOpen and the store's own error.
type openError struct{ err error }

func (e *openError) Error() string   { return ErrOpen.Error() + ": " + e.err.Error() }
func (e *openError) Unwrap() []error { return []error{ErrOpen, e.err} }
