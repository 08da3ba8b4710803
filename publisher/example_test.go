package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// Publish a cart and an item, waiting for each outcome.
func Example() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	p, err := publisher.New(js, nc)
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.PublishAndWait(ctx, publisher.CacheCommand("c-1", publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1})); err != nil {
		log.Fatal(err)
	}
	ev, err := p.PublishAndWait(ctx, publisher.AddItemCommand("c-1", command.Item{
		ItemCode: "ITEM001", Quantity: 2, UnitPrice: money.FromInt(120), Description: "Coffee", TaxCode: "01",
	}))
	var rejected *publisher.RejectedError
	switch {
	case errors.As(err, &rejected):
		fmt.Println("refused:", rejected.Code)
	case errors.Is(err, publisher.ErrTimeout):
		// Stored, but no outcome yet: retrying with ev.CommandID is safe.
		fmt.Println("no outcome yet for", ev.CommandID)
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println(ev.Outcome)
	}
}
