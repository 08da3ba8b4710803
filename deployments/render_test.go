package deployments_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// The Kubernetes packaging is checked as it is applied: kustomize builds of
// k8s/ and its overlays, and helm template of the chart, parsed into the
// same manifests as the files that are used as they are (Compose, the
// Compose Dapr components). Both tools are built from tools/helm/go.mod by
// scripts/k8s-tools.sh, which the Makefile runs before the unit tests.

// optionalToolsEnv, set to 1, lets these tests skip when helm or kustomize
// has not been built yet, instead of building it (minutes on a cold cache).
// Only for quick local runs: make test builds them first and never sets it.
const optionalToolsEnv = "CARTWORKER_K8S_TOOLS_OPTIONAL"

// errToolNotBuilt is scripts/k8s-tools.sh's exit status 3 with CACHED_ONLY=1.
var errToolNotBuilt = errors.New("not built")

// Each tool is resolved once per test binary: the script runs `go list`
// even when the binary is cached.
var toolPaths = map[string]func() (string, error){
	"helm":      sync.OnceValues(func() (string, error) { return buildTool("helm") }),
	"kustomize": sync.OnceValues(func() (string, error) { return buildTool("kustomize") }),
}

// buildTool runs scripts/k8s-tools.sh NAME and returns the binary's path.
func buildTool(name string) (string, error) {
	cmd := exec.Command(filepath.Join("..", "scripts", "k8s-tools.sh"), name)
	if os.Getenv(optionalToolsEnv) == "1" {
		cmd.Env = append(os.Environ(), "CACHED_ONLY=1")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) && exit.ExitCode() == 3 {
		return "", errToolNotBuilt
	}
	if err != nil {
		return "", fmt.Errorf("scripts/k8s-tools.sh %s: %w\n%s", name, err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// tool returns the path of helm or kustomize, building it when needed.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := toolPaths[name]()
	if errors.Is(err, errToolNotBuilt) {
		t.Skipf("%s is not built and %s=1: run `make k8s-tools` (scripts/k8s-tools.sh) to check the Kubernetes packaging", name, optionalToolsEnv)
	}
	require.NoError(t, err)
	return path
}

// run runs a tool from deployments/ and returns its standard output; a
// failure carries its standard error.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(tool(t, name), args...)
	// helm keeps its repository cache and config in $HOME; none is used.
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s%s", name, strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// parseStream decodes a multi-document YAML stream, as a tool prints it.
func parseStream(source string, r io.Reader) ([]manifest, error) {
	dec := yaml.NewDecoder(r)
	var docs []manifest
	for i := 0; ; i++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if len(node.Content) == 0 {
			continue
		}
		var data map[string]any
		if err := node.Decode(&data); err != nil {
			return nil, fmt.Errorf("%s: document %d is not a mapping: %w", source, i, err)
		}
		docs = append(docs, manifest{file: source, index: i, node: &node, data: data})
	}
}

// rendering is one way the worker is deployed, as the objects it creates.
type rendering struct {
	name string
	docs []manifest
}

// The chart and the kustomizations, relative to deployments/.
const (
	chartDir         = "helm/cartworker"
	chartFullValues  = chartDir + "/ci/full-values.yaml"
	kustomizeCore    = "k8s"
	kustomizeOverlay = "k8s-overlays/everything"
	helmRelease      = "cartworker"
	helmNamespace    = "cartworker"
)

// helmAddOnsDefaults turns on every optional part of the chart and leaves
// their settings at the defaults, which must match the kustomize components.
var helmAddOnsDefaults = []string{
	"--set", "keda.enabled=true",
	"--set", "serviceMonitor.enabled=true",
	"--set", "prometheusRule.enabled=true",
	"--set", "tracing.enabled=true",
	"--set", "networkPolicy.enabled=true",
}

func kustomizeBuild(t *testing.T, dir string) rendering {
	t.Helper()
	out, err := run(t, "kustomize", "build", dir)
	require.NoError(t, err)
	docs, err := parseStream("kustomize build "+dir, strings.NewReader(out))
	require.NoError(t, err)
	return rendering{name: "kustomize " + dir, docs: docs}
}

// helmTemplate renders the chart; args are more helm template flags.
func helmTemplate(t *testing.T, args ...string) (rendering, error) {
	t.Helper()
	full := append([]string{"template", helmRelease, chartDir, "--namespace", helmNamespace}, args...)
	out, err := run(t, "helm", full...)
	if err != nil {
		return rendering{}, err
	}
	name := "helm template"
	if len(args) > 0 {
		name += " " + strings.Join(args, " ")
	}
	docs, err := parseStream(name, strings.NewReader(out))
	if err != nil {
		return rendering{}, err
	}
	return rendering{name: name, docs: docs}, nil
}

func mustHelmTemplate(t *testing.T, args ...string) rendering {
	t.Helper()
	r, err := helmTemplate(t, args...)
	require.NoError(t, err)
	return r
}

// kubeRenderings are every Kubernetes deployment of the worker: the core
// kustomization, the overlay with every component, and the chart with its
// defaults, with every add-on at its defaults, and with ci/full-values.yaml.
func kubeRenderings(t *testing.T) []rendering {
	t.Helper()
	return []rendering{
		kustomizeBuild(t, kustomizeCore),
		kustomizeBuild(t, kustomizeOverlay),
		mustHelmTemplate(t),
		mustHelmTemplate(t, helmAddOnsDefaults...),
		mustHelmTemplate(t, "-f", chartFullValues),
	}
}

// forEachKube runs f as a subtest for every Kubernetes rendering.
func forEachKube(t *testing.T, f func(t *testing.T, r rendering)) {
	t.Helper()
	for _, r := range kubeRenderings(t) {
		t.Run(r.name, func(t *testing.T) { f(t, r) })
	}
}
