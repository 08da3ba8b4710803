// Package consumer pulls cart commands from the shared JetStream durable
// consumer into a bounded pool keyed by cart and decides, once per message,
// whether it is acknowledged, retried later (NakWithDelay), or terminated and
// dead-lettered.
//
// At most one message of a cart runs at a time, so an instance applies a
// cart's commands in arrival order while different carts run in parallel.
// Several instances may share the durable consumer; the ETag guard and the
// applied-id list in each cart make their concurrent work safe.
package consumer
