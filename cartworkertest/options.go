package cartworkertest

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/testcontainers/testcontainers-go"

	"github.com/cartworker/cartworker/publisher"
)

// Defaults of Run, written once here.
const (
	// DefaultWorkers is how many workers Run starts without WithWorkers.
	DefaultWorkers = 1
	// DefaultStartupTimeout bounds each container's start and each
	// worker's wait for readiness, without WithStartupTimeout.
	DefaultStartupTimeout = 60 * time.Second
	// DefaultStopTimeout is how long Terminate and StopWorker let a worker
	// drain after SIGTERM (or its context's end) before they kill it: past
	// the worker's own WORKER_SHUTDOWN_TIMEOUT (20 s).
	DefaultStopTimeout = 30 * time.Second
)

// Option configures Run. A bad value is an error of Run naming the option.
type Option func(*settings) error

// settings is everything Run starts, defaultSettings its defaults.
type settings struct {
	workers        int
	worker         workerSpec
	daprToken      string
	startupTimeout time.Duration
	// Customizers of each container, applied after the stack's own.
	natsCustom, redisCustom, daprdCustom []testcontainers.ContainerCustomizer
	// natsOptions are added to the stack's own NATS connection.
	natsOptions []nats.Option
	// publisherOptions make the stack's Publisher.
	publisherOptions []publisher.Option
}

func defaultSettings() settings {
	return settings{workers: DefaultWorkers, startupTimeout: DefaultStartupTimeout, worker: workerSpec{kind: inProcess}}
}

// newSettings applies opts over the defaults and reports every bad value.
func newSettings(opts []Option) (settings, error) {
	s := defaultSettings()
	var errs []error
	for _, opt := range opts {
		if opt == nil {
			errs = append(errs, errors.New("cartworkertest: a nil Option"))
			continue
		}
		if err := opt(&s); err != nil {
			errs = append(errs, fmt.Errorf("cartworkertest: %w", err))
		}
	}
	return s, errors.Join(errs...)
}

// WithWorkers sets how many workers Run starts and waits for (default
// DefaultWorkers). 0 starts none: add them with Stack.AddWorker.
func WithWorkers(n int) Option {
	return func(s *settings) error {
		if n < 0 {
			return fmt.Errorf("WithWorkers(%d): want 0 or more", n)
		}
		s.workers = n
		return nil
	}
}

// WithWorkerBinary runs the workers as host processes of the cartworker
// worker binary at path (go build github.com/cartworker/cartworker/cmd/worker,
// or BuildWorker), so that a test can signal them: SIGSTOP freezes one,
// SIGKILL ends it as a crash would. The default runs them in the test's
// own process.
func WithWorkerBinary(path string) Option {
	return func(s *settings) error { return WorkerBinary(path)(&s.worker) }
}

// WithWorkerImage runs the workers as containers of image on the stack's
// network, as in Docker Compose. Image(WorkerImageVar) is the default
// worker image.
func WithWorkerImage(image string) Option {
	return func(s *settings) error { return WorkerImage(image)(&s.worker) }
}

// WithWorkerEnv sets environment variables of every worker (the worker's
// settings: WORKER_CONCURRENCY, WORKER_ACK_WAIT, ...), over the stack's
// own (NATS_URL, DAPR_*, LOG_FORMAT=text). An empty value unsets one.
func WithWorkerEnv(env map[string]string) Option {
	return func(s *settings) error { return WorkerEnv(env)(&s.worker) }
}

// WithDaprToken makes daprd require token (DAPR_API_TOKEN) and gives it to
// the workers and to the stack's own Dapr client (Cart).
func WithDaprToken(token string) Option {
	return func(s *settings) error {
		if token == "" {
			return errors.New("WithDaprToken(\"\"): want a token; leave the option out for none")
		}
		s.daprToken = token
		return nil
	}
}

// WithStartupTimeout bounds each container's start and each worker's wait
// for readiness (default DefaultStartupTimeout).
func WithStartupTimeout(d time.Duration) Option {
	return func(s *settings) error {
		if d <= 0 {
			return fmt.Errorf("WithStartupTimeout(%s): want a positive duration", d)
		}
		s.startupTimeout = d
		return nil
	}
}

// WithNATS customizes the NATS container after the stack's own settings
// (command "-js -sd /data -m 8222", client port 4222 on a fixed loopback
// port, network alias "nats"): testcontainers.WithCmdArgs("--user", u,
// "--pass", p) for a password, WithCmd and WithFiles for a configuration
// file of your own. The server must keep JetStream on and listen on 4222.
func WithNATS(customizers ...testcontainers.ContainerCustomizer) Option {
	return func(s *settings) error {
		s.natsCustom = append(s.natsCustom, customizers...)
		return nil
	}
}

// WithRedis customizes the Redis container after the stack's own settings
// (ephemeral: no snapshots, no AOF; network alias "redis").
func WithRedis(customizers ...testcontainers.ContainerCustomizer) Option {
	return func(s *settings) error {
		s.redisCustom = append(s.redisCustom, customizers...)
		return nil
	}
}

// WithDaprd customizes the daprd container after the stack's own settings
// (app id "cartworker", the shipped cartstore component and tracing
// configuration, HTTP 3500 and gRPC 50001 on fixed loopback ports, network
// alias "daprd"): testcontainers.WithEnv for daprd's variables, WithFiles
// for another component in /components.
func WithDaprd(customizers ...testcontainers.ContainerCustomizer) Option {
	return func(s *settings) error {
		s.daprdCustom = append(s.daprdCustom, customizers...)
		return nil
	}
}

// WithNATSOptions adds options to the stack's own NATS connection, which
// Publisher and DeadLetters use: credentials and TLS for a server that
// WithNATS secured.
func WithNATSOptions(opts ...nats.Option) Option {
	return func(s *settings) error {
		s.natsOptions = append(s.natsOptions, opts...)
		return nil
	}
}

// WithPublisherOptions makes Stack.Publisher with opts:
// publisher.WithWaitTimeout for a test that waits out a killed worker's
// leases (which PublishAndWait's default of 10 s may not), or
// publisher.WithTracerProvider.
func WithPublisherOptions(opts ...publisher.Option) Option {
	return func(s *settings) error {
		s.publisherOptions = append(s.publisherOptions, opts...)
		return nil
	}
}

// WorkerOption configures one worker of Stack.AddWorker; the With* options
// of the same names set them for every worker of Run.
type WorkerOption func(*workerSpec) error

// workerKind is how a worker runs.
type workerKind int

const (
	inProcess workerKind = iota
	hostProcess
	container
)

func (k workerKind) String() string {
	return [...]string{"in-process", "process", "container"}[k]
}

// workerSpec is what one worker runs as.
type workerSpec struct {
	kind workerKind
	// binary or image, by kind.
	binary, image string
	name          string
	env           map[string]string
	// healthyOnly returns once the worker serves /healthz rather than
	// once /readyz answers 200.
	healthyOnly bool
}

// WorkerInProcess runs the worker in the test's process (internal/app):
// the default.
func WorkerInProcess() WorkerOption {
	return func(w *workerSpec) error {
		w.kind, w.binary, w.image = inProcess, "", ""
		return nil
	}
}

// WorkerBinary runs the worker as a host process of the binary at path
// (see WithWorkerBinary).
func WorkerBinary(path string) WorkerOption {
	return func(w *workerSpec) error {
		if path == "" {
			return errors.New("WithWorkerBinary(\"\"): want the path of a worker binary")
		}
		w.kind, w.binary, w.image = hostProcess, path, ""
		return nil
	}
}

// WorkerImage runs the worker as a container of image (see
// WithWorkerImage).
func WorkerImage(image string) WorkerOption {
	return func(w *workerSpec) error {
		if image == "" {
			return errors.New("WithWorkerImage(\"\"): want an image, e.g. Image(WorkerImageVar)")
		}
		w.kind, w.binary, w.image = container, "", image
		return nil
	}
}

// WorkerEnv sets environment variables of the worker over the stack's (see
// WithWorkerEnv); given twice, the later wins per variable.
func WorkerEnv(env map[string]string) WorkerOption {
	return func(w *workerSpec) error {
		if _, bad := env[""]; bad {
			return errors.New("WithWorkerEnv: a variable with no name")
		}
		w.env = maps.Clone(w.env)
		if w.env == nil {
			w.env = map[string]string{}
		}
		maps.Copy(w.env, env)
		return nil
	}
}

// WorkerName names the worker in errors, logs and its container's name
// (default "worker-<index>").
func WorkerName(name string) WorkerOption {
	return func(w *workerSpec) error {
		if name == "" {
			return errors.New("WorkerName(\"\"): want a name")
		}
		w.name = name
		return nil
	}
}

// WorkerWaitHealthy makes AddWorker return once the worker serves
// /healthz, without waiting for /readyz: for a worker that the test
// expects not to become ready (a wrong token, no daprd yet).
func WorkerWaitHealthy() WorkerOption {
	return func(w *workerSpec) error {
		w.healthyOnly = true
		return nil
	}
}
