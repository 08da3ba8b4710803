// Package loadkit is the shared core of cartworker's load tooling
// (bench/loadgen and the go-sdk peer in bench/sdkpeer): the cart scenario
// driver, the latency recorder, exact percentiles, the aggregation of runs
// into report points, and /proc sampling.
//
// Besides the standard library it imports only the worker's state-store
// contract, cartcache.Store (with statepool's Entry and SaveOptions), which
// the direct modes drive. The separate bench/sdkpeer module uses it through
// a replace directive, so the main module never depends on the Dapr Go SDK.
//
// Vocabulary:
//
//   - A run is one measurement of one mode (Modes: the worker's pooled,
//     per-request, worker-grpc, worker-http; the Watermill peer; the Dapr
//     pub/sub peer without and with bulk subscribe; the ceiling and go-sdk
//     direct clients) at one user count in one scenario
//     (paced, closed-loop) for one round. Its raw latencies are kept so
//     that rounds can be merged.
//   - A point is the aggregate of a mode, scenario and user count over its
//     rounds, per command type: exact percentiles over every sample of every
//     round, throughput as the median of the rounds' throughputs, and each
//     round's own p99 with how far it moves between rounds.
package loadkit
