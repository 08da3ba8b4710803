package command

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const goodAdd = `{"id":"cmd-1","type":"add-item","cart_id":"c-1","tenant_id":"T1","store_code":"S1","terminal_no":1,
 "items":[{"item_code":"ITEM001","quantity":2,"unit_price":120,"description":"Coffee","tax_code":"01"}]}`

func TestDecodeValid(t *testing.T) {
	var s Subjects
	c, err := s.Decode("cart.cmd.c-1.add-item", []byte(goodAdd))
	require.NoError(t, err)
	require.Equal(t, "cmd-1", c.ID)
	require.Equal(t, TypeAddItem, c.Type)
	require.Len(t, c.Items, 1)
	require.Equal(t, "120", c.Items[0].UnitPrice.String())

	c, err = s.Decode("cart.cmd.c-1.cache", []byte(`{"id":"x","type":"cache","cart_id":"c-1","cart":{"status":"Idle","payments":[]}}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"status":"Idle","payments":[]}`, string(c.Cart))

	_, err = s.Decode("cart.cmd.c-1.delete", []byte(`{"id":"x","type":"delete","cart_id":"c-1"}`))
	require.NoError(t, err)
}

func TestDecodeInvalid(t *testing.T) {
	item := func(q int, price string) string {
		return `{"id":"i","type":"add-item","cart_id":"c-1","items":[{"item_code":"A","quantity":` +
			strconv.Itoa(q) + `,"unit_price":` + price + `}]}`
	}
	many := `{"id":"i","type":"add-item","cart_id":"c-1","items":[` +
		strings.TrimSuffix(strings.Repeat(`{"item_code":"A","quantity":1,"unit_price":1},`, MaxItems+1), ",") + `]}`
	tests := []struct {
		name, subject, body, code string
	}{
		{"not json", "cart.cmd.c-1.add-item", `{"id":`, CodeMalformedJSON},
		{"trailing data", "cart.cmd.c-1.delete", `{"id":"i","type":"delete","cart_id":"c-1"} {}`, CodeMalformedJSON},
		{"unknown type in subject", "cart.cmd.c-1.explode", `{}`, CodeUnknownType},
		{"unknown type in body", "cart.cmd.c-1.delete", `{"id":"i","type":"explode","cart_id":"c-1"}`, CodeUnknownType},
		{"type mismatch", "cart.cmd.c-1.delete", `{"id":"i","type":"cache","cart_id":"c-1"}`, CodeSubjectMismatch},
		{"cart mismatch", "cart.cmd.c-1.delete", `{"id":"i","type":"delete","cart_id":"c-2"}`, CodeSubjectMismatch},
		{"bad subject shape", "cart.cmd.c-1", `{}`, CodeSubjectMismatch},
		{"invalid cart id", "cart.cmd.c@1.delete", `{"id":"i","type":"delete","cart_id":"c@1"}`, CodeInvalidCartID},
		{"cart id too long", "cart.cmd." + strings.Repeat("a", 129) + ".delete", `{}`, CodeInvalidCartID},
		{"missing id", "cart.cmd.c-1.delete", `{"type":"delete","cart_id":"c-1"}`, CodeMissingID},
		{"quantity 0", "cart.cmd.c-1.add-item", item(0, "1"), CodeInvalidQuantity},
		{"quantity 10000", "cart.cmd.c-1.add-item", item(10000, "1"), CodeInvalidQuantity},
		{"negative price", "cart.cmd.c-1.add-item", item(1, "-1"), CodeInvalidPrice},
		{"price too high", "cart.cmd.c-1.add-item", item(1, "100000000.01"), CodeInvalidPrice},
		{"price overflows", "cart.cmd.c-1.add-item", item(1, "1e30"), CodeInvalidPrice},
		{"price exponent out of range", "cart.cmd.c-1.add-item", item(1, "1e-999999"), CodeInvalidPrice},
		{"price 1e400", "cart.cmd.c-1.add-item", item(1, "1e400"), CodeInvalidPrice},
		{"price not a number", "cart.cmd.c-1.add-item", item(1, `"abc"`), CodeInvalidPrice},
		{"items not an array", "cart.cmd.c-1.add-item", `{"id":"i","type":"add-item","cart_id":"c-1","items":{"item_code":"A"}}`, CodeMalformedJSON},
		{"items null", "cart.cmd.c-1.add-item", `{"id":"i","type":"add-item","cart_id":"c-1","items":null}`, CodeNoItems},
		{"items missing", "cart.cmd.c-1.add-item", `{"id":"i","type":"add-item","cart_id":"c-1"}`, CodeNoItems},
		{"item of the wrong type", "cart.cmd.c-1.add-item", `{"id":"i","type":"add-item","cart_id":"c-1","items":[{"item_code":"A","quantity":"1","unit_price":1}]}`, CodeMalformedJSON},
		{"no items", "cart.cmd.c-1.add-item", `{"id":"i","type":"add-item","cart_id":"c-1","items":[]}`, CodeNoItems},
		{"too many items", "cart.cmd.c-1.add-item", many, CodeTooManyItems},
		{"cart not an object", "cart.cmd.c-1.cache", `{"id":"i","type":"cache","cart_id":"c-1","cart":[1]}`, CodeInvalidCart},
		{"too large", "cart.cmd.c-1.delete", strings.Repeat(" ", MaxBodyBytes+1), CodeBodyTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Subjects{}.Decode(tt.subject, []byte(tt.body))
			var inv *InvalidError
			require.True(t, errors.As(err, &inv), "got %v", err)
			require.Equal(t, tt.code, inv.Code, inv.Reason)
		})
	}
}

func TestSubjects(t *testing.T) {
	s := Subjects{Prefix: "pos"}
	require.Equal(t, "pos.cmd.c-1.add-item", s.Command("c-1", TypeAddItem))
	require.Equal(t, "pos.evt.c-1.applied", s.Event("c-1", OutcomeApplied))
	require.Equal(t, "pos.dlq.c-1.cache", s.DeadLetter("c-1", "cache"))
	id, typ, ok := s.ParseCommand("pos.cmd.c-1.delete")
	require.True(t, ok)
	require.Equal(t, "c-1", id)
	require.Equal(t, "delete", typ)
	_, _, ok = s.ParseCommand("cart.cmd.c-1.delete")
	require.False(t, ok)
	require.Equal(t, "cart.cmd.>", Subjects{}.Commands())
}

func TestValidCartID(t *testing.T) {
	require.True(t, ValidCartID("A-z_09"))
	require.True(t, ValidCartID(strings.Repeat("a", 128)))
	require.False(t, ValidCartID(""))
	require.False(t, ValidCartID(strings.Repeat("a", 129)))
	require.False(t, ValidCartID("a.b"))
	require.False(t, ValidCartID("a*"))
}

func BenchmarkDecode(b *testing.B) {
	var s Subjects
	data := []byte(goodAdd)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Decode("cart.cmd.c-1.add-item", data); err != nil {
			b.Fatal(err)
		}
	}
}
