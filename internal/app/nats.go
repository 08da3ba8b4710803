package app

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
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
