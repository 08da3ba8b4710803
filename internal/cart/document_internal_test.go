package cart

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// setString writes fields such as cart_id and status straight into the
// stored document, so whatever the string holds, the document must stay
// valid JSON and read back as the string.
func TestSetStringWritesValidJSON(t *testing.T) {
	for _, s := range []string{
		"",
		"Idle",
		"2026-11-27T10:00:00Z",
		"a\x01b",
		"nul \x00, unit separator \x1f, delete \x7f",
		"tab\t, newline\n, return\r",
		`quote " and backslash \ and slash /`,
		`\u0041 stays six characters`,
		"<b>&amp;</b>",
		"caf\u00e9, \u65e5\u672c\u8a9e, \U0001F600",
		"line separators \u2028\u2029",
		"invalid UTF-8 \xff\xfe here",
		"truncated rune \xe6\x97",
	} {
		d := &Document{fields: map[string]json.RawMessage{}}
		d.setString("v", s)
		raw := d.fields["v"]
		require.True(t, json.Valid(raw), "%q encoded as invalid JSON %s", s, raw)
		var got string
		require.NoError(t, json.Unmarshal(raw, &got), "%q encoded as %s", s, raw)
		// A valid string comes back as it was; each byte of invalid UTF-8
		// comes back as U+FFFD, as converting to runes spells it.
		require.Equal(t, string([]rune(s)), got, "%q encoded as %s", s, raw)

		doc, err := d.Encode(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
		require.NoError(t, err)
		require.True(t, json.Valid(doc), "%q made the document invalid: %s", s, doc)
	}
}
