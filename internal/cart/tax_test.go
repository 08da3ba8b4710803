package cart_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/cart"
)

// The worker parses CART_TAX_TABLE, whose default is
// DefaultTaxTable().String(), while a zero Config takes DefaultTaxTable()
// itself: the two must be the same table down to the tax names, or tests and
// production write different tax_name values into carts.
func TestDefaultTaxTableSurvivesItsString(t *testing.T) {
	def := cart.DefaultTaxTable()
	parsed, err := cart.ParseTaxTable(def.String())
	require.NoError(t, err)
	require.Equal(t, def, parsed)
}

func TestParseTaxTable(t *testing.T) {
	tt, err := cart.ParseTaxTable("00:exempt:0, 01:External:10,02:internal:10,11:external:8,12:internal:8")
	require.NoError(t, err)
	require.Equal(t, cart.DefaultTaxTable().String(), tt.String())
	for _, bad := range []string{"01:external", "01:vat:10", "01:external:-1", "01:external:x", ":external:1", "01:external:1,01:internal:2"} {
		_, err := cart.ParseTaxTable(bad)
		require.Error(t, err, bad)
	}
}
