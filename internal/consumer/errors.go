package consumer

import "errors"

// ErrStopped is returned by Run when message delivery ended while its
// context was still live, for example because the durable consumer was
// deleted or the NATS connection was closed. The worker cannot recover by
// itself; the process should exit non-zero and be restarted.
var ErrStopped = errors.New("consumer stopped delivering")
