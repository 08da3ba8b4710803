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
		{"0.30000000000000004", "0.3"}, // float64 noise, rounded
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

// TestUnmarshalJSONRounds: a stored document's amounts are rounded half to
// even at Places, real digits included, where Parse refuses them.
func TestUnmarshalJSONRounds(t *testing.T) {
	for in, want := range map[string]string{
		"0.00005": "0", "0.00015": "0.0002", "120.00005": "120", `"1.23456"`: "1.2346",
		"90.9090909090909": "90.9091", "79.92000000000002": "79.92",
	} {
		var a Amount
		require.NoError(t, json.Unmarshal([]byte(in), &a), in)
		require.Equal(t, want, a.String(), in)
	}
}

func mustParse(t *testing.T, s string) Amount {
	t.Helper()
	a, err := Parse(s)
	require.NoError(t, err)
	return a
}

// TestParseRefusesRealDigits: a digit past Places is refused unless it lies
// past the SignificantDigits-th significant digit, where a float64 printed
// in full puts its noise.
func TestParseRefusesRealDigits(t *testing.T) {
	for _, in := range []string{
		"1.23456", "0.00005", "0.00015", "-0.00001", "1e-5", "1.5e-4", "99999999.99999", "100000000.00001",
		"1.23450000000001",  // 15 significant digits: all real
		"99.9999999999986",  // 0.1 summed 1000 times: drift, not one rounding
		"0.000012345678901", // 1.2345678901e-05
		"12345678.123456789",
	} {
		_, err := Parse(in)
		require.ErrorIs(t, err, ErrPrecision, in)
		require.ErrorContains(t, err, in)
	}
	for in, want := range map[string]string{
		"1.2345":                "1.2345",
		"120.50000":             "120.5",
		"12345e-4":              "1.2345",
		"99999999.9999":         "99999999.9999",
		"1.234500000000001":     "1.2345", // 16 significant digits: the last is noise
		"0.30000000000000004":   "0.3",
		"3.3000000000000003":    "3.3", // 1.1 * 3
		"59.970000000000006":    "59.97",
		"0.99999999999999999":   "1",
		"9.999999999999999e-5":  "0.0001",
		"1234567890123.4567891": "1234567890123.4568", // past 10^11 the 15th digit is at or above Places
	} {
		got, err := Parse(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got.String(), in)
	}
}
