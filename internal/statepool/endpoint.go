package statepool

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// grpcTarget is a parsed Config.GRPCEndpoint.
type grpcTarget struct {
	// addr is host:port, dialled as is.
	addr string
	// tls is set by https:// or ?tls=true.
	tls bool
}

// defaultGRPCTLSPort is the port Dapr's SDKs assume when DAPR_GRPC_ENDPOINT
// names none, whatever the scheme.
const defaultGRPCTLSPort = "443"

// parseGRPCEndpoint reads DAPR_GRPC_ENDPOINT's forms that name one host:
// "host:port", "host:port?tls=true", "http://host:port" and
// "https://host:port". It follows Dapr's SDKs (go-sdk's
// client/internal.ParseGRPCEndpoint): a missing port is 443, an empty host
// is localhost, https means TLS, and ?tls= is refused with a scheme. It
// refuses the dns:, unix:, unix-abstract: and vsock: targets, which this
// client has no use for: daprd is one sidecar at one address.
func parseGRPCEndpoint(s string) (grpcTarget, error) {
	if s == "" {
		return grpcTarget{}, errors.New("empty")
	}
	var t grpcTarget
	hostport := s
	if scheme, _, ok := strings.Cut(s, ":"); ok {
		switch strings.ToLower(scheme) {
		case "dns", "unix", "unix-abstract", "vsock":
			return grpcTarget{}, fmt.Errorf("%q: %s: targets are not supported: use host:port, http://host:port or https://host:port", s, scheme)
		}
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return grpcTarget{}, err
		}
		switch u.Scheme {
		case "http":
		case "https":
			t.tls = true
		default:
			return grpcTarget{}, fmt.Errorf("%q: scheme must be http or https, got %q", s, u.Scheme)
		}
		if u.Path != "" && u.Path != "/" {
			return grpcTarget{}, fmt.Errorf("%q: a path is not allowed", s)
		}
		if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return grpcTarget{}, fmt.Errorf("%q: must not carry a query, fragment or user (use https:// for TLS)", s)
		}
		hostport = u.Host
	} else if rest, query, ok := strings.Cut(s, "?"); ok {
		q, err := url.ParseQuery(query)
		if err != nil {
			return grpcTarget{}, fmt.Errorf("%q: %w", s, err)
		}
		for k := range q {
			if k != "tls" {
				return grpcTarget{}, fmt.Errorf("%q: unknown query parameter %q (only tls)", s, k)
			}
		}
		switch v := q.Get("tls"); v {
		case "true":
			t.tls = true
		case "false":
		default:
			return grpcTarget{}, fmt.Errorf("%q: tls must be true or false, got %q", s, v)
		}
		hostport = rest
	}

	host, port, err := net.SplitHostPort(hostport)
	var ae *net.AddrError
	switch {
	case errors.As(err, &ae) && ae.Err == "missing port in address":
		host, port = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), defaultGRPCTLSPort
	case err != nil:
		return grpcTarget{}, fmt.Errorf("%q: want host:port: %w", s, err)
	}
	if strings.ContainsAny(host, "/?#@ ") {
		return grpcTarget{}, fmt.Errorf("%q: invalid host %q", s, host)
	}
	if host == "" {
		host = "localhost"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return grpcTarget{}, fmt.Errorf("%q: invalid port %q", s, port)
	}
	t.addr = net.JoinHostPort(host, port)
	return t, nil
}
