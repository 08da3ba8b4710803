package publisher

import (
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/cartworker/cartworker/command"
)

// tracerName is the instrumentation scope of the publisher's spans.
const tracerName = "github.com/cartworker/cartworker/publisher"

// sendAttributes describe a publish as OpenTelemetry's messaging
// conventions ask, plus the cart and the command type.
func sendAttributes(subject, template string, cmd command.Command) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
		semconv.MessagingDestinationName(subject),
		semconv.MessagingDestinationTemplate(template),
		semconv.MessagingMessageID(cmd.ID),
		attribute.String("cartworker.cart_id", cmd.CartID),
		attribute.String("cartworker.command.type", string(cmd.Type)),
	}
}
