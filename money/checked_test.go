package money

import (
	"math"
	"math/big"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	maxUnits = math.MaxInt64 // 922337203685477.5807
	minUnits = math.MinInt64 // -922337203685477.5808
)

func TestAddSubChecked(t *testing.T) {
	tests := []struct {
		name    string
		a, b    int64
		add     int64
		addOver bool
		sub     int64
		subOver bool
	}{
		{name: "small", a: 5, b: 3, add: 8, sub: 2},
		{name: "zero", a: maxUnits, b: 0, add: maxUnits, sub: maxUnits},
		{name: "to the top", a: maxUnits - 1, b: 1, add: maxUnits, sub: maxUnits - 2},
		{name: "past the top", a: maxUnits, b: 1, addOver: true, sub: maxUnits - 1},
		{name: "to the bottom", a: minUnits + 1, b: -1, add: minUnits, sub: minUnits + 2},
		{name: "past the bottom", a: minUnits, b: -1, addOver: true, sub: minUnits + 1},
		{name: "sub past the top", a: maxUnits, b: -1, add: maxUnits - 1, subOver: true},
		{name: "sub past the bottom", a: minUnits, b: 1, add: minUnits + 1, subOver: true},
		{name: "sub min from zero", a: 0, b: minUnits, add: minUnits, subOver: true},
		{name: "opposite extremes", a: maxUnits, b: minUnits, add: -1, subOver: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := FromUnits(tt.a), FromUnits(tt.b)
			got, err := a.AddChecked(b)
			if tt.addOver {
				require.ErrorIs(t, err, ErrOverflow)
				require.Zero(t, got.Units())
			} else {
				require.NoError(t, err)
				require.Equal(t, tt.add, got.Units())
			}
			got, err = a.SubChecked(b)
			if tt.subOver {
				require.ErrorIs(t, err, ErrOverflow)
				require.Zero(t, got.Units())
			} else {
				require.NoError(t, err)
				require.Equal(t, tt.sub, got.Units())
			}
		})
	}
}

func TestMulIntChecked(t *testing.T) {
	tests := []struct {
		name string
		a, n int64
		want int64
		over bool
	}{
		{name: "line", a: 999_999_999_999, n: 9999, want: 9_998_999_999_990_001},
		{name: "zero", a: maxUnits, n: 0, want: 0},
		{name: "negative", a: -3, n: 7, want: -21},
		{name: "max", a: maxUnits, n: 1, want: maxUnits},
		{name: "min", a: minUnits, n: 1, want: minUnits},
		{name: "min by -1", a: minUnits, n: -1, over: true},
		{name: "half of min", a: minUnits / 2, n: 2, want: minUnits},
		{name: "just past max", a: maxUnits/2 + 1, n: 2, over: true},
		{name: "high word", a: 1 << 40, n: 1 << 40, over: true},
		{name: "wraps to positive", a: 1 << 62, n: 4, over: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromUnits(tt.a).MulIntChecked(tt.n)
			if tt.over {
				require.ErrorIs(t, err, ErrOverflow)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Units())
		})
	}
}

// TestSumsUpToTheLimitAreExact adds the largest line an add-item can carry
// (9,999 × 100,000,000) until the next one would not fit: every partial sum
// is exact, the last one fits, and the one after is refused.
func TestSumsUpToTheLimitAreExact(t *testing.T) {
	line, err := FromInt(100_000_000).MulIntChecked(9999)
	require.NoError(t, err)
	var (
		sum  Amount
		want = new(big.Int)
		n    int
	)
	for {
		next, err := sum.AddChecked(line)
		want.Add(want, big.NewInt(line.Units()))
		if err != nil {
			require.ErrorIs(t, err, ErrOverflow)
			require.False(t, want.IsInt64(), "refused a sum that fits: %s", want)
			break
		}
		require.True(t, want.IsInt64())
		require.Equal(t, want.Int64(), next.Units(), "after %d lines", n+1)
		sum = next
		n++
	}
	require.Equal(t, 922, n)
	require.Equal(t, "921907800000000", sum.String())

	// Up to the last unit.
	top, err := sum.AddChecked(FromUnits(maxUnits - sum.Units()))
	require.NoError(t, err)
	require.Equal(t, "922337203685477.5807", top.String())
	_, err = top.AddChecked(FromUnits(1))
	require.ErrorIs(t, err, ErrOverflow)
	back, err := top.SubChecked(top)
	require.NoError(t, err)
	require.True(t, back.IsZero())
}

func TestParseBoundsTheWork(t *testing.T) {
	for _, in := range []string{
		"1e-999999",
		"1e999999",
		"-1E-41",
		"0e99",
		"1e" + strings.Repeat("9", 1<<20),
		"1" + strings.Repeat("0", 1<<20),
		"0." + strings.Repeat("0", 1<<20) + "1",
	} {
		for _, parse := range []func(string) (Amount, error){Parse, parseRound} {
			name := clip(in)
			var err error
			b := allocatedBytes(func() { _, err = parse(in) })
			require.ErrorIs(t, err, ErrInvalid, name)
			require.NotErrorIs(t, err, ErrOverflow, name)
			require.Less(t, len(err.Error()), 200, "the message quotes a clipped input")
			// Before the bounds, 1e-999999 alone allocated 3.3 MB.
			require.Less(t, b, uint64(4096), "%s allocated %d bytes", name, b)
		}
	}
	// The bounds themselves are accepted; the tiny ones have real digits
	// past Places, which only rounding accepts.
	for in, want := range map[string]string{
		"1e-40":                                  "0",
		"1e-" + strconv.Itoa(MaxExponent):        "0",
		"1e10":                                   "10000000000",
		"0.00001e+04":                            "0.1",
		strings.Repeat("0", MaxDigits-3) + "1.5": "1.5",
		"0." + strings.Repeat("0", MaxDigits-2) + "1e40": "10",
		"12345678901234567890.123456789012345678e-6":     "12345678901234.5679",
	} {
		got, err := parseRound(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got.String(), in)
		got, err = Parse(in)
		if want == "0" {
			require.ErrorIs(t, err, ErrPrecision, in)
			continue
		}
		require.NoError(t, err, in)
		require.Equal(t, want, got.String(), in)
	}
	_, err := Parse(strings.Repeat("1", MaxDigits+1))
	require.ErrorIs(t, err, ErrInvalid)
	_, err = Parse("1e400") // refused before as overflow, still refused
	require.ErrorIs(t, err, ErrInvalid)
	_, err = Parse("1e40")
	require.ErrorIs(t, err, ErrOverflow)
}

// TestParseRoundsFloatNoise: digits past Places are rounded half to even,
// by parseRound always, by Parse when they lie past the SignificantDigits-th
// significant digit (real marks those Parse refuses instead).
func TestParseRoundsFloatNoise(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		real     bool
	}{
		{"79.92000000000002", "79.92", false},
		{"0.30000000000000004", "0.3", false},
		{"1.0000000000000002", "1", false},
		{"99.99499999999999", "99.995", false},
		{"120.00005", "120", true},
		{"120.00015", "120.0002", true},
		{"-120.00015", "-120.0002", true},
		{"1.2345678901234567e-05", "0", true},
		{"1.5e-4", "0.0002", true},
		{"2.5e-4", "0.0002", true},
		{"7.992e1", "79.92", false},
		{"1e+21", "", false}, // overflow
		{"9.223372036854775807e14", "922337203685477.5807", false},
		{"-9.223372036854775808e14", "-922337203685477.5808", false},
		{"9.2233720368547758075e14", "", false}, // rounds past the top
	} {
		for _, strict := range []bool{false, true} {
			parse := parseRound
			if strict {
				parse = Parse
			}
			got, err := parse(tt.in)
			switch {
			case strict && tt.real:
				require.ErrorIs(t, err, ErrPrecision, tt.in)
			case tt.want == "":
				require.ErrorIs(t, err, ErrOverflow, tt.in)
			default:
				require.NoError(t, err, tt.in)
				require.Equal(t, tt.want, got.String(), tt.in)
			}
		}
		requireMatchesBig(t, tt.in)
	}
}

func TestParseMatchesBigRat(t *testing.T) {
	for _, in := range []string{
		"0", "-0", "+1", ".5", "5.", "-.00005", "0.00025", "0.00035", "123456789012345678",
		"1234567890123456789", "12345678901234567890", "99999999999999999999e-6",
		"0.1e1", "1e-5", "5e-5", "15e-5", "25e-5", "-25e-5", "922337203685477.58075",
		"922337203685477.58065", "-922337203685477.58085", "-922337203685477.58075",
		"100000000000000000000000000000000000000e-30", "3.14159265358979323846264338327950288",
	} {
		requireMatchesBig(t, in)
	}
}

func TestParseRejectsWhatIsNotADecimal(t *testing.T) {
	// big.Rat alone would take these as hexadecimal, binary, a fraction or
	// with digit separators; none is a JSON number or a price.
	for _, in := range []string{"0x10", "0b1", "1/3", "1_000", " 1", "1 ", "Inf", "NaN", "1e", "1e+", ".", "-", "+-1", "1.5.", "e5", ".e5"} {
		_, err := Parse(in)
		require.ErrorIs(t, err, ErrInvalid, in)
	}
}

// refParse is parseRound as it was before the bounds: exact, through
// big.Rat, for any input. Tests call it only on bounded input.
func refParse(s string) (Amount, bool, error) {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return Amount{}, false, nil
	}
	r.Mul(r, big.NewRat(scale, 1))
	n := roundHalfEven(r)
	if !n.IsInt64() {
		return Amount{}, true, ErrOverflow
	}
	return Amount{units: n.Int64()}, true, nil
}

// requireMatchesBig checks parseRound against refParse, and Parse against
// refParse and refWithinPlaces, on s.
func requireMatchesBig(t *testing.T, s string) {
	t.Helper()
	want, ok, wantErr := refParse(s)
	require.True(t, ok, "big.Rat refuses %q", s)
	got, err := parseRound(s)
	strict, strictErr := Parse(s)
	if !refWithinPlaces(s) {
		require.ErrorIs(t, strictErr, ErrPrecision, s)
	}
	if wantErr != nil {
		require.ErrorIs(t, err, ErrOverflow, s)
		if refWithinPlaces(s) {
			require.ErrorIs(t, strictErr, ErrOverflow, s)
		}
		return
	}
	require.NoError(t, err, s)
	require.Equal(t, want, got, "%s: want %s, got %s", s, want, got)
	if refWithinPlaces(s) {
		require.NoError(t, strictErr, s)
		require.Equal(t, want, strict, s)
	}
}

// refWithinPlaces is Parse's rule for real digits through big.Rat: the
// decimal s, rounded half to even to SignificantDigits significant digits,
// has at most Places decimals. s must be a bounded decimal.
func refWithinPlaces(s string) bool {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return false
	}
	r.Abs(r)
	if r.Sign() == 0 {
		return true
	}
	// 10^e ≤ r < 10^(e+1); the bounds keep e within a hundred or so.
	ten := big.NewRat(10, 1)
	p, e := big.NewRat(1, 1), 0
	for r.Cmp(p) < 0 {
		p.Quo(p, ten)
		e--
	}
	for next := new(big.Rat).Mul(p, ten); r.Cmp(next) >= 0; next = new(big.Rat).Mul(p, ten) {
		p = next
		e++
	}
	// The last kept digit's place is 10^(e-SignificantDigits+1).
	unit := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(e-SignificantDigits+1))), nil))
	if e-SignificantDigits+1 < 0 {
		unit.Inv(unit)
	}
	kept := new(big.Rat).SetInt(roundHalfEven(new(big.Rat).Quo(r, unit)))
	kept.Mul(kept, unit)
	return kept.Mul(kept, big.NewRat(scale, 1)).IsInt()
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// decimalRE is the syntax Parse accepts.
var decimalRE = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?([0-9]+))?$`)

// withinBounds reports whether s is a decimal inside MaxDigits and
// MaxExponent, which Parse must then not refuse as invalid.
func withinBounds(s string) bool {
	m := decimalRE.FindStringSubmatch(s)
	if m == nil {
		return false
	}
	digits := strings.Count(m[1], "") - 1 - strings.Count(m[1], ".")
	if digits > MaxDigits {
		return false
	}
	if m[3] == "" {
		return true
	}
	e := strings.TrimLeft(m[3], "0")
	if len(e) > 3 {
		return false
	}
	n, err := strconv.Atoi("0" + e)
	return err == nil && n <= MaxExponent
}

// allocatedBytes returns the bytes f allocates, on average over a few runs:
// a measure of its work that does not depend on the machine's speed.
func allocatedBytes(f func()) uint64 {
	const runs = 4
	f() // warm up lazily initialised state
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs
}

func BenchmarkParse(b *testing.B) {
	for _, s := range []string{"120", "79.92000000000002", "12345678901234567890.5", "1e-999999"} {
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Parse(s)
			}
		})
	}
}

func TestFloat64Exact(t *testing.T) {
	for in, want := range map[string]bool{
		"0":                    true,
		"79.92":                true,
		"549755813887.9999":    true, // just under 2^39
		"999899999999.0001":    true, // past it, and its digits fit
		"123456789012.3456":    true,
		"922337203685477":      true, // whole: under 2^53
		"-922337203685477":     true,
		"99989999999900.01":    false, // becomes …900.02
		"799919999999200.08":   false, // becomes …200.1, as daprd stored it
		"922337203685477.5807": false, // becomes …477.6
	} {
		a := mustParse(t, in)
		require.Equal(t, want, a.Float64Exact(), in)
		require.Equal(t, want, a.float64RoundTrips(), in)
	}
}

// FuzzFloat64Exact checks Float64Exact's shortcut against the round trip
// itself.
func FuzzFloat64Exact(f *testing.F) {
	for _, u := range []int64{0, 1, -1, float64ExactUnits - 1, -(float64ExactUnits - 1), float64ExactUnits,
		maxUnits, minUnits, 9_998_999_999_990_001, 7_999_199_999_992_000_800} {
		f.Add(u)
	}
	f.Fuzz(func(t *testing.T, u int64) {
		a := FromUnits(u)
		if a.Float64Exact() != a.float64RoundTrips() {
			t.Fatalf("%s: Float64Exact %v, round trip %v", a, a.Float64Exact(), a.float64RoundTrips())
		}
		// Down to 2^39, the shortcut alone decides; check it over the
		// whole range by scaling u into it.
		b := FromUnits(u % float64ExactUnits)
		if !b.float64RoundTrips() {
			t.Fatalf("%s is under 2^39 but does not survive a float64", b)
		}
	})
}
