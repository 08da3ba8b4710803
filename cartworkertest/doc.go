// Package cartworkertest gives a Go test a real cartworker stack in one
// call, for the services that publish cart commands and want to test their
// code end to end, in the manner of testcontainers-go's modules:
//
//	st, err := cartworkertest.Run(ctx, cartworkertest.WithWorkers(2), cartworkertest.WithDaprToken("t"))
//	defer st.Terminate(ctx)
//	pub := st.Publisher()            // a ready *publisher.Publisher
//	cart, err := st.Cart(ctx, "c-1") // the stored cart document, read through daprd
//
// Run starts a Docker network with NATS (JetStream, its store in a volume),
// Redis, and daprd with the cartstore component and the tracing
// configuration that ship with cartworker (deployments/dapr), then the
// workers, and returns once every worker is ready. The workers run
//
//   - in the test's own process, through the worker's own wiring: no worker
//     image is needed (the default);
//   - as host processes of a worker binary (WithWorkerBinary, BuildWorker),
//     so that a test can SIGSTOP or SIGKILL one (Worker.Signal);
//   - as containers of the worker image (WithWorkerImage).
//
// Terminate stops every worker and removes every container; a second call
// does nothing. KillWorker ends a worker without its graceful drain; its
// doc says how that differs from SIGKILL for an in-process worker.
// PauseDaprd, StopDaprd, KillNATS and RestartNATS make the faults a
// publisher's retry paths must survive; every endpoint stays the same
// across them. DeadLetters reads the dead-letter stream.
//
// # Images
//
// The images are NATS_IMAGE, REDIS_IMAGE, DAPRD_IMAGE and (for
// WithWorkerImage) WORKER_IMAGE from the environment, else the defaults of
// cartworker's deployments/images.env, the official names: a machine with a
// registry pulls them as usual. Without one, `make images` in the cartworker
// repository builds them, and Run says so when one is missing.
//
// On a machine where testcontainers-go's reaper (Ryuk) cannot be pulled,
// or container ports are not reached on the default host, set
// TESTCONTAINERS_RYUK_DISABLED=true (Terminate removes everything itself)
// and TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1. Every port is published on
// 127.0.0.1 only.
//
// # Speed
//
// On a 2-core machine (shared with other work) with the images present,
// Run with one in-process worker returns in 1.7 s: the median of 9 runs,
// from 1.2 to 2.3 s (TestTimeToReady with CARTWORKERTEST_READY_RUNS=9
// times Run from its call to its return). With three container workers it
// takes 2.3 s (median of 3, 2.1 to 2.3 s). While the machine's other work
// ran its own tests, single runs took up to 2.7 s and 4.3 s. NATS and
// Redis start side by side, then daprd, then the workers side by side. One
// stack per test, in parallel subtests, is fine.
package cartworkertest
