package main

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/publisher"
)

// session is a NATS connection with what the commands build on it.
type session struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects command.Subjects
}

// connect opens a session. timeout bounds the dial.
func (c *cli) connect(o *natsOptions, timeout time.Duration) (*session, error) {
	opts := []nats.Option{nats.Name("cartctl"), nats.Timeout(timeout)}
	if user := c.getenv("NATS_USER"); user != "" {
		opts = append(opts, nats.UserInfo(user, c.getenv("NATS_PASSWORD")))
	}
	if token := c.getenv("NATS_TOKEN"); token != "" {
		opts = append(opts, nats.Token(token))
	}
	if creds := c.getenv("NATS_CREDS"); creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(o.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(o.url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &session{nc: nc, js: js, subjects: command.Subjects{Prefix: o.prefix}}, nil
}

func (s *session) close() { s.nc.Close() }

// publisher returns a Publisher whose PublishAndWait waits at most timeout.
func (s *session) publisher(timeout time.Duration) (*publisher.Publisher, error) {
	return publisher.New(s.js, s.nc, publisher.WithPrefix(s.subjects.Prefix), publisher.WithWaitTimeout(timeout))
}

// redactURLs hides credentials in a comma-separated list of server URLs so
// that error messages can show which servers were tried.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil {
			if strings.Contains(p, "@") {
				p = "<unparsable URL>"
			}
			parts[i] = p
			continue
		}
		if u.User != nil {
			u.User = url.User("redacted")
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
