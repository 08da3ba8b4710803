package command

import (
	"errors"
	"strings"
	"testing"
)

// FuzzDecode checks that no body, however malformed, panics the decoder or
// escapes as anything but an *InvalidError whose reason speaks the
// contract, and that what decodes re-encodes to a command that decodes the
// same way.
func FuzzDecode(f *testing.F) {
	f.Add("cart.cmd.c-1.add-item", []byte(goodAdd))
	f.Add("cart.cmd.c-1.cache", []byte(`{"id":"x","type":"cache","cart_id":"c-1","cart":{"status":"Idle"}}`))
	f.Add("cart.cmd.c-1.delete", []byte(`{"id":"x","type":"delete","cart_id":"c-1"}`))
	f.Add("cart.cmd.c@1.delete", []byte(`{`))
	// Work bounds: too many items of costly prices, one costly price, and
	// a body of nothing but them.
	f.Add("cart.cmd.c-1.add-item", addItemBody(400, tinyPriceItem))
	f.Add("cart.cmd.c-1.add-item", addItemBody(1, tinyPriceItem))
	f.Add("cart.cmd.c-1.add-item", addItemBody(MaxItems, `{"item_code":"A,\"]},[{","quantity":1,"unit_price":1e40}`))
	f.Add("cart.cmd.c-1.add-item", addItemBody(MaxBodyBytes/(len(tinyPriceItem)+1)-2, tinyPriceItem))
	f.Add("cart.cmd.c-1.delete", []byte(`{"id":"x","type":"delete","cart_id":"c-1","items":[`+tinyPriceItem+`]}`))
	// Precision and type errors: real digits, float noise, a price as a
	// string, values of the wrong JSON type.
	for _, ex := range examples() {
		if len(ex.body) < 4096 {
			f.Add(ex.subject, []byte(ex.body))
		}
	}
	f.Fuzz(func(t *testing.T, subject string, body []byte) {
		var s Subjects
		c, err := s.Decode(subject, body)
		if err != nil {
			var inv *InvalidError
			if !errors.As(err, &inv) || inv.Code == "" {
				t.Fatalf("error %v is not an *InvalidError with a code", err)
			}
			if strings.Contains(inv.Reason, "Go ") || strings.Contains(inv.Reason, "json: ") {
				t.Fatalf("reason %q speaks Go, not the contract", inv.Reason)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("decoded command fails Validate: %v", err)
		}
		again, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Decode(subject, again); err != nil {
			t.Fatalf("re-encoded command does not decode: %v\n%s", err, again)
		}
	})
}
