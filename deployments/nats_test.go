package deployments_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The NATS connection on Kubernetes: the kustomize components that choose
// how the worker authenticates and whether it uses TLS, and the chart's
// values that render the same.

// natsAuthVars are the variables of the worker's ways to authenticate to
// NATS, of which it takes one.
var natsAuthVars = []string{"NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_NKEY_SEED"}

// kustomizeWith builds the core with the named components of k8s/components,
// in that order, through an overlay in a temporary directory.
func kustomizeWith(t *testing.T, components ...string) rendering {
	t.Helper()
	dir := t.TempDir()
	core, err := filepath.Abs(kustomizeCore)
	require.NoError(t, err)
	// kustomize takes no absolute path.
	rel, err := filepath.Rel(dir, core)
	require.NoError(t, err)
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - " + filepath.ToSlash(rel) + "\ncomponents:\n"
	for _, c := range components {
		k += "  - " + filepath.ToSlash(filepath.Join(rel, "components", c)) + "\n"
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600))
	r := kustomizeBuild(t, dir)
	r.name = "kustomize " + kustomizeCore + " + " + strings.Join(components, ", ")
	return r
}

// sortedMounts is a container's volumeMounts in mountPath order: a
// kustomize patch adds its mounts first, the chart after /tmp.
func sortedMounts(t *testing.T, w workload) []any {
	t.Helper()
	m := slices.Clone(mustList(t, w.container, "volumeMounts"))
	slices.SortFunc(m, func(a, b any) int { return strings.Compare(mustStr(t, a, "mountPath"), mustStr(t, b, "mountPath")) })
	return m
}

// TestNATSConnection: each NATS component, alone and combined as the
// kustomization documents, sets one way to authenticate, mounts the files
// it names from the documented Secret and key, loads in the worker with
// every Secret present, and matches what the chart renders from the
// equivalent values.
func TestNATSConnection(t *testing.T) {
	noUserPassword := []string{"--set", "secretEnv.NATS_USER=null", "--set", "secretEnv.NATS_PASSWORD=null"}
	mutualTLS := []string{"--set", "natsTLS.existingSecret=cartworker-nats-tls", "--set", "natsTLS.clientCert=true"}
	for _, tc := range []struct {
		name       string
		components []string
		helm       []string
		auth       []string          // natsAuthVars set
		files      map[string]string // variable -> secret/key
	}{
		{
			name: "core",
			auth: []string{"NATS_USER", "NATS_PASSWORD"},
		},
		{
			name:       "token",
			components: []string{"nats-token"},
			helm: append(slices.Clone(noUserPassword),
				"--set", "secretEnv.NATS_TOKEN.secretName=cartworker-nats", "--set", "secretEnv.NATS_TOKEN.key=token"),
			auth: []string{"NATS_TOKEN"},
		},
		{
			name:       "creds",
			components: []string{"nats-creds"},
			helm:       append(slices.Clone(noUserPassword), "--set", "natsCreds.existingSecret=cartworker-nats-creds"),
			auth:       []string{"NATS_CREDS"},
			files:      map[string]string{"NATS_CREDS": "cartworker-nats-creds/nats.creds"},
		},
		{
			name:       "nkey",
			components: []string{"nats-nkey"},
			helm:       append(slices.Clone(noUserPassword), "--set", "natsNkey.existingSecret=cartworker-nats-nkey"),
			auth:       []string{"NATS_NKEY_SEED"},
			files:      map[string]string{"NATS_NKEY_SEED": "cartworker-nats-nkey/user.nk"},
		},
		{
			name:       "TLS",
			components: []string{"nats-tls"},
			helm:       []string{"--set", "natsTLS.existingSecret=cartworker-nats-tls"},
			auth:       []string{"NATS_USER", "NATS_PASSWORD"},
			files:      map[string]string{"NATS_TLS_CA": "cartworker-nats-tls/ca.crt"},
		},
		{
			name:       "client certificate, system roots",
			components: []string{"nats-mtls"},
			helm:       append(slices.Clone(mutualTLS), "--set", "natsTLS.keys.ca="),
			auth:       []string{"NATS_USER", "NATS_PASSWORD"},
			files: map[string]string{
				"NATS_TLS_CERT": "cartworker-nats-tls/tls.crt",
				"NATS_TLS_KEY":  "cartworker-nats-tls/tls.key",
			},
		},
		{
			name:       "mutual TLS",
			components: []string{"nats-tls", "nats-mtls"},
			helm:       mutualTLS,
			auth:       []string{"NATS_USER", "NATS_PASSWORD"},
			files: map[string]string{
				"NATS_TLS_CA":   "cartworker-nats-tls/ca.crt",
				"NATS_TLS_CERT": "cartworker-nats-tls/tls.crt",
				"NATS_TLS_KEY":  "cartworker-nats-tls/tls.key",
			},
		},
		{
			// In the other order, with an nkey: the TLS components share a volume.
			name:       "nkey over mutual TLS",
			components: []string{"nats-mtls", "nats-nkey", "nats-tls"},
			helm:       append(slices.Clone(mutualTLS), append(noUserPassword, "--set", "natsNkey.existingSecret=cartworker-nats-nkey")...),
			auth:       []string{"NATS_NKEY_SEED"},
			files: map[string]string{
				"NATS_NKEY_SEED": "cartworker-nats-nkey/user.nk",
				"NATS_TLS_CA":    "cartworker-nats-tls/ca.crt",
				"NATS_TLS_CERT":  "cartworker-nats-tls/tls.crt",
				"NATS_TLS_KEY":   "cartworker-nats-tls/tls.key",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newWorkload(t, kustomizeWith(t, tc.components...).docs)
			h := newWorkload(t, mustHelmTemplate(t, tc.helm...).docs)
			for _, w := range []workload{k, h} {
				env := w.envWithSecrets(t)
				var auth []string
				for _, name := range natsAuthVars {
					if env[name] != "" {
						auth = append(auth, name)
					}
				}
				require.Equal(t, tc.auth, auth, "ways to authenticate")
				want := tc.files
				if want == nil {
					want = map[string]string{}
				}
				require.Equal(t, want, w.natsFiles(t), "files and the Secrets they come from")
				loadWorkerConfig(t, env)
			}
			require.Equal(t, envSpec(t, k), envSpec(t, h), "kustomize and the chart set the same env")
			require.Equal(t, sortedMounts(t, k), sortedMounts(t, h), "and the same mounts")
		})
	}
	t.Run("two ways to authenticate", func(t *testing.T) {
		// What the kustomization warns of: the worker would not start.
		k := newWorkload(t, kustomizeWith(t, "nats-token", "nats-nkey").docs)
		_, err := tryLoadWorkerConfig(t, k.envWithSecrets(t))
		require.Error(t, err)
		require.Contains(t, err.Error(), "NATS_TOKEN")
		require.Contains(t, err.Error(), "NATS_NKEY_SEED")
	})
}
