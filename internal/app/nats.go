package app

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cartworker/cartworker/internal/config"
)

// natsCloseTimeout bounds the final flush of acks and outcome events.
const natsCloseTimeout = 5 * time.Second

// closeNATS makes sure the server has read every ack, Nak and outcome event
// before the connection closes, because the process exits right after Run
// returns. nc.Drain would return before its flush has happened, and Close
// alone only writes the buffer to the socket; a PING round trip proves the
// server has processed everything sent before it. With NATS unreachable
// there is nothing left to save, so it only closes.
func closeNATS(nc *nats.Conn, log *slog.Logger) {
	if nc.IsConnected() {
		if err := nc.FlushTimeout(natsCloseTimeout); err != nil {
			log.Warn("last acks may not have reached NATS; they will be redelivered", "err", err)
		}
	}
	nc.Close()
}

func natsOptions(cfg config.Config, log *slog.Logger) []nats.Option {
	opts := []nats.Option{
		nats.Name("cartworker"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		// At start-up NATS may still be coming up next to the worker.
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			// Our own Close at shutdown lands here too, without an error;
			// that is not news.
			if err == nil && c.IsClosed() {
				return
			}
			log.Warn("NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected", "url", c.ConnectedUrlRedacted())
		}),
	}
	if cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(cfg.NATSUser, cfg.NATSPassword))
	}
	if cfg.NATSToken != "" {
		opts = append(opts, nats.Token(cfg.NATSToken))
	}
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	return opts
}
