package breaker

// SetAfterExecute installs f to run after each of b's calls returns from
// gobreaker and before its error is classified.
func SetAfterExecute(b *Breaker, f func()) { b.afterExecute = f }
