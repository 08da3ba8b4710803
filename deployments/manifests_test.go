package deployments_test

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/deployments"
	"github.com/cartworker/cartworker/internal/config"
	"github.com/cartworker/cartworker/internal/statepool"
)

// manifest is one YAML document of one file under deployments/.
type manifest struct {
	file  string // slash-separated, relative to deployments/
	index int    // position of the document in its file
	node  *yaml.Node
	data  map[string]any
}

func (m manifest) String() string { return fmt.Sprintf("%s#%d", m.file, m.index) }

func (m manifest) kind() string {
	k, _ := m.data["kind"].(string)
	return k
}

func (m manifest) apiVersion() string {
	v, _ := m.data["apiVersion"].(string)
	return v
}

func (m manifest) name() string {
	n, _ := dig(m.data, "metadata", "name")
	s, _ := n.(string)
	return s
}

func isComposeFile(file string) bool {
	base := filepath.Base(file)
	return strings.HasPrefix(base, "compose.") || strings.HasPrefix(base, "docker-compose.")
}

// yamlFiles lists every *.yaml and *.yml under deployments/.
func yamlFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			files = append(files, filepath.ToSlash(path))
		}
		return nil
	})
	require.NoError(t, err)
	sort.Strings(files)
	require.NotEmpty(t, files)
	return files
}

// parseFile decodes every non-empty document of a file.
func parseFile(file string) ([]manifest, error) {
	f, err := os.Open(filepath.FromSlash(file))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []manifest
	for i := 0; ; i++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(node.Content) == 0 {
			continue // only comments, or an empty document
		}
		var data map[string]any
		if err := node.Decode(&data); err != nil {
			return nil, fmt.Errorf("document %d is not a mapping: %w", i, err)
		}
		docs = append(docs, manifest{file: file, index: i, node: &node, data: data})
	}
}

func loadAll(t *testing.T) []manifest {
	t.Helper()
	var all []manifest
	for _, file := range yamlFiles(t) {
		docs, err := parseFile(file)
		require.NoError(t, err, file)
		all = append(all, docs...)
	}
	return all
}

// byKind returns the documents of one kind (and apiVersion group prefix,
// when not empty).
func byKind(all []manifest, group, kind string) []manifest {
	var out []manifest
	for _, m := range all {
		if m.kind() == kind && strings.HasPrefix(m.apiVersion(), group) {
			out = append(out, m)
		}
	}
	return out
}

func one(t *testing.T, all []manifest, group, kind, name string) manifest {
	t.Helper()
	var found []manifest
	for _, m := range byKind(all, group, kind) {
		if m.name() == name {
			found = append(found, m)
		}
	}
	require.Len(t, found, 1, "want exactly one %s %s %q", group, kind, name)
	return found[0]
}

// dig walks nested mappings.
func dig(v any, path ...string) (any, bool) {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[p]; !ok {
			return nil, false
		}
	}
	return v, true
}

func mustDig(t *testing.T, v any, path ...string) any {
	t.Helper()
	got, ok := dig(v, path...)
	require.True(t, ok, "missing %s", strings.Join(path, "."))
	return got
}

func mustStr(t *testing.T, v any, path ...string) string {
	t.Helper()
	got := mustDig(t, v, path...)
	s, ok := got.(string)
	require.True(t, ok, "%s: want a string, got %T %v", strings.Join(path, "."), got, got)
	return s
}

func mustInt(t *testing.T, v any, path ...string) int {
	t.Helper()
	got := mustDig(t, v, path...)
	n, ok := got.(int)
	require.True(t, ok, "%s: want an integer, got %T %v", strings.Join(path, "."), got, got)
	return n
}

func mustMap(t *testing.T, v any, path ...string) map[string]any {
	t.Helper()
	got := mustDig(t, v, path...)
	m, ok := got.(map[string]any)
	require.True(t, ok, "%s: want a mapping, got %T", strings.Join(path, "."), got)
	return m
}

func mustList(t *testing.T, v any, path ...string) []any {
	t.Helper()
	got := mustDig(t, v, path...)
	l, ok := got.([]any)
	require.True(t, ok, "%s: want a list, got %T", strings.Join(path, "."), got)
	return l
}

func strList(t *testing.T, v any, path ...string) []string {
	t.Helper()
	var out []string
	for i, e := range mustList(t, v, path...) {
		s, ok := e.(string)
		require.True(t, ok, "%s[%d]: want a string, got %T", strings.Join(path, "."), i, e)
		out = append(out, s)
	}
	return out
}

// namedItem finds the {name: ..., ...} element of a list.
func namedItem(t *testing.T, list []any, name string) map[string]any {
	t.Helper()
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	require.Failf(t, "missing list item", "no element named %q", name)
	return nil
}

func httpPort(t *testing.T) int {
	t.Helper()
	_, p, err := net.SplitHostPort(config.DefaultHTTPAddr)
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

// asInt accepts an int or a decimal string (annotations, env values).
func asInt(t *testing.T, v any) int {
	t.Helper()
	switch x := v.(type) {
	case int:
		return x
	case string:
		n, err := strconv.Atoi(x)
		require.NoError(t, err, "%q is not an integer", x)
		return n
	}
	require.Failf(t, "not an integer", "%T %v", v, v)
	return 0
}

func TestEveryManifestParses(t *testing.T) {
	for _, file := range yamlFiles(t) {
		t.Run(file, func(t *testing.T) {
			docs, err := parseFile(file)
			require.NoError(t, err)
			require.NotEmpty(t, docs, "no document")
			for _, m := range docs {
				if isComposeFile(file) {
					_, ok := m.data["services"].(map[string]any)
					require.True(t, ok, "%s: compose file without services", m)
					continue
				}
				require.NotEmpty(t, m.apiVersion(), "%s: apiVersion", m)
				require.NotEmpty(t, m.kind(), "%s: kind", m)
				require.NotEmpty(t, m.name(), "%s: metadata.name", m)
			}
		})
	}
}

func TestDaprStateStoreComponents(t *testing.T) {
	comps := byKind(loadAll(t), "dapr.io/", "Component")
	// One for Compose (dapr/components), one for Kubernetes (k8s).
	require.Len(t, comps, 2)
	for _, c := range comps {
		t.Run(c.String(), func(t *testing.T) {
			require.Equal(t, "dapr.io/v1alpha1", c.apiVersion())
			require.Equal(t, config.DefaultStateStore, c.name())
			require.Equal(t, "state.redis", mustStr(t, c.data, "spec", "type"))
			require.Equal(t, "v1", mustStr(t, c.data, "spec", "version"))
			require.Contains(t, strList(t, c.data, "scopes"), config.DefaultAppID)

			md := mustList(t, c.data, "spec", "metadata")
			for _, tc := range []struct{ name, want string }{
				{"redisDB", "2"},
				{"ttlInSeconds", "36000"},
				{"keyPrefix", "appid"},
			} {
				require.Equal(t, tc.want, mustStr(t, namedItem(t, md, tc.name), "value"), tc.name)
			}
			host := mustStr(t, namedItem(t, md, "redisHost"), "value")
			_, port, err := net.SplitHostPort(host)
			require.NoError(t, err, "redisHost %q", host)
			require.Equal(t, "6379", port)
			if strings.HasPrefix(c.file, "k8s/") {
				require.Equal(t, "redis-master.redis.svc:6379", host)
				pw := namedItem(t, md, "redisPassword")
				require.NotContains(t, pw, "value")
				require.NotEmpty(t, mustStr(t, pw, "secretKeyRef", "name"))
				require.NotEmpty(t, mustStr(t, pw, "secretKeyRef", "key"))
			}
		})
	}
}

func TestDaprResiliency(t *testing.T) {
	res := byKind(loadAll(t), "dapr.io/", "Resiliency")
	require.Len(t, res, 2)
	for _, r := range res {
		t.Run(r.String(), func(t *testing.T) {
			require.Equal(t, "dapr.io/v1alpha1", r.apiVersion())
			require.Contains(t, strList(t, r.data, "scopes"), config.DefaultAppID)
			comps := mustMap(t, r.data, "spec", "targets", "components")
			require.Contains(t, comps, config.DefaultStateStore)
			out := mustMap(t, comps, config.DefaultStateStore, "outbound")
			for _, tc := range []struct{ ref, policies string }{
				{"timeout", "timeouts"},
				{"retry", "retries"},
				{"circuitBreaker", "circuitBreakers"},
			} {
				name := mustStr(t, out, tc.ref)
				require.Contains(t, mustMap(t, r.data, "spec", "policies", tc.policies), name,
					"outbound %s %q is not defined", tc.ref, name)
			}
			// Dapr's retries stay small: the worker retries through JetStream.
			retry := mustMap(t, r.data, "spec", "policies", "retries", mustStr(t, out, "retry"))
			require.LessOrEqual(t, mustInt(t, retry, "maxRetries"), 3)
		})
	}
	t.Run("compose and k8s agree", func(t *testing.T) {
		require.Equal(t, res[0].data["spec"], res[1].data["spec"])
	})
}

func TestWorkerDeployment(t *testing.T) {
	all := loadAll(t)
	d := one(t, all, "apps/", "Deployment", "cartworker")
	pod := mustMap(t, d.data, "spec", "template")
	ann := mustMap(t, pod, "metadata", "annotations")
	port := httpPort(t)

	containers := mustList(t, pod, "spec", "containers")
	require.Len(t, containers, 1, "the Dapr sidecar is injected, not declared")
	c := namedItem(t, containers, "worker")
	env := mustList(t, c, "env")
	envValue := func(t *testing.T, name string) string {
		t.Helper()
		return mustStr(t, namedItem(t, env, name), "value")
	}

	t.Run("dapr annotations", func(t *testing.T) {
		for _, tc := range []struct{ key, want string }{
			{"dapr.io/enabled", "true"},
			{"dapr.io/app-id", config.DefaultAppID},
		} {
			require.Equal(t, tc.want, ann[tc.key], tc.key)
		}
		for _, key := range []string{"dapr.io/enable-api-logging", "dapr.io/sidecar-listen-addresses", "dapr.io/api-token-secret"} {
			require.NotEmpty(t, ann[key], key)
		}
		require.NotContains(t, ann, "dapr.io/app-port", "nothing calls the worker through Dapr")
	})
	t.Run("prometheus annotations", func(t *testing.T) {
		require.Equal(t, "true", ann["prometheus.io/scrape"])
		require.Equal(t, port, asInt(t, ann["prometheus.io/port"]))
		require.Equal(t, config.DefaultMetricsPath, ann["prometheus.io/path"])
	})
	t.Run("container port", func(t *testing.T) {
		p := namedItem(t, mustList(t, c, "ports"), "http")
		require.Equal(t, port, mustInt(t, p, "containerPort"))
	})
	t.Run("probes", func(t *testing.T) {
		for _, tc := range []struct{ probe, path string }{
			{"livenessProbe", "/healthz"},
			{"readinessProbe", "/readyz"},
		} {
			require.Equal(t, tc.path, mustStr(t, c, tc.probe, "httpGet", "path"), tc.probe)
			p := mustDig(t, c, tc.probe, "httpGet", "port")
			if name, ok := p.(string); ok && name == "http" {
				continue
			}
			require.Equal(t, port, asInt(t, p), tc.probe)
		}
	})
	t.Run("env", func(t *testing.T) {
		for _, name := range []string{
			"NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_STREAM_REPLICAS",
			"DAPR_HTTP_ENDPOINT", "DAPR_API_TOKEN", "CART_STATE_STORE", "CART_SUBJECT_PREFIX",
			"WORKER_CONCURRENCY", "WORKER_PARTITIONS", "WORKER_HTTP_ADDR", "WORKER_SHUTDOWN_TIMEOUT", "LOG_LEVEL",
		} {
			namedItem(t, env, name)
		}
		require.Equal(t, "nats://nats.nats.svc:4222", envValue(t, "NATS_URL"))
		require.Equal(t, config.DefaultStateStore, envValue(t, "CART_STATE_STORE"))
		require.Equal(t, command.DefaultPrefix, envValue(t, "CART_SUBJECT_PREFIX"))
		require.Equal(t, config.DefaultHTTPAddr, envValue(t, "WORKER_HTTP_ADDR"))
		require.Equal(t, "http://127.0.0.1:3500", envValue(t, "DAPR_HTTP_ENDPOINT"))
		require.Equal(t, statepool.DefaultGRPCEndpoint, envValue(t, "DAPR_GRPC_ENDPOINT"), "the injected sidecar's gRPC port")
		// The worker sends the token daprd was given.
		tok := namedItem(t, env, "DAPR_API_TOKEN")
		require.Equal(t, ann["dapr.io/api-token-secret"], mustStr(t, tok, "valueFrom", "secretKeyRef", "name"))
		require.Equal(t, "token", mustStr(t, tok, "valueFrom", "secretKeyRef", "key"))
	})
	t.Run("env is the worker's and loads", func(t *testing.T) {
		known := workerEnvNames(t)
		for name := range deploymentEnv(t, all) {
			require.True(t, known[name], "the worker reads no %s (removed or misspelt?)", name)
		}
		cfg := loadWorkerConfig(t, deploymentEnv(t, all))
		// Production runs on a JetStream cluster of 3 with R3 streams.
		require.Equal(t, 3, cfg.Consumer.Replicas, "NATS_STREAM_REPLICAS")
	})
	t.Run("shutdown fits the grace period", func(t *testing.T) {
		drain, err := time.ParseDuration(envValue(t, "WORKER_SHUTDOWN_TIMEOUT"))
		require.NoError(t, err)
		grace := time.Duration(mustInt(t, pod, "spec", "terminationGracePeriodSeconds")) * time.Second
		require.Greater(t, grace, drain)
	})
	t.Run("hardening", func(t *testing.T) {
		require.Equal(t, true, mustDig(t, pod, "spec", "securityContext", "runAsNonRoot"))
		require.Equal(t, true, mustDig(t, c, "securityContext", "readOnlyRootFilesystem"))
		require.Equal(t, false, mustDig(t, c, "securityContext", "allowPrivilegeEscalation"))
		require.NotEmpty(t, mustStr(t, c, "resources", "limits", "memory"))
		require.NotEmpty(t, mustStr(t, c, "resources", "requests", "memory"))
	})
	t.Run("service", func(t *testing.T) {
		svc := one(t, all, "v1", "Service", "cartworker")
		sel := mustMap(t, svc.data, "spec", "selector")
		labels := mustMap(t, pod, "metadata", "labels")
		for k, v := range sel {
			require.Equal(t, v, labels[k], "selector %s", k)
		}
		p := namedItem(t, mustList(t, svc.data, "spec", "ports"), "http")
		require.Equal(t, port, mustInt(t, p, "port"))
	})
}

func TestKEDAScaledObject(t *testing.T) {
	all := loadAll(t)
	cfg := loadWorkerConfig(t, deploymentEnv(t, all))
	so := one(t, all, "keda.sh/", "ScaledObject", "cartworker")
	require.Equal(t, "Deployment", mustStr(t, so.data, "spec", "scaleTargetRef", "kind"))
	require.Equal(t, "cartworker", mustStr(t, so.data, "spec", "scaleTargetRef", "name"))
	require.Equal(t, 1, mustInt(t, so.data, "spec", "minReplicaCount"))
	require.Equal(t, cfg.Consumer.Partitions, mustInt(t, so.data, "spec", "maxReplicaCount"),
		"maxReplicaCount is WORKER_PARTITIONS: one command per partition is in flight, so more replicas sit idle")

	triggers := mustList(t, so.data, "spec", "triggers")
	require.Len(t, triggers, 1)
	tr := triggers[0]
	// nats-jetstream reads a single consumer; the lag is spread over all of
	// the partitions' consumers (see the file's header).
	require.Equal(t, "prometheus", mustStr(t, tr, "type"))
	md := mustMap(t, tr, "metadata")
	t.Run("server", func(t *testing.T) {
		addr := mustStr(t, md, "serverAddress")
		require.Regexp(t, `^https?://[^/\s]+`, addr)
	})
	t.Run("threshold", func(t *testing.T) {
		require.Positive(t, asInt(t, mustStr(t, md, "threshold")))
		require.Equal(t, "false", mustStr(t, md, "ignoreNullValues"),
			"a lost exporter must not read as an empty stream and scale a busy deployment down")
	})
	t.Run("query sums every consumer of the command stream", func(t *testing.T) {
		query := mustStr(t, md, "query")
		sels := promSelectors(t, query)
		var metrics []string
		for _, sel := range sels {
			metrics = append(metrics, sel.metric)
			require.Contains(t, query, "sum("+sel.metric+"{", "%s must be summed over the consumers", sel.metric)
			require.Equal(t, promMatcher{"=", command.StreamCommands}, sel.matchers["stream_name"], "%s: stream_name", sel.metric)
			require.Equal(t, promMatcher{"=", "true"}, sel.matchers["is_consumer_leader"],
				"%s: only the consumer leader's report is current; every replica is exported", sel.metric)
			cm, ok := sel.matchers["consumer_name"]
			require.True(t, ok, "%s: no consumer_name matcher", sel.metric)
			require.Equal(t, "=~", cm.op, "%s: consumer_name", sel.metric)
			// PromQL anchors regular expressions, and uses RE2 as Go does.
			re, err := regexp.Compile("^(?:" + cm.value + ")$")
			require.NoError(t, err)
			names := []string{command.ConsumerName}
			for p := range cfg.Consumer.Partitions {
				names = append(names, command.PartitionConsumer(p))
			}
			for _, name := range names {
				require.True(t, re.MatchString(name), "%s: consumer_name=~%q misses consumer %s", sel.metric, cm.value, name)
			}
			require.False(t, re.MatchString("other-"+command.ConsumerName), "consumer_name=~%q is too broad", cm.value)
		}
		require.ElementsMatch(t, []string{"nats_consumer_num_pending", "nats_consumer_num_ack_pending"}, metrics,
			"pending and unacknowledged commands, as the nats chart's exporter (-prefix=nats -jsz=all) names them")
	})
}

// promSelector is one `metric{label op "value", ...}` of a PromQL query.
type promSelector struct {
	metric   string
	matchers map[string]promMatcher
}

type promMatcher struct{ op, value string }

var (
	promSelectorRE = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
	promMatcherRE  = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$`)
)

// promSelectors parses the vector selectors of a query, enough for the
// simple ones used here (no commas or braces inside label values).
func promSelectors(t *testing.T, query string) []promSelector {
	t.Helper()
	var out []promSelector
	for _, m := range promSelectorRE.FindAllStringSubmatch(query, -1) {
		sel := promSelector{metric: m[1], matchers: map[string]promMatcher{}}
		for _, part := range strings.Split(m[2], ",") {
			if strings.TrimSpace(part) == "" {
				continue // PromQL allows a trailing comma
			}
			mm := promMatcherRE.FindStringSubmatch(part)
			require.NotNil(t, mm, "cannot parse matcher %q of %s", part, m[0])
			_, dup := sel.matchers[mm[1]]
			require.False(t, dup, "%s: label %s matched twice", m[0], mm[1])
			sel.matchers[mm[1]] = promMatcher{op: mm[2], value: mm[3]}
		}
		out = append(out, sel)
	}
	require.NotEmpty(t, out, "no selector in query %q", query)
	return out
}

func TestNACKJetStream(t *testing.T) {
	all := loadAll(t)
	cfg := loadWorkerConfig(t, deploymentEnv(t, all))
	streams := map[string]map[string]any{}
	for _, s := range byKind(all, "jetstream.nats.io/", "Stream") {
		require.Equal(t, "jetstream.nats.io/v1beta2", s.apiVersion(), s.String())
		streams[mustStr(t, s.data, "spec", "name")] = mustMap(t, s.data, "spec")
	}
	require.Len(t, streams, 2)
	subjects := command.Subjects{}
	for _, tc := range []struct {
		stream, subject, maxAge string
		partitioned             bool
	}{
		{command.StreamCommands, subjects.Commands(), "24h", true},
		{command.StreamDeadLetters, subjects.DeadLetters(), "336h", false},
	} {
		t.Run(tc.stream, func(t *testing.T) {
			s, ok := streams[tc.stream]
			require.True(t, ok, "no NACK Stream %s", tc.stream)
			require.Equal(t, []string{tc.subject}, strList(t, s, "subjects"))
			require.Equal(t, "file", mustStr(t, s, "storage"))
			require.Equal(t, "limits", mustStr(t, s, "retention"))
			require.Equal(t, "2m", mustStr(t, s, "duplicateWindow"))
			require.Equal(t, tc.maxAge, mustStr(t, s, "maxAge"))
			require.Equal(t, cfg.Consumer.Replicas, mustInt(t, s, "replicas"),
				"replicas must match NATS_STREAM_REPLICAS of the Deployment")
			if !tc.partitioned {
				require.NotContains(t, s, "subjectTransform")
				return
			}
			// The worker refuses a stream partitioned otherwise, and adds its
			// transform to one without, which NACK would then remove again.
			src, dst := subjects.PartitionTransform(cfg.Consumer.Partitions)
			require.Equal(t, src, mustStr(t, s, "subjectTransform", "source"))
			require.Equal(t, dst, mustStr(t, s, "subjectTransform", "dest"),
				"the transform's partition count must be WORKER_PARTITIONS of the Deployment")
			require.Len(t, mustMap(t, s, "subjectTransform"), 2, "subjectTransform has only source and dest")
		})
	}
	t.Run("no consumers", func(t *testing.T) {
		// The worker creates and owns its 1 + WORKER_PARTITIONS consumers
		// with MaxAckPending 1; a NACK Consumer would be a second owner
		// reconciling them to its own spec.
		for _, c := range byKind(all, "jetstream.nats.io/", "Consumer") {
			require.Failf(t, "NACK Consumer", "%s declares consumer %v: the worker owns its consumers", c, c.data["spec"])
		}
	})
}

// deploymentEnv returns the worker container's env in the cartworker
// Deployment: literal values by name, "" for values read from a secret.
func deploymentEnv(t *testing.T, all []manifest) map[string]string {
	t.Helper()
	d := one(t, all, "apps/", "Deployment", "cartworker")
	c := namedItem(t, mustList(t, d.data, "spec", "template", "spec", "containers"), "worker")
	out := map[string]string{}
	for i, e := range mustList(t, c, "env") {
		m, ok := e.(map[string]any)
		require.True(t, ok, "env[%d] is not a mapping", i)
		name := mustStr(t, m, "name")
		require.NotContains(t, out, name, "env %s set twice", name)
		v, _ := m["value"].(string)
		out[name] = v
	}
	return out
}

// workerEnvNames lists every environment variable the worker reads, from
// its own usage text.
func workerEnvNames(t *testing.T) map[string]bool {
	t.Helper()
	var usage strings.Builder
	_, err := config.Load([]string{"-h"}, func(string) string { return "" }, &usage)
	require.ErrorIs(t, err, flag.ErrHelp)
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`\(env ([A-Z0-9_]+)\)`).FindAllStringSubmatch(usage.String(), -1) {
		out[m[1]] = true
	}
	require.Contains(t, out, "WORKER_PARTITIONS", "usage text changed shape")
	return out
}

// loadWorkerConfig loads the worker's configuration from env as the worker
// would; ${VAR} placeholders and secret references read as unset.
func loadWorkerConfig(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	cfg, err := config.Load(nil, func(k string) string {
		if v := env[k]; !placeholder(v) {
			return v
		}
		return ""
	}, io.Discard)
	require.NoError(t, err, "the worker would not start with this env")
	return cfg
}

// composeRequiredVar is ${VAR:?message}: a variable with no default in the
// compose file, which must come from the environment or images.env (through .env).
var composeRequiredVar = regexp.MustCompile(`^\$\{([A-Z_][A-Z0-9_]*):\?[^}]+\}$`)

// composeEnv normalizes the map and the list ("K=V") forms.
func composeEnv(t *testing.T, svc map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	switch env := svc["environment"].(type) {
	case nil:
	case map[string]any:
		for k, v := range env {
			if v == nil {
				out[k] = ""
			} else {
				out[k] = fmt.Sprint(v)
			}
		}
	case []any:
		for _, e := range env {
			k, v, _ := strings.Cut(fmt.Sprint(e), "=")
			out[k] = v
		}
	default:
		require.Failf(t, "bad environment", "%T", env)
	}
	return out
}

// containerPorts returns the container side of every published port.
func containerPorts(t *testing.T, svc map[string]any) []int {
	t.Helper()
	var out []int
	ports, _ := svc["ports"].([]any)
	for _, p := range ports {
		switch p := p.(type) {
		case map[string]any: // long syntax
			out = append(out, asInt(t, p["target"]))
		default: // [ip:][host:]container[/proto]
			s := fmt.Sprint(p)
			s, _, _ = strings.Cut(s, "/")
			out = append(out, asInt(t, s[strings.LastIndex(s, ":")+1:]))
		}
	}
	return out
}

func TestCompose(t *testing.T) {
	var composes []manifest
	for _, m := range loadAll(t) {
		if isComposeFile(m.file) {
			composes = append(composes, m)
		}
	}
	require.Len(t, composes, 1)
	compose := composes[0]
	services := mustMap(t, compose.data, "services")
	require.ElementsMatch(t, []string{"nats", "redis", "daprd", "worker"}, slices.Collect(maps.Keys(services)))
	svc := func(t *testing.T, name string) map[string]any {
		t.Helper()
		return mustMap(t, services, name)
	}

	t.Run("image variables", func(t *testing.T) {
		// The defaults are written once, in images.env (compose reads it
		// through the .env link), not in the compose file.
		defaults, err := deployments.Images()
		require.NoError(t, err)
		want := map[string]string{"nats": "NATS_IMAGE", "redis": "REDIS_IMAGE", "daprd": "DAPRD_IMAGE", "worker": "WORKER_IMAGE"}
		got := map[string]string{}
		for name := range services {
			img := mustStr(t, services, name, "image")
			m := composeRequiredVar.FindStringSubmatch(img)
			require.NotNil(t, m, "service %s: image %q is not ${VAR:?message}; its default belongs in images.env", name, img)
			got[name] = m[1]
		}
		require.Equal(t, want, got)
		require.ElementsMatch(t, slices.Collect(maps.Values(want)), slices.Collect(maps.Keys(defaults)),
			"images.env sets exactly the compose file's image variables")
	})
	t.Run("worker publishes the HTTP port", func(t *testing.T) {
		require.Contains(t, containerPorts(t, svc(t, "worker")), httpPort(t))
	})
	t.Run("worker env", func(t *testing.T) {
		env := composeEnv(t, svc(t, "worker"))
		if v, ok := env["CART_STATE_STORE"]; ok {
			require.Equal(t, config.DefaultStateStore, v)
		}
		if v, ok := env["WORKER_HTTP_ADDR"]; ok {
			require.Equal(t, config.DefaultHTTPAddr, v)
		}
		if v, ok := env["CART_SUBJECT_PREFIX"]; ok {
			require.Equal(t, command.DefaultPrefix, v)
		}
		require.Equal(t, "nats://nats:4222", env["NATS_URL"])
		require.Equal(t, "http://daprd:3500", env["DAPR_HTTP_ENDPOINT"])
		require.Equal(t, "http://daprd:50001", env["DAPR_GRPC_ENDPOINT"], "daprd's --dapr-grpc-port on the compose network")
		known := workerEnvNames(t)
		for name := range env {
			require.True(t, known[name], "the worker reads no %s (removed or misspelt?)", name)
		}
		// One nats server: streams can only be R1.
		require.Equal(t, 1, loadWorkerConfig(t, env).Consumer.Replicas, "NATS_STREAM_REPLICAS")
	})
	t.Run("worker drains before SIGKILL", func(t *testing.T) {
		w := svc(t, "worker")
		drain := 20 * time.Second
		if v, ok := composeEnv(t, w)["WORKER_SHUTDOWN_TIMEOUT"]; ok {
			var err error
			drain, err = time.ParseDuration(v)
			require.NoError(t, err)
		}
		grace, err := time.ParseDuration(mustStr(t, w, "stop_grace_period"))
		require.NoError(t, err)
		require.Greater(t, grace, drain)
	})
	t.Run("daprd", func(t *testing.T) {
		d := svc(t, "daprd")
		args := strList(t, d, "command")
		flag := func(name string) string {
			i := slices.Index(args, name)
			require.True(t, i >= 0 && i+1 < len(args), "daprd command lacks %s", name)
			return args[i+1]
		}
		require.Equal(t, config.DefaultAppID, flag("--app-id"))
		require.Equal(t, "3500", flag("--dapr-http-port"))
		require.Equal(t, strconv.Itoa(statepool.DefaultGRPCPort), flag("--dapr-grpc-port"))
		// The resources path is the mounted components directory.
		resources := flag("--resources-path")
		var mounted bool
		for _, v := range strList(t, d, "volumes") {
			parts := strings.Split(v, ":")
			require.GreaterOrEqual(t, len(parts), 2, "volume %q", v)
			if parts[1] != resources {
				continue
			}
			mounted = true
			src := filepath.Join(filepath.Dir(compose.file), filepath.FromSlash(parts[0]))
			require.FileExists(t, filepath.Join(src, config.DefaultStateStore+".yaml"))
			require.FileExists(t, filepath.Join(src, "resiliency.yaml"))
		}
		require.True(t, mounted, "nothing mounted at %s", resources)
	})
}

// Secret literals.

var secretName = regexp.MustCompile(`(?i)(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_?KEY)`)

// secretRefKeys name a secret object rather than hold a secret.
var secretRefKeys = map[string]bool{
	"dapr.io/api-token-secret": true,
	"dapr.io/app-token-secret": true,
	"secretStore":              true,
}

// placeholder reports whether a value is empty or a ${VAR} reference.
func placeholder(v string) bool {
	v = strings.TrimSpace(v)
	return v == "" || (strings.HasPrefix(v, "${") && strings.HasSuffix(v, "}"))
}

// secretLiterals lists the places of a document that hold a secret in
// clear: a scalar under a secret-like key, the value of a {name, value}
// pair (Kubernetes env, Dapr metadata) with a secret-like name, and a
// "KEY=value" string with a secret-like KEY (Compose env lists).
func secretLiterals(n *yaml.Node) []string {
	var found []string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		case yaml.ScalarNode:
			if k, v, ok := strings.Cut(n.Value, "="); ok && !strings.ContainsAny(k, " \t") &&
				secretName.MatchString(k) && !placeholder(v) {
				found = append(found, fmt.Sprintf("%s (line %d): %s=…", path, n.Line, k))
			}
		case yaml.MappingNode:
			var name, value *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				switch k.Value {
				case "name":
					name = v
				case "value":
					value = v
				}
				p := path + "." + k.Value
				if v.Kind == yaml.ScalarNode && secretName.MatchString(k.Value) &&
					!secretRefKeys[k.Value] && !placeholder(v.Value) {
					found = append(found, fmt.Sprintf("%s (line %d)", p, v.Line))
					continue
				}
				walk(v, p)
			}
			if name != nil && value != nil && name.Kind == yaml.ScalarNode && value.Kind == yaml.ScalarNode &&
				secretName.MatchString(name.Value) && !placeholder(value.Value) {
				found = append(found, fmt.Sprintf("%s{name: %s} (line %d)", path, name.Value, value.Line))
			}
		}
	}
	walk(n, "")
	return found
}

func TestSecretLiteralDetector(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		bad       bool
	}{
		{"k8s env literal", "env:\n- name: NATS_PASSWORD\n  value: hunter2\n", true},
		{"k8s env secretKeyRef", "env:\n- name: NATS_PASSWORD\n  valueFrom:\n    secretKeyRef: {name: s, key: k}\n", false},
		{"k8s env empty", "env:\n- name: NATS_TOKEN\n  value: \"\"\n", false},
		{"dapr metadata literal", "metadata:\n- name: redisPassword\n  value: hunter2\n", true},
		{"dapr metadata secretKeyRef", "metadata:\n- name: redisPassword\n  secretKeyRef: {name: redis, key: redis-password}\n", false},
		{"compose map literal", "environment:\n  DAPR_API_TOKEN: abc123\n", true},
		{"compose map reference", "environment:\n  DAPR_API_TOKEN: ${DAPR_API_TOKEN:-}\n", false},
		{"compose list literal", "environment:\n- NATS_PASSWORD=hunter2\n", true},
		{"compose list reference", "environment:\n- NATS_PASSWORD=${NATS_PASSWORD}\n", false},
		{"secret name annotation", "annotations:\n  dapr.io/api-token-secret: cartworker-dapr-api-token\n", false},
		{"unrelated", "env:\n- name: LOG_LEVEL\n  value: info\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n yaml.Node
			require.NoError(t, yaml.Unmarshal([]byte(tc.doc), &n))
			got := secretLiterals(&n)
			if tc.bad {
				require.NotEmpty(t, got)
			} else {
				require.Empty(t, got)
			}
		})
	}
}

func TestNoSecretLiterals(t *testing.T) {
	for _, file := range yamlFiles(t) {
		t.Run(file, func(t *testing.T) {
			docs, err := parseFile(file)
			require.NoError(t, err)
			for _, m := range docs {
				require.Empty(t, secretLiterals(m.node), "%s holds a secret in clear; use a secretKeyRef or ${VAR}", m)
			}
		})
	}
}

// TestImageDefaultsWrittenOnce keeps the default image names out of the
// files that used to repeat them: they read images.env instead.
func TestImageDefaultsWrittenOnce(t *testing.T) {
	defaults, err := deployments.Images()
	require.NoError(t, err)
	files := []string{"compose.yaml", "../Makefile"}
	for _, pattern := range []string{"../scripts/*.sh", "../integration/*.go"} {
		m, err := filepath.Glob(pattern)
		require.NoError(t, err)
		require.NotEmpty(t, m, pattern)
		files = append(files, m...)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for name, image := range defaults {
			if strings.Contains(string(b), image) {
				t.Errorf("%s repeats %s's default %s; read deployments/images.env instead", f, name, image)
			}
		}
	}
}
