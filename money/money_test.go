package money

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseAndString(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"120", "120"},
		{"120.0", "120"},
		{"120.50", "120.5"},
		{"-3.25", "-3.25"},
		{"0.1", "0.1"},
		{"79.92000000000002", "79.92"},
		{"7.992e1", "79.92"},
		{"0.00005", "0"},      // half to even
		{"0.00015", "0.0002"}, // half to even
		{"1e3", "1000"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, err := Parse(tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.want, a.String())
		})
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, in := range []string{"", "abc", "1.2.3", "--1"} {
		_, err := Parse(in)
		require.Error(t, err, in)
	}
}

func TestParseLargeValues(t *testing.T) {
	a, err := Parse("99999999999999.9999") // the largest fast-path value
	require.NoError(t, err)
	require.Equal(t, "99999999999999.9999", a.String())
	a, err = Parse("900000000000000") // 15 digits: exact through big.Rat
	require.NoError(t, err)
	require.Equal(t, "900000000000000", a.String())
	for _, in := range []string{"99999999999999999", "-99999999999999999", "1e30"} {
		_, err := Parse(in)
		require.ErrorIs(t, err, ErrOverflow, in)
	}
}

func TestNoFloatDrift(t *testing.T) {
	// 0.1 added 1000 times is exactly 100; float64 gives 99.9999999999986.
	var sum Amount
	tenth, err := Parse("0.1")
	require.NoError(t, err)
	for i := 0; i < 1000; i++ {
		sum, err = sum.AddChecked(tenth)
		require.NoError(t, err)
	}
	require.Equal(t, "100", sum.String())
}

func TestMulDivFloor(t *testing.T) {
	tests := []struct {
		name        string
		a, num, den string
		want        string
	}{
		{"external 10%", "240", "10", "100", "24"},
		{"external 8%", "999", "8", "100", "79.92"},
		{"internal 10%", "1100", "10", "110", "100"},
		{"negative floors down", "-5", "1", "3", "-1.6667"},
		{"large", "900000000000", "10", "100", "90000000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := Parse(tt.a)
			n, _ := Parse(tt.num)
			d, _ := Parse(tt.den)
			got, err := a.MulDivFloor(n, d)
			require.NoError(t, err)
			require.Equal(t, tt.want, got.String())
		})
	}
}

func TestFloor(t *testing.T) {
	for in, want := range map[string]string{"79.92": "79", "-79.92": "-80", "24": "24", "-0.0001": "-1"} {
		got, err := mustParse(t, in).Floor()
		require.NoError(t, err, in)
		require.Equal(t, want, got.String(), in)
	}
	// The whole number below the smallest Amount does not exist.
	_, err := FromUnits(math.MinInt64).Floor()
	require.ErrorIs(t, err, ErrOverflow)
	got, err := FromUnits(math.MinInt64 + 5808).Floor()
	require.NoError(t, err)
	require.Equal(t, "-922337203685477", got.String())
}

func TestJSONRoundTrip(t *testing.T) {
	var v struct {
		A Amount `json:"a"`
		B Amount `json:"b"`
	}
	require.NoError(t, json.Unmarshal([]byte(`{"a": 120.0, "b": "3.5"}`), &v))
	out, err := json.Marshal(v)
	require.NoError(t, err)
	require.JSONEq(t, `{"a":120,"b":3.5}`, string(out))
}

func mustParse(t *testing.T, s string) Amount {
	t.Helper()
	a, err := Parse(s)
	require.NoError(t, err)
	return a
}
