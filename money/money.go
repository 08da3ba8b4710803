// Package money is an exact decimal amount for cart arithmetic.
//
// Upstream stores amounts as JSON numbers produced by Python floats, so a
// stored cart may hold 79.92000000000002. Accumulating such values as float64
// drifts; Amount instead keeps a fixed number of decimal places in an int64
// and rounds on the way in, so sums and products are exact.
package money

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"strconv"
	"strings"
)

// Places is the number of decimal places an Amount keeps. Four covers every
// ISO currency's minor unit with room for unit prices finer than that.
const Places = 4

// scale is 10^Places.
const scale = 10_000

// ErrOverflow is returned when a value or a result does not fit an Amount.
var ErrOverflow = errors.New("money: overflow")

// Amount is a decimal value with Places decimal places. The zero value is 0.
// It marshals to and from a plain JSON number.
type Amount struct {
	units int64 // value × scale
}

// FromInt returns n whole units.
func FromInt(n int64) Amount { return Amount{units: n * scale} }

// FromUnits returns the Amount whose value is units / 10^Places.
func FromUnits(units int64) Amount { return Amount{units: units} }

// Units returns the value × 10^Places.
func (a Amount) Units() int64 { return a.units }

// Add returns a + b.
func (a Amount) Add(b Amount) Amount { return Amount{units: a.units + b.units} }

// Sub returns a − b.
func (a Amount) Sub(b Amount) Amount { return Amount{units: a.units - b.units} }

// MulInt returns a × n.
func (a Amount) MulInt(n int64) Amount { return Amount{units: a.units * n} }

// IsNegative reports whether a < 0.
func (a Amount) IsNegative() bool { return a.units < 0 }

// IsZero reports whether a == 0.
func (a Amount) IsZero() bool { return a.units == 0 }

// Floor returns a rounded down to whole units.
func (a Amount) Floor() Amount {
	q := a.units / scale
	if a.units%scale < 0 {
		q--
	}
	return Amount{units: q * scale}
}

// MulDivFloor returns floor(a × num / den) in units of 10^-Places, exactly,
// with a 128-bit intermediate so large carts at high rates cannot overflow.
// den must be positive.
func (a Amount) MulDivFloor(num, den Amount) (Amount, error) {
	if den.units <= 0 {
		return Amount{}, fmt.Errorf("money: non-positive divisor %s", den)
	}
	neg := (a.units < 0) != (num.units < 0)
	x, y := abs64(a.units), abs64(num.units)
	hi, lo := bits.Mul64(x, y)
	d := uint64(den.units)
	if hi >= d {
		return Amount{}, ErrOverflow
	}
	q, r := bits.Div64(hi, lo, d)
	if q > math.MaxInt64 {
		return Amount{}, ErrOverflow
	}
	v := int64(q)
	if neg {
		v = -v
		if r != 0 {
			v-- // floor toward −∞
		}
	}
	return Amount{units: v}, nil
}

func abs64(v int64) uint64 {
	if v < 0 {
		return uint64(-v)
	}
	return uint64(v)
}

// String formats a as a plain decimal without trailing zeros: "264", "120.5".
func (a Amount) String() string {
	return string(a.AppendText(nil))
}

// AppendText appends the String form of a to b.
func (a Amount) AppendText(b []byte) []byte {
	u := a.units
	if u < 0 {
		b = append(b, '-')
	}
	x := abs64(u)
	b = strconv.AppendUint(b, x/scale, 10)
	frac := x % scale
	if frac == 0 {
		return b
	}
	var digits [Places]byte
	for i := Places - 1; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := Places
	for n > 0 && digits[n-1] == '0' {
		n--
	}
	b = append(b, '.')
	return append(b, digits[:n]...)
}

// MarshalJSON encodes a as a JSON number.
func (a Amount) MarshalJSON() ([]byte, error) { return a.AppendText(nil), nil }

// UnmarshalJSON decodes a JSON number (or a numeric string), rounding half to
// even at Places decimal places.
func (a *Amount) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	s = strings.Trim(s, `"`)
	v, err := Parse(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Parse reads a decimal such as "120", "-3.5" or "7.992e1", rounding half to
// even at Places decimal places.
func Parse(s string) (Amount, error) {
	if v, ok := parseFast(s); ok {
		return v, nil
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return Amount{}, fmt.Errorf("money: invalid amount %q", s)
	}
	r.Mul(r, big.NewRat(scale, 1))
	n := roundHalfEven(r)
	if !n.IsInt64() {
		return Amount{}, ErrOverflow
	}
	return Amount{units: n.Int64()}, nil
}

// parseFast handles the common "123" and "123.45" forms without big.Rat.
func parseFast(s string) (Amount, bool) {
	if s == "" || len(s) > 18 {
		return Amount{}, false
	}
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	intPart, fracPart, _ := strings.Cut(s, ".")
	// 14 integer digits times 10^Places still fits an int64; longer numbers
	// take the big.Rat path, which reports overflow instead of wrapping.
	if intPart == "" || len(intPart) > 14 || len(fracPart) > Places {
		return Amount{}, false
	}
	var v int64
	for _, c := range intPart {
		if c < '0' || c > '9' {
			return Amount{}, false
		}
		v = v*10 + int64(c-'0')
	}
	for i := 0; i < Places; i++ {
		v *= 10
		if i < len(fracPart) {
			c := fracPart[i]
			if c < '0' || c > '9' {
				return Amount{}, false
			}
			v += int64(c - '0')
		}
	}
	if neg {
		v = -v
	}
	return Amount{units: v}, true
}

func roundHalfEven(r *big.Rat) *big.Int {
	num, den := r.Num(), r.Denom()
	q, m := new(big.Int).QuoRem(num, den, new(big.Int))
	if m.Sign() == 0 {
		return q
	}
	// Compare 2|m| with den to decide the rounding direction.
	twice := new(big.Int).Abs(m)
	twice.Lsh(twice, 1)
	c := twice.Cmp(den)
	if c > 0 || (c == 0 && q.Bit(0) == 1) {
		if num.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	return q
}
