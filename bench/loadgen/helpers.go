package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// runFreePorts prints n distinct TCP ports that are free on 127.0.0.1,
// drawn from 20000-32767: below Linux's default ephemeral range, so that the
// many short-lived connections of the per-request mode cannot take them
// between this check and their use.
func runFreePorts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("free-ports", stderr)
	n := fs.Int("n", 1, "how many ports")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *n < 1 || *n > 64 {
		return usageError{fmt.Errorf("-n %d: want 1..64", *n)}
	}
	seen := map[int]bool{}
	var ports []int
	for tries := 0; len(ports) < *n && tries < 2000; tries++ {
		p := 20000 + rand.IntN(12768)
		if seen[p] {
			continue
		}
		seen[p] = true
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = ln.Close()
		ports = append(ports, p)
	}
	if len(ports) < *n {
		return errors.New("could not find enough free ports")
	}
	for _, p := range ports {
		fmt.Fprintln(stdout, p)
	}
	return nil
}

// runWait waits for an HTTP URL to answer with the wanted status, or a TCP
// address to accept a connection.
func runWait(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("wait", stderr)
	url := fs.String("http", "", "URL to GET")
	status := fs.Int("status", 0, "status wanted from -http (default: any 2xx)")
	addr := fs.String("tcp", "", "host:port to connect to")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	if err := parse(fs, args); err != nil {
		return err
	}
	if (*url == "") == (*addr == "") {
		return usageError{errors.New("give exactly one of -http and -tcp")}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var last error
	for {
		if *url != "" {
			last = probeHTTP(ctx, *url, *status)
		} else {
			var c net.Conn
			c, last = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", *addr)
			if c != nil {
				_ = c.Close()
			}
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait %s%s: %w (last: %v)", *url, *addr, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func probeHTTP(ctx context.Context, url string, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if (want == 0 && resp.StatusCode/100 == 2) || resp.StatusCode == want {
		return nil
	}
	return fmt.Errorf("status %d", resp.StatusCode)
}

// runFetch GETs a URL into a file, e.g. the worker's pprof profile during a
// run.
func runFetch(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("fetch", stderr)
	url := fs.String("url", "", "URL to GET")
	out := fs.String("out", "", "file to write")
	timeout := fs.Duration("timeout", 60*time.Second, "bound on the request")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *url == "" || *out == "" {
		return usageError{errors.New("-url and -out are required")}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", *url, resp.Status)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, io.LimitReader(resp.Body, 256<<20)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
