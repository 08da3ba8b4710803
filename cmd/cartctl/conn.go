package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/natsconn"
	"github.com/cartworker/cartworker/publisher"
)

// session is a NATS connection with what the commands build on it.
type session struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects command.Subjects
}

// connect opens a session with the worker's connection code: the same
// credentials from NATS_USER and NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or
// NATS_NKEY_SEED, the same TLS settings, the same errors, which name
// NATS_URL with its credentials redacted. timeout bounds the connect. It
// makes one attempt: a command line fails at once when NATS is not there.
// Settings that cannot work are a usage error of f.
func (c *cli) connect(ctx context.Context, f *flagSet, o *natsOptions, timeout time.Duration) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsconn.Options{
		URL:      o.url,
		User:     c.getenv("NATS_USER"),
		Password: c.getenv("NATS_PASSWORD"),
		Token:    c.getenv("NATS_TOKEN"),
		Creds:    c.getenv("NATS_CREDS"),
		NkeySeed: o.nkeySeed,
		TLSCA:    o.tlsCA,
		TLSCert:  o.tlsCert,
		TLSKey:   o.tlsKey,
		Name:     "cartctl",
	}, nil)
	if errors.Is(err, natsconn.ErrInvalid) {
		return nil, f.usageErr(err)
	}
	if err != nil {
		return nil, err
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
