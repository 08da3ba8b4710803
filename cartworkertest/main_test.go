package cartworkertest

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a stack starts (in-process workers, process waiters,
// clients) is gone once Terminate has returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
