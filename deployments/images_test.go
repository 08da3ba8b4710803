package deployments

import (
	"os"
	"strings"
	"testing"
)

func TestParseImages(t *testing.T) {
	got, err := parseImages("# comment\n\nNATS_IMAGE=nats:2.15\nDAPRD_IMAGE=daprio/daprd:1.18.0")
	if err != nil || len(got) != 2 || got["NATS_IMAGE"] != "nats:2.15" || got["DAPRD_IMAGE"] != "daprio/daprd:1.18.0" {
		t.Fatalf("got %v, %v", got, err)
	}
	// Lines that bash, Docker Compose and Go could read differently.
	for _, bad := range []string{
		"NATS_IMAGE = nats:2.15",
		`NATS_IMAGE="nats:2.15"`,
		"NATS_IMAGE=${X}",
		"NATS_IMAGE=",
		"export NATS_IMAGE=nats",
		" # indented comment",
		"A_IMAGE=a\nA_IMAGE=b",
	} {
		if _, err := parseImages(bad); err == nil {
			t.Errorf("%q accepted", bad)
		} else if !strings.Contains(err.Error(), "images.env:") {
			t.Errorf("%q: error %v has no line", bad, err)
		}
	}
	if _, err := Images(); err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedDaprFilesAreTheShippedOnes(t *testing.T) {
	for _, f := range []struct {
		path string
		got  []byte
	}{{"dapr/components/cartstore.yaml", CartstoreComponent()}, {"dapr/config.yaml", DaprConfig()}} {
		want, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if string(f.got) != string(want) {
			t.Errorf("%s: embedded copy differs from the file", f.path)
		}
	}
	c := CartstoreComponent()
	c[0] = 'X'
	if CartstoreComponent()[0] == 'X' {
		t.Error("CartstoreComponent returns the embedded bytes, not a copy")
	}
}
