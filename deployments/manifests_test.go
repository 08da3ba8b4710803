package deployments_test

import (
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
	"github.com/cartworker/cartworker/internal/natsconn/natstest"
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

// yamlFiles lists every *.yaml and *.yml under deployments/ that is YAML
// as it stands: the Helm chart's templates are not, and the chart is
// checked through helm template instead (render_test.go).
func yamlFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && strings.HasPrefix(d.Name(), ".") || path == "helm" {
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
	return parseStream(file, f)
}

// isKustomization reports whether a file is a kustomization (its name is
// fixed by kustomize).
func isKustomization(file string) bool {
	return filepath.Base(file) == "kustomization.yaml"
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
	// Read by the Go runtime in the worker (e.g. GOMEMLIMIT from the
	// container's memory limit).
	for _, name := range []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG"} {
		out[name] = true
	}
	return out
}

// natsFileVars are the worker's variables naming a file it reads at start:
// on Kubernetes, a key of a Secret mounted in the pod.
var natsFileVars = []string{"NATS_CREDS", "NATS_NKEY_SEED", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY"}

// natsFileStandIns are files of the kind each of natsFileVars names, for
// loading a configuration whose paths exist only in a pod: the worker
// reads and checks the seed and the certificates when it loads them. A
// .creds file is read only on connecting, so its path stays.
func natsFileStandIns(t *testing.T) map[string]string {
	t.Helper()
	pki := natstest.NewPKI(t, "deployments")
	return map[string]string{
		"NATS_NKEY_SEED": natstest.NewNkey(t).SeedFile,
		"NATS_TLS_CA":    pki.CA,
		"NATS_TLS_CERT":  pki.ClientCert,
		"NATS_TLS_KEY":   pki.ClientKey,
	}
}

// loadWorkerConfig loads the worker's configuration from env as the worker
// would; ${VAR} placeholders and secret references read as unset, and the
// files of natsFileVars are stand-ins (natsFileStandIns).
func loadWorkerConfig(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	cfg, err := tryLoadWorkerConfig(t, env)
	require.NoError(t, err, "the worker would not start with this env")
	return cfg
}

// tryLoadWorkerConfig is loadWorkerConfig returning the worker's error.
func tryLoadWorkerConfig(t *testing.T, env map[string]string) (config.Config, error) {
	t.Helper()
	var standIns map[string]string
	for _, name := range natsFileVars {
		if !placeholder(env[name]) && standIns == nil {
			standIns = natsFileStandIns(t)
		}
	}
	return config.Load(nil, func(k string) string {
		v := env[k]
		if placeholder(v) {
			return ""
		}
		if f, ok := standIns[k]; ok {
			return f
		}
		return v
	}, io.Discard)
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
	"secretName":               true, // Kubernetes secret volumes, the chart's secretEnv
	"existingSecret":           true, // Helm values
	"apiTokenSecret":           true, // Helm values: dapr.apiTokenSecret
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
				// A null removes a chart default (secretEnv.NATS_PASSWORD: null).
				if v.Kind == yaml.ScalarNode && v.Tag != "!!null" && secretName.MatchString(k.Value) &&
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
		{"helm value removed", "secretEnv:\n  NATS_PASSWORD: null\n", false},
		{"helm value literal", "secretEnv:\n  NATS_PASSWORD: hunter2\n", true},
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
	check := func(t *testing.T, docs []manifest) {
		t.Helper()
		for _, m := range docs {
			require.Empty(t, secretLiterals(m.node), "%s holds a secret in clear; use a secretKeyRef or ${VAR}", m)
		}
	}
	files := append(yamlFiles(t), chartDir+"/values.yaml", chartFullValues)
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			docs, err := parseFile(file)
			require.NoError(t, err)
			check(t, docs)
		})
	}
	forEachKube(t, func(t *testing.T, r rendering) { check(t, r.docs) })
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
