package command

import (
	"errors"
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

// TestDecodeExamples checks Decode's verdict on every example: its code,
// and the words of its reason where the example gives them.
func TestDecodeExamples(t *testing.T) {
	for _, ex := range examples() {
		t.Run(ex.name, func(t *testing.T) {
			_, err := Subjects{}.Decode(ex.subject, []byte(ex.body))
			if ex.code == "" {
				require.NoError(t, err)
				return
			}
			var inv *InvalidError
			require.True(t, errors.As(err, &inv), "got %v", err)
			require.Equal(t, ex.code, inv.Code, inv.Reason)
			require.Contains(t, inv.Reason, ex.reason)
			require.NotContains(t, inv.Reason, "Go ", "a reason speaks the contract, not Go")
			require.NotContains(t, inv.Reason, "json: ")
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
