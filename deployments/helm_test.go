package deployments_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// Checks of the Helm chart itself; what it renders is checked with the
// kustomize builds in kube_test.go and monitoring_test.go.

func TestHelmLint(t *testing.T) {
	for _, args := range [][]string{nil, helmAddOnsDefaults, {"-f", chartFullValues}} {
		t.Run(strings.Join(append([]string{"lint"}, args...), " "), func(t *testing.T) {
			out, err := run(t, "helm", append([]string{"lint", "--strict", chartDir}, args...)...)
			require.NoError(t, err)
			require.Contains(t, out, "0 chart(s) failed")
		})
	}
}

// TestHelmRefusesBadValues: the values a template or the schema must
// refuse, each with a message naming the value to use instead.
func TestHelmRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"password in config", []string{"config.NATS_PASSWORD=hunter2"}, "secretEnv.NATS_PASSWORD"},
		{"token in config", []string{"config.NATS_TOKEN=abc"}, "secretEnv.NATS_TOKEN"},
		{"Dapr token in config", []string{"config.DAPR_API_TOKEN=abc"}, "dapr.apiTokenSecret"},
		{"HTTP address in config", []string{"config.WORKER_HTTP_ADDR=:9"}, "httpPort"},
		{"gRPC endpoint in config", []string{"config.DAPR_GRPC_ENDPOINT=x:1"}, "dapr.grpcPort"},
		{"state store in config", []string{"config.CART_STATE_STORE=other"}, "dapr.stateStore.name"},
		{"creds path in config", []string{"config.NATS_CREDS=/x"}, "natsCreds.existingSecret"},
		{"nkey path in config", []string{"config.NATS_NKEY_SEED=/x"}, "natsNkey.existingSecret"},
		{"TLS CA path in config", []string{"config.NATS_TLS_CA=/x"}, "natsTLS.existingSecret"},
		{"TLS certificate path in config", []string{"config.NATS_TLS_CERT=/x"}, "natsTLS.clientCert"},
		{"TLS key path in config", []string{"config.NATS_TLS_KEY=/x"}, "natsTLS.clientCert"},
		{"nkey path in secretEnv", []string{"secretEnv.NATS_NKEY_SEED.secretName=s", "secretEnv.NATS_NKEY_SEED.key=k"}, "natsNkey.existingSecret"},
		// The worker takes one way to authenticate; the default user and
		// password count, since their optional Secret may exist.
		{"creds and user/password", []string{"natsCreds.existingSecret=c"},
			"user/password (secretEnv.NATS_USER, secretEnv.NATS_PASSWORD) and creds file (natsCreds.existingSecret)"},
		{"nkey and user/password", []string{"natsNkey.existingSecret=n"}, "nkey (natsNkey.existingSecret)"},
		{"token and user/password", []string{"secretEnv.NATS_TOKEN.secretName=s", "secretEnv.NATS_TOKEN.key=token"},
			"token (secretEnv.NATS_TOKEN)"},
		{"user in config and nkey", []string{"secretEnv.NATS_USER=null", "secretEnv.NATS_PASSWORD=null", "config.NATS_USER=u", "natsNkey.existingSecret=n"},
			"user/password (config.NATS_USER) and nkey"},
		{"password in extraEnv and creds", []string{"secretEnv.NATS_USER=null", "secretEnv.NATS_PASSWORD=null", "natsCreds.existingSecret=c",
			"extraEnv[0].name=NATS_PASSWORD", "extraEnv[0].valueFrom.secretKeyRef.name=s", "extraEnv[0].valueFrom.secretKeyRef.key=p"},
			"user/password (extraEnv NATS_PASSWORD)"},
		{"creds and nkey", []string{"secretEnv.NATS_USER=null", "secretEnv.NATS_PASSWORD=null", "natsCreds.existingSecret=c", "natsNkey.existingSecret=n"},
			"set 2 ways"},
		{"client certificate without Secret", []string{"natsTLS.clientCert=true"}, "natsTLS.existingSecret"},
		{"TLS Secret with nothing to read", []string{"natsTLS.existingSecret=t", "natsTLS.keys.ca="}, "natsTLS.keys.ca"},
		{"TLS key without name", []string{"natsTLS.existingSecret=t", "natsTLS.clientCert=true", "natsTLS.keys.key="}, "/natsTLS/keys/key"},
		{"not an env name", []string{"config.nats_url=x"}, "nats_url"},
		{"config and secretEnv", []string{"config.NATS_USER=u"}, "both config and secretEnv"},
		{"secretEnv without key", []string{"secretEnv.NATS_NKEY.secretName=s"}, "key"},
		{"no Dapr API token", []string{"dapr.apiTokenSecret="}, "apiTokenSecret"},
		{"two Dapr configurations", []string{"tracing.enabled=true", "dapr.config=other"}, "dapr.config"},
		{"unknown trace exporter", []string{"tracing.enabled=true", "tracing.exporter=jaeger"}, "exporter"},
		{"KEDA without partitions", []string{"keda.enabled=true", "config.WORKER_PARTITIONS=null"}, "WORKER_PARTITIONS"},
		{"annotation the chart sets", []string{"dapr.extraAnnotations.dapr\\.io/app-id=x"}, "dapr.extraAnnotations"},
		{"not a Dapr annotation", []string{"dapr.extraAnnotations.foo=x"}, "podAnnotations"},
		{"port out of range", []string{"httpPort=70000"}, "httpPort"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			_, err := helmTemplate(t, args...)
			require.Error(t, err)
			msg := err.Error()[strings.Index(err.Error(), "\n")+1:] // helm's own message, past the command line
			require.Contains(t, msg, tc.want)
			t.Log(strings.TrimSpace(msg))
		})
	}
}

// TestHelmReachesEveryWorkerSetting: every variable the worker reads can
// be set through the chart: a plain one through config, a secret through
// secretEnv, and the few the chart derives through their own value. The
// worker takes one way to authenticate to NATS, and the chart renders no
// more, so each way is rendered on its own, with every other variable.
func TestHelmReachesEveryWorkerSetting(t *testing.T) {
	names := workerEnvNames(t)
	ways := [][]string{{"NATS_USER", "NATS_PASSWORD"}, {"NATS_TOKEN"}, {"NATS_CREDS"}, {"NATS_NKEY_SEED"}}
	require.ElementsMatch(t, natsAuthVars, slices.Concat(ways...))
	var others []string
	for name := range names {
		if !slices.Contains(natsAuthVars, name) {
			others = append(others, name)
		}
	}
	for _, name := range natsAuthVars {
		require.True(t, names[name], "the worker reads no %s", name)
	}
	for _, way := range ways {
		t.Run(strings.Join(way, "+"), func(t *testing.T) {
			helmSetsEach(t, append(slices.Clone(others), way...))
		})
	}
}

// helmSetsEach renders the chart with each of the worker's variables in
// names set, and checks that it is.
func helmSetsEach(t *testing.T, names []string) {
	t.Helper()
	derived := map[string][]string{
		"WORKER_HTTP_ADDR":   {"httpPort=9999"},
		"DAPR_HTTP_ENDPOINT": nil, // always the sidecar's 127.0.0.1:3500
		"DAPR_GRPC_ENDPOINT": {"dapr.grpcPort=50099"},
		"DAPR_API_TOKEN":     {"dapr.apiTokenSecret=tok"},
		"CART_STATE_STORE":   {"dapr.stateStore.name=carts"},
		"NATS_CREDS":         {"natsCreds.existingSecret=creds"},
		"NATS_NKEY_SEED":     {"natsNkey.existingSecret=nkey"},
		"NATS_TLS_CA":        {"natsTLS.existingSecret=tls"},
		"NATS_TLS_CERT":      {"natsTLS.existingSecret=tls", "natsTLS.clientCert=true"},
		"NATS_TLS_KEY":       {"natsTLS.existingSecret=tls", "natsTLS.clientCert=true"},
	}
	// The Secret each file comes from.
	fileSecrets := map[string]string{"NATS_CREDS": "creds", "NATS_NKEY_SEED": "nkey", "NATS_TLS_CA": "tls", "NATS_TLS_CERT": "tls", "NATS_TLS_KEY": "tls"}
	config := map[string]string{}
	secrets := map[string]any{}
	var args []string
	for _, name := range names {
		switch {
		case derived[name] != nil:
			for _, s := range derived[name] {
				args = append(args, "--set", s)
			}
		case name == "DAPR_HTTP_ENDPOINT":
		case secretName.MatchString(name):
			secrets[name] = map[string]any{"secretName": "s", "key": strings.ToLower(name)}
		default:
			config[name] = "v-" + name
		}
	}
	// A default secretEnv entry not set here is deleted (null): in config
	// it would be set twice, and it may be another way to authenticate.
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	var defaults struct {
		SecretEnv map[string]any `yaml:"secretEnv"`
	}
	require.NoError(t, yaml.Unmarshal(b, &defaults))
	for name := range defaults.SecretEnv {
		if _, set := secrets[name]; !set {
			secrets[name] = nil
		}
	}
	values, err := yaml.Marshal(map[string]any{"config": config, "secretEnv": secrets})
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "every-setting.yaml")
	require.NoError(t, os.WriteFile(file, values, 0o600))
	r := mustHelmTemplate(t, append([]string{"-f", file}, args...)...)
	env := map[string]map[string]any{}
	w := newWorkload(t, r.docs)
	for _, e := range w.env {
		env[mustStr(t, e, "name")] = e.(map[string]any)
	}
	for _, name := range names {
		e, ok := env[name]
		require.True(t, ok, "the chart cannot set %s", name)
		switch {
		case config[name] != "":
			require.Equal(t, config[name], e["value"], name)
		case secrets[name] != nil:
			require.Equal(t, "s", mustStr(t, e, "valueFrom", "secretKeyRef", "name"), name)
		case fileSecrets[name] != "":
			secret, _ := w.mountedFile(t, mustStr(t, e, "value"))
			require.Equal(t, fileSecrets[name], secret, "%s: a file of the mounted Secret", name)
		}
	}
	require.Equal(t, ":9999", w.envValue(t, "WORKER_HTTP_ADDR"))
	require.Equal(t, "127.0.0.1:50099", w.envValue(t, "DAPR_GRPC_ENDPOINT"))
	require.Equal(t, "carts", w.envValue(t, "CART_STATE_STORE"))
	require.Equal(t, "carts", stateStore(t, r.docs).name())
}

// envSpec normalizes a container's env: literal values, "" dropped (unset
// and empty read the same to the worker), and Secret references.
func envSpec(t *testing.T, w workload) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range w.env {
		name := mustStr(t, e, "name")
		if v, ok := e.(map[string]any)["value"]; ok {
			if v != "" {
				out[name] = v.(string)
			}
			continue
		}
		ref := mustMap(t, e, "valueFrom", "secretKeyRef")
		out[name] = fmt.Sprintf("secret %v/%v optional=%v", ref["name"], ref["key"], ref["optional"])
	}
	return out
}

// specWithout returns a copy of m's spec without the given keys.
func specWithout(t *testing.T, m manifest, keys ...string) map[string]any {
	t.Helper()
	spec := maps.Clone(mustMap(t, m.data, "spec"))
	for _, k := range keys {
		delete(spec, k)
	}
	return spec
}

// TestHelmDefaultsMatchKustomize: installed with its defaults, the chart
// deploys what the core kustomization does, and each add-on turned on
// renders what its kustomize component holds. Labels differ (the chart
// adds Helm's), nothing else may.
func TestHelmDefaultsMatchKustomize(t *testing.T) {
	core := kustomizeBuild(t, kustomizeCore)
	chart := mustHelmTemplate(t)
	t.Run("deployment", func(t *testing.T) {
		k, h := newWorkload(t, core.docs), newWorkload(t, chart.docs)
		require.Equal(t, envSpec(t, k), envSpec(t, h), "env")
		require.Equal(t, k.ann, h.ann, "pod annotations")
		for _, key := range []string{"ports", "startupProbe", "livenessProbe", "readinessProbe", "resources", "securityContext", "volumeMounts", "image", "imagePullPolicy"} {
			require.Equal(t, k.container[key], h.container[key], key)
		}
		for _, key := range []string{"securityContext", "terminationGracePeriodSeconds", "volumes"} {
			require.Equal(t, mustDig(t, k.pod, "spec", key), mustDig(t, h.pod, "spec", key), key)
		}
		require.Equal(t, specWithout(t, k.d, "selector", "template", "replicas"), specWithout(t, h.d, "selector", "template", "replicas"))
	})
	t.Run("service", func(t *testing.T) {
		k, h := one(t, core.docs, "v1", "Service", "cartworker"), one(t, chart.docs, "v1", "Service", "cartworker")
		require.Equal(t, specWithout(t, k, "selector"), specWithout(t, h, "selector"))
	})
	t.Run("disruption budget", func(t *testing.T) {
		k, h := one(t, core.docs, "policy/", "PodDisruptionBudget", "cartworker"), one(t, chart.docs, "policy/", "PodDisruptionBudget", "cartworker")
		require.Equal(t, specWithout(t, k, "selector"), specWithout(t, h, "selector"))
	})
	t.Run("dapr", func(t *testing.T) {
		k, h := stateStore(t, core.docs), stateStore(t, chart.docs)
		require.Equal(t, k.name(), h.name())
		require.Equal(t, k.data["spec"], h.data["spec"])
		require.Equal(t, k.data["auth"], h.data["auth"])
		require.Equal(t, k.data["scopes"], h.data["scopes"])
		kr, hr := byKind(core.docs, "dapr.io/", "Resiliency"), byKind(chart.docs, "dapr.io/", "Resiliency")
		require.Len(t, hr, 1)
		require.Equal(t, kr[0].data["spec"], hr[0].data["spec"])
		require.Equal(t, kr[0].data["scopes"], hr[0].data["scopes"])
	})
	t.Run("add-ons", func(t *testing.T) {
		addOns := mustHelmTemplate(t, helmAddOnsDefaults...)
		for _, tc := range []struct {
			file, group, kind string
			ignore            []string // spec keys that name the release's labels
		}{
			{"k8s/components/keda/keda-scaledobject.yaml", "keda.sh/", "ScaledObject", nil},
			{"k8s/components/prometheus-operator/prometheusrule.yaml", "monitoring.coreos.com/", "PrometheusRule", nil},
			{"k8s/components/prometheus-operator/servicemonitor.yaml", "monitoring.coreos.com/", "ServiceMonitor", []string{"selector"}},
			{"k8s/components/dapr-tracing/dapr-configuration.yaml", "dapr.io/", "Configuration", nil},
			{"k8s/components/network-policy/networkpolicy.yaml", "networking.k8s.io/", "NetworkPolicy", []string{"podSelector"}},
		} {
			t.Run(tc.kind, func(t *testing.T) {
				docs, err := parseFile(tc.file)
				require.NoError(t, err)
				k := one(t, docs, tc.group, tc.kind, "cartworker")
				h := one(t, addOns.docs, tc.group, tc.kind, "cartworker")
				require.Equal(t, specWithout(t, k, tc.ignore...), specWithout(t, h, tc.ignore...))
			})
		}
		// The component's patch and the chart both point the sidecar at the
		// Configuration.
		require.Equal(t, "cartworker", newWorkload(t, addOns.docs).ann["dapr.io/config"])
		require.Equal(t, "cartworker", newWorkload(t, kustomizeBuild(t, kustomizeOverlay).docs).ann["dapr.io/config"])
	})
}

// TestHelmValuesCoverTemplates: every value a template reads is in
// values.yaml, where `helm show values` documents it.
func TestHelmValuesCoverTemplates(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	var values map[string]any
	require.NoError(t, yaml.Unmarshal(b, &values))
	refRE := regexp.MustCompile(`\.Values\.([A-Za-z0-9_.]+)`)
	templates, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	require.NoError(t, err)
	for _, tpl := range templates {
		src, err := os.ReadFile(tpl)
		require.NoError(t, err)
		for _, m := range refRE.FindAllStringSubmatch(string(src), -1) {
			path := strings.Split(m[1], ".")
			_, ok := dig(values, path...)
			require.True(t, ok, "%s reads .Values.%s, which values.yaml does not have", filepath.Base(tpl), m[1])
		}
	}
}
