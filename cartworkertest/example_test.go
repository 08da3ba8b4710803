package cartworkertest_test

import (
	"context"
	"fmt"
	"log"

	"github.com/cartworker/cartworker/cartworkertest"
	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/money"
	"github.com/cartworker/cartworker/publisher"
)

// A publisher's test: a stack with two workers, a cart published through
// the stack's Publisher, and its totals read back through daprd. It has no
// Output line, so go test compiles it but never runs it: it needs Docker.
func Example() {
	ctx := context.Background()
	st, err := cartworkertest.Run(ctx, cartworkertest.WithWorkers(2), cartworkertest.WithDaprToken("t"))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Terminate(ctx)

	pub := st.Publisher()
	if _, err := pub.PublishAndWait(ctx, publisher.CacheCommand("c-1", publisher.NewCart{TenantID: "T1", StoreCode: "S1", TerminalNo: 1})); err != nil {
		log.Fatal(err)
	}
	add := publisher.AddItemCommand("c-1", command.Item{ItemCode: "COFFEE", Quantity: 2, UnitPrice: money.FromInt(120), TaxCode: "01"})
	if _, err := pub.PublishAndWait(ctx, add); err != nil {
		log.Fatal(err)
	}
	cart, err := st.Cart(ctx, "c-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cart.Sales.TotalAmountWithTax) // 264: 240 and 10 % tax
}
