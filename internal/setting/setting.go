// Package setting lets a component's Validate name the field at fault, so
// that internal/config can report each problem under the environment
// variable and flag that set the field, while the rule itself is written
// once, next to the type it configures.
package setting

import (
	"errors"
	"fmt"
)

// Error is a field whose value cannot work.
type Error struct {
	// Field is the Go name of the field, such as "Concurrency".
	Field string
	// Problem says what is wrong and what would do, such as "0: want
	// 1..4096".
	Problem string
}

func (e *Error) Error() string { return e.Field + ": " + e.Problem }

// Errorf returns an *Error for field.
func Errorf(field, format string, args ...any) error {
	return &Error{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// Each calls fn for every *Error in err, which may join several (see
// errors.Join), and returns the errors that are no *Error.
func Each(err error, fn func(*Error)) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var rest []error
		for _, e := range j.Unwrap() {
			rest = append(rest, Each(e, fn)...)
		}
		return rest
	}
	var se *Error
	if errors.As(err, &se) {
		fn(se)
		return nil
	}
	return []error{err}
}
