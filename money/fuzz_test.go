package money

import (
	"errors"
	"math/big"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that String is a fixed point
// (what it prints parses back to the same amount), and that on every
// decimal inside the bounds it agrees with exact big.Rat arithmetic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"0", "120", "-3.25", "79.92000000000002", "0.30000000000000004", "1e3", "0.00005", "0.00015",
		"9223372036854775807", "99999999999999999", "922337203685477.5807", "-922337203685477.5808",
		"1e-999999", "1e999999", "1e400", "1e40", "1e-40", "1e41", "0x10", "1/3", ".5", "5.", "+.5e+3",
		strings.Repeat("9", MaxDigits), strings.Repeat("9", MaxDigits+1), "0." + strings.Repeat("0", 38) + "1e40",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if withinBounds(s) {
			want, ok, wantErr := refParse(s)
			switch {
			case !ok:
				t.Fatalf("big.Rat refuses %q, which the test takes as a decimal", s)
			case wantErr != nil && !errors.Is(err, ErrOverflow):
				t.Fatalf("Parse(%q) = %s, %v; want ErrOverflow", s, a, err)
			case wantErr == nil && (err != nil || a != want):
				t.Fatalf("Parse(%q) = %s, %v; want %s", s, a, err, want)
			}
		} else if err == nil && !decimalRE.MatchString(s) {
			t.Fatalf("Parse(%q) = %s, want an error: not a decimal", s, a)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrOverflow) {
				t.Fatalf("Parse(%q): %v wraps neither ErrInvalid nor ErrOverflow", s, err)
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
