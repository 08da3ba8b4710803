package deployments_test

import (
	"fmt"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/config"
)

// Checks of every Kubernetes rendering (kustomize builds and helm
// templates) against the code's names, and of the files they come from.

func TestEveryManifestParses(t *testing.T) {
	for _, file := range yamlFiles(t) {
		t.Run(file, func(t *testing.T) {
			docs, err := parseFile(file)
			require.NoError(t, err)
			require.NotEmpty(t, docs, "no document")
			for _, m := range docs {
				switch {
				case isComposeFile(file):
					_, ok := m.data["services"].(map[string]any)
					require.True(t, ok, "%s: compose file without services", m)
				case isKustomization(file):
					require.True(t, strings.HasPrefix(m.apiVersion(), "kustomize.config.k8s.io/"), "%s: apiVersion", m)
					require.Contains(t, []string{"Kustomization", "Component"}, m.kind(), "%s: kind", m)
				default:
					require.NotEmpty(t, m.apiVersion(), "%s: apiVersion", m)
					require.NotEmpty(t, m.kind(), "%s: kind", m)
					require.NotEmpty(t, m.name(), "%s: metadata.name", m)
				}
			}
		})
	}
}

// TestKustomizationsListEveryManifest: a manifest under k8s/ that no
// kustomization lists would never be applied.
func TestKustomizationsListEveryManifest(t *testing.T) {
	listed := map[string]bool{}
	var manifests []string
	for _, file := range yamlFiles(t) {
		if !strings.HasPrefix(file, "k8s/") {
			continue
		}
		if !isKustomization(file) {
			manifests = append(manifests, file)
			continue
		}
		docs, err := parseFile(file)
		require.NoError(t, err)
		require.Len(t, docs, 1, file)
		res, _ := docs[0].data["resources"].([]any)
		for _, r := range res {
			p := path.Join(path.Dir(file), r.(string))
			if _, err := os.Stat(p); err == nil && !strings.HasSuffix(p, ".yaml") {
				continue // a directory: another kustomization
			}
			require.FileExists(t, p, "%s lists a missing file", file)
			listed[p] = true
		}
	}
	for _, m := range manifests {
		require.True(t, listed[m], "no kustomization lists %s", m)
	}
}

// TestCoreNeedsNoAddOn: the core kustomization and the chart's defaults
// apply on any cluster with Dapr, with no other add-on's CRDs.
func TestCoreNeedsNoAddOn(t *testing.T) {
	allowed := []string{"v1", "apps/v1", "policy/v1", "dapr.io/v1alpha1"}
	for _, r := range []rendering{kustomizeBuild(t, kustomizeCore), mustHelmTemplate(t)} {
		t.Run(r.name, func(t *testing.T) {
			for _, m := range r.docs {
				require.Contains(t, allowed, m.apiVersion(), "%s %s needs an add-on: move it to a component / behind a value", m.kind(), m.name())
			}
			for _, kind := range []string{"Deployment", "Service", "PodDisruptionBudget", "Component", "Resiliency"} {
				require.True(t, slices.ContainsFunc(r.docs, func(m manifest) bool { return m.kind() == kind }), "no %s", kind)
			}
		})
	}
}

// workload is the cartworker Deployment of a rendering and what the
// checks read from it.
type workload struct {
	docs      []manifest
	d         manifest
	pod       map[string]any // spec.template
	ann       map[string]any
	container map[string]any
	env       []any
	port      int // WORKER_HTTP_ADDR's port
}

func newWorkload(t *testing.T, docs []manifest) workload {
	t.Helper()
	w := workload{docs: docs, d: one(t, docs, "apps/", "Deployment", "cartworker")}
	w.pod = mustMap(t, w.d.data, "spec", "template")
	w.ann = mustMap(t, w.pod, "metadata", "annotations")
	containers := mustList(t, w.pod, "spec", "containers")
	require.Len(t, containers, 1, "the Dapr sidecar is injected, not declared")
	w.container = namedItem(t, containers, "worker")
	w.env = mustList(t, w.container, "env")
	_, p, err := net.SplitHostPort(w.envValue(t, "WORKER_HTTP_ADDR"))
	require.NoError(t, err)
	w.port, err = strconv.Atoi(p)
	require.NoError(t, err)
	return w
}

func (w workload) envValue(t *testing.T, name string) string {
	t.Helper()
	return mustStr(t, namedItem(t, w.env, name), "value")
}

// secretRef returns the Secret name and key an env var is read from.
func (w workload) secretRef(t *testing.T, name string) (secret, key string) {
	t.Helper()
	e := namedItem(t, w.env, name)
	require.NotContains(t, e, "value", "%s must come from a Secret", name)
	return mustStr(t, e, "valueFrom", "secretKeyRef", "name"), mustStr(t, e, "valueFrom", "secretKeyRef", "key")
}

// envWithSecrets is the container's env as the worker reads it once every
// Secret it names exists: a literal value, or for a secret reference a
// stand-in naming it (an optional Secret is taken as present, which is
// when two of them could clash).
func (w workload) envWithSecrets(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range w.env {
		name := mustStr(t, e, "name")
		if ref, ok := dig(e, "valueFrom", "secretKeyRef"); ok {
			out[name] = fmt.Sprintf("from-secret-%v-%v", mustStr(t, ref, "name"), mustStr(t, ref, "key"))
			continue
		}
		v, _ := e.(map[string]any)["value"].(string)
		out[name] = v
	}
	return out
}

// mountedFile returns the Secret and key a file of the worker container is
// read from: it must be on a read-only mount of a secret volume, and be
// one of the volume's items, or of its keys when it has no items.
func (w workload) mountedFile(t *testing.T, file string) (secret, key string) {
	t.Helper()
	require.True(t, path.IsAbs(file), "%s: not an absolute path", file)
	volumes := mustList(t, w.pod, "spec", "volumes")
	for _, m := range mustList(t, w.container, "volumeMounts") {
		rel, ok := strings.CutPrefix(file, mustStr(t, m, "mountPath")+"/")
		if !ok {
			continue
		}
		require.Equal(t, true, mustDig(t, m, "readOnly"), "%s: mount %s is not read-only", file, mustStr(t, m, "mountPath"))
		require.NotContains(t, m, "subPath")
		vol := namedItem(t, volumes, mustStr(t, m, "name"))
		secret = mustStr(t, vol, "secret", "secretName")
		items, ok := dig(vol, "secret", "items")
		if !ok {
			require.NotContains(t, rel, "/", "%s: a Secret's keys are the mount's files", file)
			return secret, rel
		}
		for _, it := range items.([]any) {
			if mustStr(t, it, "path") == rel {
				return secret, mustStr(t, it, "key")
			}
		}
		require.Failf(t, "file not in the Secret's items", "%s: volume %s maps no key to %s", file, mustStr(t, m, "name"), rel)
	}
	require.Failf(t, "file not mounted", "%s is on no volume of the worker container", file)
	return "", ""
}

// natsFiles maps each of natsFileVars the container sets to the
// "secret/key" its file is read from.
func (w workload) natsFiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	env := w.envWithSecrets(t)
	for _, name := range natsFileVars {
		if env[name] == "" {
			continue
		}
		secret, key := w.mountedFile(t, env[name])
		out[name] = secret + "/" + key
	}
	return out
}

// stateStore returns the rendering's one Dapr state store component.
func stateStore(t *testing.T, docs []manifest) manifest {
	t.Helper()
	var found []manifest
	for _, c := range byKind(docs, "dapr.io/", "Component") {
		if typ, _ := dig(c.data, "spec", "type"); strings.HasPrefix(typ.(string), "state.") {
			found = append(found, c)
		}
	}
	require.Len(t, found, 1, "want exactly one Dapr state store")
	return found[0]
}

// workerUser is the numeric USER of the worker image.
func workerUser(t *testing.T) (uid, gid int) {
	t.Helper()
	b, err := os.ReadFile("images/worker/Dockerfile")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^USER\s+([0-9]+):([0-9]+)\s*$`).FindAllStringSubmatch(string(b), -1)
	require.Len(t, m, 1, "the worker image needs one numeric USER uid:gid, which runAsNonRoot can check without /etc/passwd")
	uid, _ = strconv.Atoi(m[0][1])
	gid, _ = strconv.Atoi(m[0][2])
	return uid, gid
}

func TestWorkerImageRunsAsNonRoot(t *testing.T) {
	uid, gid := workerUser(t)
	require.NotZero(t, uid, "uid 0 is root")
	require.NotZero(t, gid)
	b, err := os.ReadFile("images/worker/Dockerfile")
	require.NoError(t, err)
	var instructions []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			instructions = append(instructions, strings.ToUpper(f[0]))
		}
	}
	user := slices.Index(instructions, "USER")
	require.Less(t, user, slices.Index(instructions, "ENTRYPOINT"), "USER comes before the ENTRYPOINT it applies to")
}

func TestDaprStateStoreComponents(t *testing.T) {
	check := func(t *testing.T, c manifest, appID string, kube bool) {
		t.Helper()
		require.Equal(t, "dapr.io/v1alpha1", c.apiVersion())
		require.Equal(t, config.DefaultStateStore, c.name())
		require.Equal(t, "state.redis", mustStr(t, c.data, "spec", "type"))
		require.Equal(t, "v1", mustStr(t, c.data, "spec", "version"))
		require.Contains(t, strList(t, c.data, "scopes"), appID)

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
		if kube {
			require.Equal(t, "redis-master.redis.svc:6379", host)
			pw := namedItem(t, md, "redisPassword")
			require.NotContains(t, pw, "value")
			require.NotEmpty(t, mustStr(t, pw, "secretKeyRef", "name"))
			require.NotEmpty(t, mustStr(t, pw, "secretKeyRef", "key"))
			require.Equal(t, "kubernetes", mustStr(t, c.data, "auth", "secretStore"))
		}
	}
	t.Run("compose", func(t *testing.T) {
		var compose []manifest
		for _, m := range loadAll(t) {
			if strings.HasPrefix(m.file, "dapr/") {
				compose = append(compose, m)
			}
		}
		check(t, stateStore(t, compose), config.DefaultAppID, false)
	})
	forEachKube(t, func(t *testing.T, r rendering) {
		w := newWorkload(t, r.docs)
		c := stateStore(t, r.docs)
		check(t, c, mustStr(t, w.ann, "dapr.io/app-id"), true)
		require.Equal(t, c.name(), w.envValue(t, "CART_STATE_STORE"))
	})
}

func TestDaprResiliency(t *testing.T) {
	var res []manifest
	for _, m := range byKind(loadAll(t), "dapr.io/", "Resiliency") {
		if strings.HasPrefix(m.file, "dapr/") {
			res = append(res, m)
		}
	}
	require.Len(t, res, 1, "the Compose stack's Resiliency")
	compose := res[0]
	check := func(t *testing.T, r manifest, appID string) {
		t.Helper()
		require.Equal(t, "dapr.io/v1alpha1", r.apiVersion())
		require.Contains(t, strList(t, r.data, "scopes"), appID)
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
	}
	check(t, compose, config.DefaultAppID)
	forEachKube(t, func(t *testing.T, r rendering) {
		w := newWorkload(t, r.docs)
		res := byKind(r.docs, "dapr.io/", "Resiliency")
		require.Len(t, res, 1)
		check(t, res[0], mustStr(t, w.ann, "dapr.io/app-id"))
		require.Equal(t, compose.data["spec"], res[0].data["spec"], "compose and Kubernetes agree")
	})
}

func TestWorkerDeployment(t *testing.T) {
	uid, gid := workerUser(t)
	forEachKube(t, func(t *testing.T, r rendering) {
		w := newWorkload(t, r.docs)
		c, ann, pod := w.container, w.ann, w.pod

		t.Run("dapr annotations", func(t *testing.T) {
			for _, tc := range []struct{ key, want string }{
				{"dapr.io/enabled", "true"},
				{"dapr.io/app-id", config.DefaultAppID},
				{"dapr.io/sidecar-listen-addresses", "127.0.0.1"},
			} {
				require.Equal(t, tc.want, ann[tc.key], tc.key)
			}
			for _, key := range []string{"dapr.io/enable-api-logging", "dapr.io/api-token-secret", "dapr.io/grpc-port"} {
				require.NotEmpty(t, ann[key], key)
			}
			require.NotContains(t, ann, "dapr.io/app-port", "nothing calls the worker through Dapr")
			if cfg, ok := ann["dapr.io/config"]; ok {
				// A Configuration the rendering creates, or one named on purpose.
				for _, m := range byKind(r.docs, "dapr.io/", "Configuration") {
					require.Equal(t, cfg, m.name(), "the sidecar must use the Configuration rendered with it")
				}
			} else {
				require.Empty(t, byKind(r.docs, "dapr.io/", "Configuration"), "a Configuration no sidecar uses")
			}
		})
		t.Run("prometheus annotations", func(t *testing.T) {
			require.Equal(t, "true", ann["prometheus.io/scrape"])
			require.Equal(t, w.port, asInt(t, ann["prometheus.io/port"]))
			require.Equal(t, config.DefaultMetricsPath, ann["prometheus.io/path"])
		})
		t.Run("container port", func(t *testing.T) {
			p := namedItem(t, mustList(t, c, "ports"), "http")
			require.Equal(t, w.port, mustInt(t, p, "containerPort"), "the port of WORKER_HTTP_ADDR")
		})
		t.Run("probes", func(t *testing.T) {
			for _, tc := range []struct{ probe, path string }{
				{"startupProbe", "/healthz"},
				{"livenessProbe", "/healthz"},
				{"readinessProbe", "/readyz"},
			} {
				require.Equal(t, tc.path, mustStr(t, c, tc.probe, "httpGet", "path"), tc.probe)
				p := mustDig(t, c, tc.probe, "httpGet", "port")
				if name, ok := p.(string); ok && name == "http" {
					continue
				}
				require.Equal(t, w.port, asInt(t, p), tc.probe)
			}
		})
		t.Run("env", func(t *testing.T) {
			for _, name := range []string{
				"NATS_URL", "NATS_STREAM_REPLICAS",
				"DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT", "DAPR_API_TOKEN", "CART_STATE_STORE", "CART_SUBJECT_PREFIX",
				"WORKER_STATE_PROTOCOL", "WORKER_CONCURRENCY", "WORKER_PARTITIONS", "WORKER_HTTP_ADDR",
				"WORKER_SHUTDOWN_TIMEOUT", "LOG_LEVEL",
			} {
				namedItem(t, w.env, name)
			}
			require.True(t, strings.HasPrefix(w.envValue(t, "NATS_URL"), "nats://"))
			require.Equal(t, command.DefaultPrefix, w.envValue(t, "CART_SUBJECT_PREFIX"))
			require.Equal(t, "http://127.0.0.1:3500", w.envValue(t, "DAPR_HTTP_ENDPOINT"), "the injected sidecar's HTTP port")
			require.Equal(t, "127.0.0.1:"+mustStr(t, ann, "dapr.io/grpc-port"), w.envValue(t, "DAPR_GRPC_ENDPOINT"),
				"the injected sidecar's gRPC port (dapr.io/grpc-port)")
			// The worker sends the token daprd was given.
			secret, key := w.secretRef(t, "DAPR_API_TOKEN")
			require.Equal(t, ann["dapr.io/api-token-secret"], secret)
			require.Equal(t, "token", key, "Dapr reads the API token from key \"token\"")
			for _, name := range []string{"NATS_PASSWORD", "NATS_TOKEN"} {
				if slices.ContainsFunc(w.env, func(e any) bool { return mustStr(t, e, "name") == name }) {
					w.secretRef(t, name)
				}
			}
		})
		t.Run("env is the worker's and loads", func(t *testing.T) {
			known := workerEnvNames(t)
			env := deploymentEnv(t, r.docs)
			for name := range env {
				require.True(t, known[name], "the worker reads no %s (removed or misspelt?)", name)
			}
			cfg := loadWorkerConfig(t, env)
			// Production runs on a JetStream cluster of 3 with R3 streams.
			require.Equal(t, 3, cfg.Consumer.Replicas, "NATS_STREAM_REPLICAS")
		})
		t.Run("env loads with every Secret present", func(t *testing.T) {
			// An optional Secret may exist: the worker refuses two ways to
			// authenticate, and says which.
			loadWorkerConfig(t, w.envWithSecrets(t))
		})
		t.Run("NATS files are mounted", func(t *testing.T) {
			files := w.natsFiles(t)
			if r.name == "kustomize "+kustomizeCore || r.name == "helm template" {
				require.Empty(t, files, "the core reads no NATS file")
			}
		})
		t.Run("shutdown fits the grace period", func(t *testing.T) {
			drain, err := time.ParseDuration(w.envValue(t, "WORKER_SHUTDOWN_TIMEOUT"))
			require.NoError(t, err)
			grace := time.Duration(mustInt(t, pod, "spec", "terminationGracePeriodSeconds")) * time.Second
			require.Greater(t, grace, drain)
		})
		t.Run("hardening", func(t *testing.T) {
			require.Equal(t, true, mustDig(t, pod, "spec", "securityContext", "runAsNonRoot"))
			require.Equal(t, uid, mustInt(t, pod, "spec", "securityContext", "runAsUser"), "the image's USER")
			require.Equal(t, gid, mustInt(t, pod, "spec", "securityContext", "runAsGroup"), "the image's USER")
			require.Equal(t, "RuntimeDefault", mustStr(t, pod, "spec", "securityContext", "seccompProfile", "type"))
			require.Equal(t, true, mustDig(t, c, "securityContext", "readOnlyRootFilesystem"))
			require.Equal(t, false, mustDig(t, c, "securityContext", "allowPrivilegeEscalation"))
			require.Equal(t, []string{"ALL"}, strList(t, c, "securityContext", "capabilities", "drop"))
			require.NotEmpty(t, mustStr(t, c, "resources", "limits", "memory"))
			require.NotEmpty(t, mustStr(t, c, "resources", "requests", "memory"))
			// A read-only root: the worker's scratch space is /tmp.
			tmp := false
			for _, m := range mustList(t, c, "volumeMounts") {
				tmp = tmp || mustStr(t, m, "mountPath") == "/tmp"
			}
			require.True(t, tmp, "/tmp is mounted")
		})
		t.Run("service", func(t *testing.T) {
			svc := one(t, r.docs, "v1", "Service", "cartworker")
			labels := mustMap(t, pod, "metadata", "labels")
			for k, v := range mustMap(t, svc.data, "spec", "selector") {
				require.Equal(t, v, labels[k], "selector %s", k)
			}
			p := namedItem(t, mustList(t, svc.data, "spec", "ports"), "http")
			require.Equal(t, "http", mustStr(t, p, "targetPort"), "the container's named port")
		})
		t.Run("disruption budget", func(t *testing.T) {
			pdb := one(t, r.docs, "policy/", "PodDisruptionBudget", "cartworker")
			labels := mustMap(t, pod, "metadata", "labels")
			for k, v := range mustMap(t, pdb.data, "spec", "selector", "matchLabels") {
				require.Equal(t, v, labels[k], "selector %s", k)
			}
			require.NotContains(t, mustMap(t, pdb.data, "spec"), "minAvailable", "minAvailable would block drains of a single replica")
			require.Equal(t, 1, mustInt(t, pdb.data, "spec", "maxUnavailable"))
		})
		t.Run("replicas belong to KEDA when it scales", func(t *testing.T) {
			if len(byKind(r.docs, "keda.sh/", "ScaledObject")) > 0 {
				require.NotContains(t, mustMap(t, w.d.data, "spec"), "replicas",
					"with a ScaledObject the Deployment must leave replicas out, else each apply resets it")
			}
		})
	})
}

// TestPrometheusScraping: the ServiceMonitor reaches the Service's port that
// serves the metrics.
func TestPrometheusScraping(t *testing.T) {
	forEachKube(t, func(t *testing.T, r rendering) {
		monitors := byKind(r.docs, "monitoring.coreos.com/", "ServiceMonitor")
		if len(monitors) == 0 {
			return
		}
		require.Len(t, monitors, 1)
		sm := monitors[0]
		svc := one(t, r.docs, "v1", "Service", "cartworker")
		svcLabels := mustMap(t, svc.data, "metadata", "labels")
		for k, v := range mustMap(t, sm.data, "spec", "selector", "matchLabels") {
			require.Equal(t, v, svcLabels[k], "selector %s", k)
		}
		eps := mustList(t, sm.data, "spec", "endpoints")
		require.Len(t, eps, 1)
		port := mustStr(t, eps[0], "port")
		namedItem(t, mustList(t, svc.data, "spec", "ports"), port)
		require.Equal(t, config.DefaultMetricsPath, mustStr(t, eps[0], "path"))
	})
}

func TestNetworkPolicy(t *testing.T) {
	forEachKube(t, func(t *testing.T, r rendering) {
		pols := byKind(r.docs, "networking.k8s.io/", "NetworkPolicy")
		if len(pols) == 0 {
			return
		}
		require.Len(t, pols, 1)
		np := pols[0]
		w := newWorkload(t, r.docs)
		labels := mustMap(t, w.pod, "metadata", "labels")
		for k, v := range mustMap(t, np.data, "spec", "podSelector", "matchLabels") {
			require.Equal(t, v, labels[k], "podSelector %s", k)
		}
		ingress := mustList(t, np.data, "spec", "ingress")
		require.NotEmpty(t, ingress)
		var ports []any
		for _, rule := range ingress {
			for _, p := range mustList(t, rule, "ports") {
				ports = append(ports, mustDig(t, p, "port"))
			}
		}
		require.Contains(t, ports, "http", "Prometheus reaches the worker's metrics")
		require.NotContains(t, ports, 3500, "daprd's API listens on loopback only")
		require.NotContains(t, ports, 50001, "daprd's API listens on loopback only")
	})
}

func TestKEDAScaledObject(t *testing.T) {
	var scaled int
	forEachKube(t, func(t *testing.T, r rendering) {
		objs := byKind(r.docs, "keda.sh/", "ScaledObject")
		if len(objs) == 0 {
			return
		}
		scaled++
		require.Len(t, objs, 1)
		so := objs[0]
		w := newWorkload(t, r.docs)
		cfg := loadWorkerConfig(t, deploymentEnv(t, r.docs))
		require.Equal(t, "Deployment", mustStr(t, so.data, "spec", "scaleTargetRef", "kind"))
		require.Equal(t, w.d.name(), mustStr(t, so.data, "spec", "scaleTargetRef", "name"))
		require.Equal(t, 1, mustInt(t, so.data, "spec", "minReplicaCount"))
		require.Equal(t, cfg.Consumer.Partitions, mustInt(t, so.data, "spec", "maxReplicaCount"),
			"maxReplicaCount is WORKER_PARTITIONS: one command per partition is in flight, so more replicas sit idle")

		triggers := mustList(t, so.data, "spec", "triggers")
		require.Len(t, triggers, 1)
		tr := triggers[0]
		// nats-jetstream reads a single consumer; the lag is spread over all of
		// the partitions' consumers (see the component's header).
		require.Equal(t, "prometheus", mustStr(t, tr, "type"))
		md := mustMap(t, tr, "metadata")
		require.Regexp(t, `^https?://[^/\s]+`, mustStr(t, md, "serverAddress"))
		require.Positive(t, asInt(t, mustStr(t, md, "threshold")))
		require.Equal(t, "false", mustStr(t, md, "ignoreNullValues"),
			"a lost exporter must not read as an empty stream and scale a busy deployment down")
		if ref, ok := tr.(map[string]any)["authenticationRef"]; ok {
			ta := one(t, r.docs, "keda.sh/", "TriggerAuthentication", mustStr(t, ref, "name"))
			params := map[string]bool{}
			for _, s := range mustList(t, ta.data, "spec", "secretTargetRef") {
				params[mustStr(t, s, "parameter")] = true
				require.NotEmpty(t, mustStr(t, s, "name"))
			}
			require.Equal(t, "bearer", mustStr(t, md, "authModes"))
			require.True(t, params["bearerToken"], "authModes bearer reads parameter bearerToken")
		}

		query := mustStr(t, md, "query")
		sels := promSelectors(t, query)
		var metrics []string
		for _, sel := range sels {
			metrics = append(metrics, sel.metric)
			require.Contains(t, query, "sum("+sel.metric+"{", "%s must be summed over the consumers", sel.metric)
			require.Equal(t, promMatcher{"=", command.StreamCommands}, sel.matchers["stream_name"], "%s: stream_name", sel.metric)
			require.Equal(t, promMatcher{"=", "true"}, sel.matchers["is_consumer_leader"],
				"%s: only the consumer leader's report is current; every replica is exported", sel.metric)
			acct, ok := sel.matchers["account"]
			require.True(t, ok, "%s: no account matcher: streams of the same name in another NATS account would be counted", sel.metric)
			require.Equal(t, "=", acct.op)
			require.NotEmpty(t, acct.value)
			require.Equal(t, sels[0].matchers["account"], acct, "one account")
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
	require.Equal(t, 3, scaled, "the overlay, the chart with add-ons and the chart's full values scale with KEDA")
}

func TestNACKJetStream(t *testing.T) {
	for _, r := range []rendering{kustomizeBuild(t, kustomizeCore), mustHelmTemplate(t, "-f", chartFullValues)} {
		require.Empty(t, byKind(r.docs, "jetstream.nats.io/", "Stream"), "%s: NACK is an optional component", r.name)
	}
	r := kustomizeBuild(t, kustomizeOverlay)
	cfg := loadWorkerConfig(t, deploymentEnv(t, r.docs))
	streams := map[string]map[string]any{}
	for _, s := range byKind(r.docs, "jetstream.nats.io/", "Stream") {
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
		for _, c := range byKind(r.docs, "jetstream.nats.io/", "Consumer") {
			require.Failf(t, "NACK Consumer", "%s declares consumer %v: the worker owns its consumers", c, c.data["spec"])
		}
	})
}

func TestDaprTracing(t *testing.T) {
	forEachKube(t, func(t *testing.T, r rendering) {
		cfgs := byKind(r.docs, "dapr.io/", "Configuration")
		if len(cfgs) == 0 {
			return
		}
		require.Len(t, cfgs, 1)
		tr := mustMap(t, cfgs[0].data, "spec", "tracing")
		rate, err := strconv.ParseFloat(mustStr(t, tr, "samplingRate"), 64)
		require.NoError(t, err, "samplingRate is a string holding a number")
		require.True(t, rate > 0 && rate <= 1, "samplingRate %v", rate)
		_, otel := tr["otel"]
		_, zipkin := tr["zipkin"]
		require.True(t, otel != zipkin, "one exporter")
		if otel {
			require.NotEmpty(t, mustStr(t, tr, "otel", "endpointAddress"))
			require.Contains(t, []string{"grpc", "http"}, mustStr(t, tr, "otel", "protocol"))
		} else {
			require.Regexp(t, `^https?://`, mustStr(t, tr, "zipkin", "endpointAddress"))
		}
	})
}
