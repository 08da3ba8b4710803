package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestInvokedAs(t *testing.T) {
	for arg0, want := range map[string]string{
		"cartctl":                              "cartctl",
		"bin/cartctl":                          "bin/cartctl",
		"./bin/cartctl":                        "./bin/cartctl",
		"/opt/cw/cartctl":                      "/opt/cw/cartctl",
		"/tmp/go-build123/b001/exe/cartctl":    "go run ./cmd/cartctl",
		"/root/.cache/go-build/xx/exe/cartctl": "go run ./cmd/cartctl",
	} {
		require.Equal(t, want, invokedAs(arg0), arg0)
	}
}

// The commands cartctl suggests run as typed: `make demo` runs bin/cartctl,
// which is not on PATH.
func TestSuggestionsNameTheProgramAsRun(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t)
	run := func(args ...string) string {
		t.Helper()
		var stdout, stderr syncBuffer
		c := e.cli(&stdout, &stderr)
		c.prog = "bin/cartctl"
		require.NoError(t, c.run(ctx(t), args), stderr.String())
		return stdout.String()
	}
	require.Contains(t, run("demo", "-cart", "demo-bin"), "raw JSON: bin/cartctl get -cart demo-bin\n")
	usage := run("-h")
	require.Contains(t, usage, "  bin/cartctl get -cart c-1\n")
	require.Contains(t, usage, "Run 'bin/cartctl <command> -h'")
}
