package budget_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cartworker/cartworker/internal/budget"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// taken starts a Take in the background and returns a channel that yields
// the Give of what it took once it has taken.
func taken(ctx context.Context, b *budget.Bytes, n int64) <-chan func() {
	ch := make(chan func(), 1)
	go func() {
		if err := b.Take(ctx, n); err == nil {
			ch <- func() { b.Give(n) }
		}
		close(ch)
	}()
	return ch
}

// take takes n at once, and returns its Give.
func take(t *testing.T, b *budget.Bytes, n int64) func() {
	t.Helper()
	require.NoError(t, b.Take(context.Background(), n))
	return func() { b.Give(n) }
}

// waiting waits until b has n takes queued, then checks that ch's has not
// been granted: a queued take is granted only by a release.
func waiting(t *testing.T, b *budget.Bytes, n int, ch <-chan func()) {
	t.Helper()
	require.Eventually(t, func() bool { return b.Waiting() == n }, 5*time.Second, time.Millisecond, "%d takes should wait", n)
	select {
	case <-ch:
		t.Fatal("took past the budget")
	default:
	}
}

func granted(t *testing.T, ch <-chan func()) func() {
	t.Helper()
	select {
	case release, ok := <-ch:
		require.True(t, ok, "the take failed")
		return release
	case <-time.After(5 * time.Second):
		t.Fatal("not granted")
		return nil
	}
}

func TestTakeWaitsForWhatIsGivenBack(t *testing.T) {
	ctx := context.Background()
	b, err := budget.New(100)
	require.NoError(t, err)
	r1 := take(t, b, 60)
	r2 := take(t, b, 40)
	require.EqualValues(t, 100, b.Held())

	third := taken(ctx, b, 50)
	waiting(t, b, 1, third)
	r1()
	r3 := granted(t, third)
	require.EqualValues(t, 90, b.Held())
	r2()
	r3()
	require.EqualValues(t, 0, b.Held())
}

// A large take is served in its turn: smaller ones that come after it and
// would fit wait behind it, or it would never run on a busy instance.
func TestTakesAreServedInOrder(t *testing.T) {
	ctx := context.Background()
	b, _ := budget.New(100)
	r1 := take(t, b, 30)
	large := taken(ctx, b, 80)
	waiting(t, b, 1, large)
	small := taken(ctx, b, 10)
	waiting(t, b, 2, small)
	r1()
	rl := granted(t, large)
	rs := granted(t, small)
	require.EqualValues(t, 90, b.Held())
	rl()
	rs()
}

// A take larger than the whole budget waits for all of it, then runs alone.
func TestTakeLargerThanTheBudgetRunsAlone(t *testing.T) {
	ctx := context.Background()
	b, _ := budget.New(100)
	r1 := take(t, b, 1)
	huge := taken(ctx, b, 1000)
	waiting(t, b, 1, huge)
	r1()
	rh := granted(t, huge)
	require.EqualValues(t, 100, b.Held())
	rh()
	require.EqualValues(t, 0, b.Held())
}

// A waiter whose context ends takes nothing and lets those behind it go.
func TestCancelledTakeTakesNothing(t *testing.T) {
	b, _ := budget.New(100)
	r1 := take(t, b, 90)
	ctx, cancel := context.WithCancel(context.Background())
	big := taken(ctx, b, 50)
	waiting(t, b, 1, big)
	behind := taken(context.Background(), b, 10)
	waiting(t, b, 2, behind)
	cancel()
	_, ok := <-big
	require.False(t, ok, "a cancelled take must fail")
	rb := granted(t, behind)
	require.EqualValues(t, 100, b.Held())
	rb()
	r1()
	require.EqualValues(t, 0, b.Held())
}

func TestNilIsUnboundedAndSplit(t *testing.T) {
	var b *budget.Bytes
	require.NoError(t, b.Take(context.Background(), 1<<40))
	b.Give(1 << 40)
	require.Zero(t, b.Total())

	_, err := budget.New(0)
	require.ErrorContains(t, err, "0 bytes")
	commands, carts, err := budget.Split(16 << 20)
	require.NoError(t, err)
	require.EqualValues(t, 4<<20, commands.Total())
	require.EqualValues(t, 12<<20, carts.Total())
	_, _, err = budget.Split(3)
	require.Error(t, err)
}
