package money

import (
	"errors"
	"math/big"
	"strings"
	"testing"
)

// FuzzParse checks that Parse and parseRound never panic, that String is a
// fixed point (what it prints parses back to the same amount), and that on
// every decimal inside the bounds they agree with exact big.Rat arithmetic:
// parseRound rounds as it does, and Parse does the same except that it
// refuses, with ErrPrecision, exactly the decimals with real digits past
// Places (refWithinPlaces).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"0", "120", "-3.25", "79.92000000000002", "0.30000000000000004", "1e3", "0.00005", "0.00015",
		"1.23456", "1.2345", "99.99499999999999", "100000000.00001", "1.23450000000001", "1.234500000000001",
		"0.99999999999999999", "9.99999999999999e-5", "9.999999999999999e-5", "123456789012.34567",
		"9223372036854775807", "99999999999999999", "922337203685477.5807", "-922337203685477.5808",
		"1e-999999", "1e999999", "1e400", "1e40", "1e-40", "1e41", "0x10", "1/3", ".5", "5.", "+.5e+3",
		strings.Repeat("9", MaxDigits), strings.Repeat("9", MaxDigits+1), "0." + strings.Repeat("0", 38) + "1e40",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseRound(s)
		strict, strictErr := Parse(s)
		switch {
		case !withinBounds(s):
		case !refWithinPlaces(s):
			if !errors.Is(strictErr, ErrPrecision) {
				t.Fatalf("Parse(%q) = %s, %v; want ErrPrecision: real digits past %d places", s, strict, strictErr, Places)
			}
		case strictErr != nil || err != nil:
			if !errors.Is(strictErr, ErrOverflow) || !errors.Is(err, ErrOverflow) {
				t.Fatalf("Parse(%q) = %v, parseRound %v: want both to overflow or neither", s, strictErr, err)
			}
		case strict != a:
			t.Fatalf("Parse(%q) = %s, parseRound %s", s, strict, a)
		}
		if withinBounds(s) {
			want, ok, wantErr := refParse(s)
			switch {
			case !ok:
				t.Fatalf("big.Rat refuses %q, which the test takes as a decimal", s)
			case wantErr != nil && !errors.Is(err, ErrOverflow):
				t.Fatalf("parseRound(%q) = %s, %v; want ErrOverflow", s, a, err)
			case wantErr == nil && (err != nil || a != want):
				t.Fatalf("parseRound(%q) = %s, %v; want %s", s, a, err, want)
			}
		} else if err == nil && !decimalRE.MatchString(s) {
			t.Fatalf("parseRound(%q) = %s, want an error: not a decimal", s, a)
		}
		if strictErr != nil && !errors.Is(strictErr, ErrInvalid) && !errors.Is(strictErr, ErrOverflow) &&
			!errors.Is(strictErr, ErrPrecision) {
			t.Fatalf("Parse(%q): %v wraps none of ErrInvalid, ErrOverflow and ErrPrecision", s, strictErr)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrOverflow) {
				t.Fatalf("parseRound(%q): %v wraps neither ErrInvalid nor ErrOverflow", s, err)
			}
			return
		}
		b, err := Parse(a.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %s, which does not parse back: %v", s, a, err)
		}
		if a != b {
			t.Fatalf("Parse(%q) = %s, reparsed as %s", s, a, b)
		}
	})
}

// FuzzChecked compares AddChecked, SubChecked, MulIntChecked, MulDivFloor
// and Floor with math/big: each either returns the exact result or
// ErrOverflow exactly when that result does not fit.
func FuzzChecked(f *testing.F) {
	const max, min = int64(^uint64(0) >> 1), -int64(^uint64(0)>>1) - 1
	for _, s := range [][3]int64{
		{0, 0, 0}, {1, -1, 7}, {max, 1, 2}, {min, -1, -1}, {min, 1, 1}, {max, min, 3},
		{999_899_999_999_0001, 99_989_999_999_900_0100, 9999}, {1 << 62, 1 << 62, 4},
		{min / 2, 2, 1_000_000}, {-5, 10_000, 30_000}, {max / 2, 2, 1},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, a, b, n int64) {
		x, y := FromUnits(a), FromUnits(b)
		check := func(op string, got Amount, err error, want *big.Int) {
			t.Helper()
			if want.IsInt64() {
				if err != nil || got.Units() != want.Int64() {
					t.Fatalf("%s(%d, %d, %d) = %d, %v; want %s", op, a, b, n, got.Units(), err, want)
				}
				return
			}
			if !errors.Is(err, ErrOverflow) {
				t.Fatalf("%s(%d, %d, %d) = %d, %v; want ErrOverflow (exact %s)", op, a, b, n, got.Units(), err, want)
			}
		}
		ba, bb, bn := big.NewInt(a), big.NewInt(b), big.NewInt(n)
		got, err := x.AddChecked(y)
		check("add", got, err, new(big.Int).Add(ba, bb))
		got, err = x.SubChecked(y)
		check("sub", got, err, new(big.Int).Sub(ba, bb))
		got, err = x.MulIntChecked(n)
		check("mul", got, err, new(big.Int).Mul(ba, bn))
		got, err = x.Floor()
		check("floor", got, err, new(big.Int).Mul(floorDiv(ba, big.NewInt(scale)), big.NewInt(scale)))
		if n > 0 {
			got, err = x.MulDivFloor(y, FromUnits(n))
			q := floorDiv(new(big.Int).Mul(ba, bb), bn)
			// MulDivFloor may refuse the smallest Amount itself, whose
			// magnitude a positive int64 does not hold: a refusal, never a
			// wrong value.
			if !(q.IsInt64() && q.Int64() == min && errors.Is(err, ErrOverflow)) {
				check("muldiv", got, err, q)
			}
		}
	})
}

// floorDiv is ⌊x / y⌋ for y > 0.
func floorDiv(x, y *big.Int) *big.Int {
	q, _ := new(big.Int).DivMod(x, y, new(big.Int)) // Euclidean, so floor for y > 0
	return q
}
