// Package money is an exact decimal amount for cart arithmetic.
//
// Upstream stores amounts as JSON numbers produced by Python floats, so a
// stored cart may hold 79.92000000000002. Accumulating such values as float64
// drifts; Amount instead keeps a fixed number of decimal places in an int64
// and rounds on the way in, so sums and products are exact.
//
// Arithmetic is checked: AddChecked, SubChecked, MulIntChecked, MulDivFloor
// and Floor return ErrOverflow instead of wrapping around. There is no
// unchecked variant, so a cart total cannot come out wrong by picking the
// wrong method. An int64 with four places holds ±922,337,203,685,477.5807,
// hundreds of trillions past any real cart, so a result outside it is
// refused rather than held in a wider type: a wider type would change the
// stored JSON numbers' contract and cost every sum on the hot path a
// multi-word addition, for values no real cart reaches.
//
// The stored JSON numbers are in practice float64s (daprd re-encodes every
// number it saves, upstream reads Python floats), which keep fewer digits
// than an Amount: Float64Exact tells whether a value survives that.
//
// Reading is exact or refused too. Parse, which reads a price a publisher
// sends, refuses a number with real digits past Places decimal places
// (1.23456) with ErrPrecision instead of rounding them away, and rounds
// only float64 noise: the digits past the SignificantDigits-th significant
// one, which a float64 cannot hold faithfully (0.30000000000000004 is 0.3,
// as 0.1 + 0.2 prints it). UnmarshalJSON, which reads the amounts of
// stored documents written by float64 programs, rounds every digit past
// Places, since those carry real ones (a third of a discount) that must
// not make a cart unreadable.
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

// Bounds on what Parse reads. Without them a number such as 1e-999999 makes
// the exact arithmetic compute 10^999999 (30 ms and 3 MB for one price), and
// a 1 MiB command holds twenty thousand of them. Float64 values print in at
// most 17 significant digits and with exponents far inside these bounds,
// and no price comes near them, so real input never meets them.
const (
	// MaxDigits is the most digits Parse accepts before the exponent,
	// leading and trailing zeros included.
	MaxDigits = 40
	// MaxExponent is the largest |exponent| Parse accepts, as in 1e40.
	MaxExponent = 40
)

var (
	// ErrOverflow is returned when a value or a result does not fit an
	// Amount.
	ErrOverflow = errors.New("money: overflow")
	// ErrInvalid is returned by Parse for text that is not a decimal number
	// or that lies beyond MaxDigits or MaxExponent.
	ErrInvalid = errors.New("money: invalid amount")
	// ErrPrecision is returned by Parse for a number with real digits past
	// Places decimal places, such as 1.23456: rounding them would change
	// the amount its sender meant.
	ErrPrecision = errors.New("money: more than 4 decimal places")
)

// SignificantDigits is how many significant digits of a decimal are taken
// as written; Parse rounds those past it as float64 noise. It is DBL_DIG:
// every decimal of at most 15 significant digits reads into a float64 and
// prints back unchanged, so those digits are the sender's, while the 16th
// and 17th of a float64 printed in full (0.30000000000000004) are the
// error of its binary arithmetic. A sender's price therefore has at most
// Places decimals once rounded to 15 significant digits, whatever language
// printed it.
const SignificantDigits = 15

// Amount is a decimal value with Places decimal places. The zero value is 0.
// It marshals to and from a plain JSON number.
type Amount struct {
	units int64 // value × scale
}

// FromInt returns n whole units. It is meant for constants such as rates and
// limits: n must lie within ±922,337,203,685 (math.MaxInt64 / 10^Places),
// beyond which the result is meaningless.
func FromInt(n int64) Amount { return Amount{units: n * scale} }

// FromUnits returns the Amount whose value is units / 10^Places.
func FromUnits(units int64) Amount { return Amount{units: units} }

// Units returns the value × 10^Places.
func (a Amount) Units() int64 { return a.units }

// AddChecked returns a + b, or ErrOverflow when the sum does not fit.
func (a Amount) AddChecked(b Amount) (Amount, error) {
	s := a.units + b.units
	// Go integers wrap; the sum moved the wrong way exactly when it did.
	if (s > a.units) != (b.units > 0) {
		return Amount{}, fmt.Errorf("%w: %s + %s", ErrOverflow, a, b)
	}
	return Amount{units: s}, nil
}

// SubChecked returns a − b, or ErrOverflow when the difference does not fit.
func (a Amount) SubChecked(b Amount) (Amount, error) {
	d := a.units - b.units
	if (d < a.units) != (b.units > 0) {
		return Amount{}, fmt.Errorf("%w: %s - %s", ErrOverflow, a, b)
	}
	return Amount{units: d}, nil
}

// MulIntChecked returns a × n, or ErrOverflow when the product does not fit.
func (a Amount) MulIntChecked(n int64) (Amount, error) {
	neg := (a.units < 0) != (n < 0)
	hi, lo := bits.Mul64(abs64(a.units), abs64(n))
	if hi != 0 || lo > maxMagnitude(neg) {
		return Amount{}, fmt.Errorf("%w: %s × %d", ErrOverflow, a, n)
	}
	return Amount{units: signed(lo, neg)}, nil
}

// float64ExactUnits bounds the Amounts every float64 holds exactly: below
// 2^39 whole units a float64's spacing is under 10^-Places, so each Amount
// has a float64 of its own and prints back as itself.
const float64ExactUnits = 1 << 39 * scale

// Float64Exact reports whether a survives a float64 round trip: read as the
// nearest float64 and printed back in the shortest form that identifies it,
// as encoding/json, daprd's state API (which re-encodes every JSON number it
// stores) and upstream's Python floats all do. Every Amount under
// 549,755,813,888 (2^39) in magnitude does, and so does every whole amount
// (they are under 2^53); beyond that it depends on the digits:
// 799,919,999,999,200.08 comes back as 799,919,999,999,200.1.
func (a Amount) Float64Exact() bool {
	x := abs64(a.units)
	if x < float64ExactUnits || a.units%scale == 0 {
		return true
	}
	return a.float64RoundTrips()
}

// float64RoundTrips is Float64Exact without its shortcut.
func (a Amount) float64RoundTrips() bool {
	var buf [32]byte
	f, err := strconv.ParseFloat(string(a.AppendText(buf[:0])), 64)
	if err != nil {
		return false
	}
	b, err := parseRound(strconv.FormatFloat(f, 'f', -1, 64))
	return err == nil && b == a
}

// IsNegative reports whether a < 0.
func (a Amount) IsNegative() bool { return a.units < 0 }

// IsZero reports whether a == 0.
func (a Amount) IsZero() bool { return a.units == 0 }

// Floor returns a rounded down to whole units, or ErrOverflow when that
// whole number lies below the smallest Amount.
func (a Amount) Floor() (Amount, error) {
	q := a.units / scale
	if a.units%scale < 0 {
		q--
	}
	if q < math.MinInt64/scale {
		return Amount{}, fmt.Errorf("%w: floor of %s", ErrOverflow, a)
	}
	return Amount{units: q * scale}, nil
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
		return Amount{}, fmt.Errorf("%w: %s × %s / %s", ErrOverflow, a, num, den)
	}
	q, r := bits.Div64(hi, lo, d)
	if q > math.MaxInt64 {
		return Amount{}, fmt.Errorf("%w: %s × %s / %s", ErrOverflow, a, num, den)
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

// maxMagnitude is the largest |units| an Amount of the given sign holds:
// two's complement has one more negative value than positive ones.
func maxMagnitude(neg bool) uint64 {
	if neg {
		return 1 << 63
	}
	return math.MaxInt64
}

// signed returns ±m; m must be at most maxMagnitude(neg).
func signed(m uint64, neg bool) int64 {
	if neg {
		return int64(-m) // -(1<<63) wraps to math.MinInt64, as wanted
	}
	return int64(m)
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
// even at Places decimal places, real digits included: it reads stored
// documents, whose amounts float64 programs computed (see the package
// documentation). Its errors wrap ErrInvalid or ErrOverflow. A price a
// publisher sends is read with Parse instead, which refuses real digits
// past Places.
func (a *Amount) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	s = strings.Trim(s, `"`)
	v, err := parseRound(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Parse reads a decimal such as "120", "-3.5" or "7.992e1" exactly. It
// refuses, with ErrInvalid, anything else and numbers with more than
// MaxDigits digits or an exponent beyond ±MaxExponent; with ErrPrecision,
// numbers with real digits past Places decimal places; and, with
// ErrOverflow, values that do not fit an Amount.
//
// Digits are real unless they lie past the SignificantDigits-th
// significant digit: s rounded to SignificantDigits significant digits must
// have at most Places decimals. Such float64 noise is rounded half to even
// at Places decimal places, so "79.92000000000002" and
// "0.30000000000000004" read as 79.92 and 0.3, while "1.23456", "0.00005"
// and "100000000.00001" are refused. Parse reads the number's text, as
// written (a JSON number's literal, a command-line argument), never a
// float64 it was converted to, so its decision is exact.
func Parse(s string) (Amount, error) {
	if v, ok := parseFast(s); ok {
		return v, nil // at most Places decimals: nothing to refuse
	}
	d, err := scan(s)
	if err != nil {
		return Amount{}, err
	}
	if !d.withinPlaces() {
		return Amount{}, fmt.Errorf("%w: %q", ErrPrecision, clip(s))
	}
	v, err := d.round()
	if err != nil {
		return Amount{}, fmt.Errorf("%w: %q", err, clip(s))
	}
	return v, nil
}

// parseRound is Parse without ErrPrecision: every digit past Places is
// rounded half to even.
func parseRound(s string) (Amount, error) {
	if v, ok := parseFast(s); ok {
		return v, nil
	}
	d, err := scan(s)
	if err != nil {
		return Amount{}, err
	}
	v, err := d.round()
	if err != nil {
		return Amount{}, fmt.Errorf("%w: %q", err, clip(s))
	}
	return v, nil
}

// parseFast handles the common "123" and "123.45" forms without big.Int.
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
	// take the slow path, which reports overflow instead of wrapping.
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

// decimal is a scanned number: ±digits × 10^exp, digits without leading or
// trailing zeros (empty for zero).
type decimal struct {
	neg    bool
	digits string
	exp    int
}

// scan reads [+-]digits[.digits][(e|E)[+-]digits] (either digit run may be
// empty, not both), stopping at the first digit or exponent past the
// bounds, so that its work is bounded whatever the length of s.
func scan(s string) (decimal, error) {
	var (
		d      decimal
		buf    [MaxDigits]byte
		nd     int // digits in buf
		frac   int // of which after the point
		point  bool
		i      int
		digits bool
	)
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		d.neg = s[i] == '-'
		i++
	}
	for ; i < len(s); i++ {
		c := s[i]
		if c == '.' && !point {
			point = true
			continue
		}
		if c < '0' || c > '9' {
			break
		}
		if nd == MaxDigits {
			return decimal{}, fmt.Errorf("%w: %q has more than %d digits", ErrInvalid, clip(s), MaxDigits)
		}
		buf[nd] = c
		nd++
		digits = true
		if point {
			frac++
		}
	}
	if !digits {
		return decimal{}, fmt.Errorf("%w: %q", ErrInvalid, clip(s))
	}
	exp := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		eneg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			eneg = s[i] == '-'
			i++
		}
		start := i
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			exp = exp*10 + int(s[i]-'0')
			if exp > MaxExponent {
				return decimal{}, fmt.Errorf("%w: %q has an exponent beyond ±%d", ErrInvalid, clip(s), MaxExponent)
			}
		}
		if i == start {
			return decimal{}, fmt.Errorf("%w: %q", ErrInvalid, clip(s))
		}
		if eneg {
			exp = -exp
		}
	}
	if i != len(s) {
		return decimal{}, fmt.Errorf("%w: %q", ErrInvalid, clip(s))
	}
	m := buf[:nd]
	for len(m) > 0 && m[0] == '0' {
		m = m[1:]
	}
	for len(m) > 0 && m[len(m)-1] == '0' {
		m = m[:len(m)-1]
		exp++
	}
	d.digits = string(m)
	d.exp = exp - frac
	return d, nil
}

// withinPlaces reports whether d, rounded half to even to
// SignificantDigits significant digits, has at most Places decimals: the
// rule by which Parse tells real digits from float64 noise.
func (d decimal) withinPlaces() bool {
	if d.exp >= -Places || d.digits == "" {
		return true
	}
	if len(d.digits) <= SignificantDigits {
		return false // the last digit is not zero, and it is past Places
	}
	// The first SignificantDigits digits fit a uint64 (they are < 10^15).
	kept, rest := d.digits[:SignificantDigits], d.digits[SignificantDigits:]
	m, err := strconv.ParseUint(kept, 10, 64)
	if err != nil {
		return false // unreachable: scan checked the digits
	}
	exp := d.exp + len(rest) // of m's last digit
	// rest has no trailing zeros, so it is exactly a half only when it is "5".
	if rest[0] > '5' || (rest[0] == '5' && (len(rest) > 1 || m%2 == 1)) {
		m++
	}
	for m%10 == 0 {
		m /= 10 // m ≥ 10^14: it never reaches 0
		exp++
	}
	return exp >= -Places
}

// pow10 holds 10^0 … 10^19, every power of ten a uint64 holds.
var pow10 = [...]uint64{
	1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
	1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
}

// round returns d rounded half to even at Places decimal places.
func (d decimal) round() (Amount, error) {
	if d.digits == "" {
		return Amount{}, nil
	}
	k := d.exp + Places // units = digits × 10^k
	if len(d.digits) < len(pow10) {
		m, err := strconv.ParseUint(d.digits, 10, 64)
		if err != nil {
			return Amount{}, fmt.Errorf("%w: %v", ErrInvalid, err) // unreachable: at most 19 digits
		}
		return roundUint(m, k, d.neg)
	}
	return roundBig(d.digits, k, d.neg)
}

// roundUint is round for mantissas that fit a uint64, the float64 case
// (at most 17 significant digits), without allocating.
func roundUint(m uint64, k int, neg bool) (Amount, error) {
	if k >= 0 {
		if k >= len(pow10) {
			return Amount{}, ErrOverflow // m ≥ 1, so m × 10^k ≥ 10^20
		}
		hi, lo := bits.Mul64(m, pow10[k])
		if hi != 0 || lo > maxMagnitude(neg) {
			return Amount{}, ErrOverflow
		}
		return Amount{units: signed(lo, neg)}, nil
	}
	if -k >= len(pow10) {
		// m < 10^19 ≤ 10^-k / 10: less than a tenth of a unit rounds to 0.
		return Amount{}, nil
	}
	p := pow10[-k]
	q, r := m/p, m%p
	// r > p−r rather than 2r > p: 2r may not fit a uint64.
	if r > p-r || (r == p-r && q&1 == 1) {
		q++
	}
	return Amount{units: signed(q, neg)}, nil
}

// roundBig is round for mantissas of 20 to MaxDigits digits. Its work is
// bounded: |k| ≤ MaxExponent + MaxDigits + Places.
func roundBig(digits string, k int, neg bool) (Amount, error) {
	n, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		return Amount{}, ErrInvalid // unreachable: scan checked the digits
	}
	ten := big.NewInt(10)
	if k >= 0 {
		n.Mul(n, new(big.Int).Exp(ten, big.NewInt(int64(k)), nil))
	} else {
		n = roundHalfEven(new(big.Rat).SetFrac(n, new(big.Int).Exp(ten, big.NewInt(int64(-k)), nil)))
	}
	if neg {
		n.Neg(n)
	}
	if !n.IsInt64() {
		return Amount{}, ErrOverflow
	}
	return Amount{units: n.Int64()}, nil
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

// clip shortens s for an error message: a refused amount may be a
// megabyte long.
func clip(s string) string {
	const keep = 32
	if len(s) <= keep {
		return s
	}
	return s[:keep] + "..."
}
