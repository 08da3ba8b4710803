package breaker

import (
	"errors"
	"time"

	"github.com/cartworker/cartworker/internal/setting"
)

// Defaults applied to zero-valued Settings fields.
const (
	DefaultName                = "dapr-state"
	DefaultMaxRequests         = 1
	DefaultTimeout             = 5 * time.Second
	DefaultConsecutiveFailures = 5
)

// Settings configures a Breaker. The zero value is usable: every zero field
// takes the default named in its comment.
type Settings struct {
	// Name identifies the breaker to gobreaker. Default DefaultName.
	Name string

	// MaxRequests is how many probe calls a half-open breaker lets through;
	// that many consecutive successes close it, any failure reopens it.
	// Default DefaultMaxRequests.
	MaxRequests uint32

	// Interval, when positive, clears the closed-state counts that often.
	// Default 0 never clears them: the breaker trips on consecutive
	// failures, and any success already resets that streak, so periodic
	// clearing only matters if a trickle of failures spread over idle
	// periods should be forgotten.
	Interval time.Duration

	// Timeout is how long the breaker stays open before letting probes
	// through. Default DefaultTimeout.
	Timeout time.Duration

	// ConsecutiveFailures is how many failures in a row, with no success
	// between them, trip the breaker. Default DefaultConsecutiveFailures.
	ConsecutiveFailures uint32

	// OnStateChange, when set, is called on every transition, for metrics
	// and logs. gobreaker calls it while holding its lock, so it must be
	// fast and must not call back into the Breaker (State would deadlock).
	OnStateChange func(from, to State)
}

// Validate reports invalid fields, each as a *setting.Error naming it; zero
// values are valid and mean "use the default".
func (s Settings) Validate() error {
	var errs []error
	if s.Interval < 0 {
		errs = append(errs, setting.Errorf("Interval", "%s: must not be negative", s.Interval))
	}
	if s.Timeout < 0 {
		errs = append(errs, setting.Errorf("Timeout", "%s: want a positive duration such as 5s", s.Timeout))
	}
	return errors.Join(errs...)
}

func (s Settings) withDefaults() Settings {
	if s.Name == "" {
		s.Name = DefaultName
	}
	if s.MaxRequests == 0 {
		s.MaxRequests = DefaultMaxRequests
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	return s
}
