package money

import "testing"

// FuzzParse checks that Parse never panics and that String is a fixed point:
// what it prints parses back to the same amount.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "120", "-3.25", "79.92000000000002", "1e3", "0.00005", "9223372036854775807", "99999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
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
