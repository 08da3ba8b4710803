package command

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// tinyPriceItem is an item whose price, 10^-999999, once cost 30 ms and
// 3 MB to convert exactly.
const tinyPriceItem = `{"item_code":"A","quantity":1,"unit_price":1e-999999}`

// addItemBody returns an add-item for cart c-1 carrying n copies of item.
func addItemBody(n int, item string) []byte {
	return []byte(`{"id":"i","type":"add-item","cart_id":"c-1","items":[` +
		strings.TrimSuffix(strings.Repeat(item+",", n), ",") + `]}`)
}

func requireCode(t *testing.T, err error, code string) *InvalidError {
	t.Helper()
	var inv *InvalidError
	require.True(t, errors.As(err, &inv), "got %v", err)
	require.Equal(t, code, inv.Code, inv.Reason)
	return inv
}

// TestDecodeCountsItemsBeforeDecodingThem: an add-item with too many items
// is refused before any item is decoded. The work is measured by
// allocations, not time: decoding the items allocated at least once per
// item (20,206 allocations and 1.3 GB for 400 of these), counting them
// allocates nothing per item.
func TestDecodeCountsItemsBeforeDecodingThem(t *testing.T) {
	perMiB := MaxBodyBytes / (len(tinyPriceItem) + 1)
	for _, n := range []int{MaxItems + 1, 400, perMiB - 2} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			body := addItemBody(n, tinyPriceItem)
			require.LessOrEqual(t, len(body), MaxBodyBytes)
			var err error
			allocs := testing.AllocsPerRun(3, func() {
				_, err = Subjects{}.Decode("cart.cmd.c-1.add-item", body)
			})
			inv := requireCode(t, err, CodeTooManyItems)
			require.Contains(t, inv.Reason, strconv.Itoa(n)+" items")
			require.Less(t, allocs, 64.0, "decoding %d refused items allocated %v times", n, allocs)
		})
	}
}

// TestDecodeRefusesTinyPriceCheaply: one item priced 1e-999999 is an
// invalid_price naming the item, and converting it allocates next to
// nothing.
func TestDecodeRefusesTinyPriceCheaply(t *testing.T) {
	body := addItemBody(3, `{"item_code":"A","quantity":1,"unit_price":1}`)
	body = []byte(strings.Replace(string(body), `"unit_price":1}]`, `"unit_price":1e-999999}]`, 1))
	var err error
	allocs := testing.AllocsPerRun(3, func() {
		_, err = Subjects{}.Decode("cart.cmd.c-1.add-item", body)
	})
	inv := requireCode(t, err, CodeInvalidPrice)
	require.Contains(t, inv.Reason, "items[2]")
	require.Contains(t, inv.Reason, "exponent")
	require.Less(t, allocs, 100.0)
}

// TestDecodeCountsItemsExactly: commas, brackets, braces and escaped
// quotes inside strings and nested values do not fool the count.
func TestDecodeCountsItemsExactly(t *testing.T) {
	tricky := `{"item_code":"A,\"]},[{","quantity":1,"unit_price":1,"description":"x\\","extra":[1,{"a":[2,3]}]}`
	c, err := Subjects{}.Decode("cart.cmd.c-1.add-item", addItemBody(MaxItems, tricky))
	require.NoError(t, err)
	require.Len(t, c.Items, MaxItems)
	require.Equal(t, `A,"]},[{`, c.Items[MaxItems-1].ItemCode)
	require.Equal(t, `x\`, c.Items[0].Description)

	_, err = Subjects{}.Decode("cart.cmd.c-1.add-item", addItemBody(MaxItems+1, tricky))
	requireCode(t, err, CodeTooManyItems)

	for raw, want := range map[string]int{
		``: 0, `null`: 0, `[]`: 0, ` [ ] `: 0, `[1]`: 1, `[[1,2],{"a":","}]`: 2, `["\\",","]`: 2, ` [ {} , {} , {} ] `: 3,
	} {
		n, err := countElements([]byte(raw))
		require.NoError(t, err, raw)
		require.Equal(t, want, n, raw)
	}
	for _, raw := range []string{`{}`, `1`, `"[]"`} {
		_, err := countElements([]byte(raw))
		require.Error(t, err, raw)
	}
}

// TestDecodeIgnoresItemsOfOtherTypes: only an add-item's items are
// decoded; on other types they cost a syntax check and nothing more.
func TestDecodeIgnoresItemsOfOtherTypes(t *testing.T) {
	body := strings.Replace(string(addItemBody(1000, tinyPriceItem)), `"type":"add-item"`, `"type":"delete"`, 1)
	c, err := Subjects{}.Decode("cart.cmd.c-1.delete", []byte(body))
	require.NoError(t, err)
	require.Nil(t, c.Items)
	require.Equal(t, TypeDelete, c.Type)
}

// BenchmarkDecodeTinyPrices decodes the 400-item body of 1e-999999 prices
// that once took 12.8 s and 1.3 GB per decode.
func BenchmarkDecodeTinyPrices(b *testing.B) {
	for _, n := range []int{400, MaxBodyBytes/(len(tinyPriceItem)+1) - 2} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			body := addItemBody(n, tinyPriceItem)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := (Subjects{}).Decode("cart.cmd.c-1.add-item", body); err == nil {
					b.Fatal("decoded")
				}
			}
		})
	}
}

// BenchmarkDecodeFullAddItem decodes an ordinary add-item of MaxItems
// items, the largest a valid command carries.
func BenchmarkDecodeFullAddItem(b *testing.B) {
	body := addItemBody(MaxItems, `{"item_code":"ITEM001","quantity":2,"unit_price":120.5,"description":"Coffee","tax_code":"01"}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := (Subjects{}).Decode("cart.cmd.c-1.add-item", body); err != nil {
			b.Fatal(err)
		}
	}
}
