// Package consumer pulls cart commands from the partitions of the command
// stream that this instance owns (internal/ownership) into a bounded pool
// keyed by cart, applies each cart's waiting commands together in one
// read-modify-write, and decides, once per message, whether it is
// acknowledged, terminated and dead-lettered, Nak'ed (shutdown, or an
// instance that is not ready handing its partitions back), or dropped
// unsettled because its partition changed hands.
//
// At most one batch of a cart runs at a time, so an instance applies a
// cart's commands in stream order while different carts run in parallel.
// Across instances order rests on ownership: one instance pulls a partition
// at a time, a new owner rewinds the partition to its ack floor before it
// pulls, and the store refuses a cart write from a stale owner (its epoch
// is lower). The handled-id list in each cart makes a replay harmless: an
// applied command reads as a duplicate, a refused one is refused alike.
//
// One command's path, file by file: worker.go pulls it from its partition
// (pull, take) into the pool (pool.go), which runs its cart's batch;
// handle.go decodes it and applies it together with other carts' batches
// (handle, apply), and fate.go decides and carries out its fate (conclude).
// Beside that path: retry.go decides what follows a failure, failures.go
// counts them, gate.go holds commands while the environment is at fault,
// timing.go holds every delay, heartbeat.go keeps held commands alive and
// trace.go makes the spans.
package consumer
