package command

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
)

// TestSchemaAgreesWithDecode validates the body of every example against
// command.schema.json and decodes it, on the subject the body names (on
// the example's own when the body names none), and fails where one
// accepts what the other refuses.
//
// Both must agree except where JSON Schema cannot say what the decoder
// does; those examples are listed here with the reason, and the test fails
// too if one of them stops disagreeing, so the list stays true. Rules
// that only the subject can break (subject_mismatch) are out of the
// schema's reach by construction: deriving the subject from the body
// leaves them out.
func TestSchemaAgreesWithDecode(t *testing.T) {
	exceptions := map[string]string{
		"price with float noise": "multipleOf 0.0001 is exact, while money.Parse rounds float64 noise " +
			"(digits past the 15th significant one) at 4 places",
		"price with float noise 2": "as above",
		"price as a string with five places": "a pattern checks the syntax of a price written as a string, " +
			"not its decimal places or range",
		"price as a string too high": "as above",
		"price of 43 digits": "JSON Schema sees a number's value, not how it is written: money.Parse refuses " +
			"literals of more than 40 digits or with an exponent beyond ±40, to bound its work",
		"quantity written 1.0": "JSON Schema's integer is a value, and 1.0 is one; encoding/json wants an " +
			"integer literal",
		"keys in another case": "encoding/json matches keys case-insensitively; the contract's keys are the " +
			"lower-case ones the schema names, and publishers must not rely on this",
		"too large a cart": "JSON Schema cannot bound a document's size in bytes (MaxBodyBytes)",
	}
	// Validated by the decoder alone: the validator converts each of
	// these prices exactly, 10^999999 at a time, for seconds per body.
	// money.Parse's bounds and the item count before decoding are the
	// decoder's defence against just that.
	costly := map[string]bool{"400 tiny prices": true}
	sch := compileSchema(t, SchemaCommand)
	seen := map[string]bool{}
	for _, ex := range examples() {
		require.False(t, seen[ex.name], "two examples named %q", ex.name)
		seen[ex.name] = true
		t.Run(ex.name, func(t *testing.T) {
			if costly[ex.name] {
				t.Skip("too costly for the validator")
			}
			subject := bodySubject(ex)
			_, decErr := Subjects{}.Decode(subject, []byte(ex.body))
			schemaErr := validate(sch, ex.body)
			if why, ok := exceptions[ex.name]; ok {
				require.NotEqual(t, decErr == nil, schemaErr == nil,
					"the schema and the decoder agree now: drop the exception (%s)", why)
				return
			}
			switch {
			case decErr == nil && schemaErr != nil:
				t.Fatalf("decoded on %s, but the schema refuses it: %v", subject, schemaErr)
			case decErr != nil && schemaErr == nil:
				t.Fatalf("the schema accepts it, but Decode on %s refuses it: %v", subject, decErr)
			}
		})
	}
	for name := range exceptions {
		require.True(t, seen[name], "exception %q names no example", name)
	}
	for name := range costly {
		require.True(t, seen[name], "costly %q names no example", name)
	}
}

// TestSchemaEvents validates events as MarshalEvent encodes them, with
// every rejection code the package declares, and refuses malformed ones.
func TestSchemaEvents(t *testing.T) {
	sch := compileSchema(t, SchemaEvent)
	valid := []Event{
		{CommandID: "cmd-1", Type: TypeAddItem, CartID: "c-1", Outcome: OutcomeApplied},
		{CommandID: "cmd-1", Type: TypeAddItem, CartID: "c-1", Outcome: OutcomeApplied, Duplicate: true},
		// A dead letter whose subject's type is unknown, from a body
		// without an id or a Nats-Msg-Id.
		{CommandID: "", Type: "unknown", CartID: "c-1", Outcome: OutcomeRejected,
			Error: &EventError{Code: CodeUnknownType, Message: `type "explode" in subject`}},
	}
	for _, code := range declaredCodes(t, "command.go", "decode.go") {
		valid = append(valid, Event{CommandID: "cmd-2", Type: TypeDelete, CartID: "c_2", Outcome: OutcomeRejected,
			Error: &EventError{Code: code, Message: "why"}})
	}
	for _, ev := range valid {
		b, err := MarshalEvent(ev)
		require.NoError(t, err)
		require.NoError(t, validate(sch, string(b)), "%s", b)
	}
	for _, bad := range []string{
		`{"command_id":"c","type":"delete","cart_id":"c-1","outcome":"applied","duplicate":false,"error":{"code":"invalid_state","message":"m"}}`,
		`{"command_id":"c","type":"delete","cart_id":"c-1","outcome":"rejected","duplicate":false}`,
		`{"command_id":"c","type":"delete","cart_id":"c-1","outcome":"applied"}`,
		`{"command_id":"c","type":"delete","cart_id":"c-1","outcome":"done","duplicate":false}`,
		`{"command_id":"c","type":"delete","cart_id":"c-1","outcome":"rejected","duplicate":false,"error":{"code":"no_such_code","message":"m"}}`,
		`{"command_id":"c","type":"delete","cart_id":"c.1","outcome":"applied","duplicate":false}`,
	} {
		require.Error(t, validate(sch, bad), bad)
	}
}

// TestSchemaDeadLetterHeaders validates dead-letter headers built from the
// package's header names, and checks that the schema names each of them
// and that its codes are those a dead letter can carry.
func TestSchemaDeadLetterHeaders(t *testing.T) {
	sch := compileSchema(t, SchemaDeadLetterHeaders)
	headers := map[string]string{
		HeaderMsgID:         "dlq-42",
		HeaderDLQCode:       CodeInvalidPrice,
		HeaderDLQReason:     "items[0].unit_price: 1.23456 has more than 4 decimal places",
		HeaderDLQSubject:    "cart.cmd.c-1.add-item",
		HeaderDLQMsgID:      "cmd-1",
		HeaderDLQSequence:   "42",
		HeaderDLQDeliveries: "1",
		"traceparent":       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	requireHeaders := func(h map[string]string, ok bool) {
		t.Helper()
		b, err := json.Marshal(h)
		require.NoError(t, err)
		if ok {
			require.NoError(t, validate(sch, string(b)), "%s", b)
		} else {
			require.Error(t, validate(sch, string(b)), "%s", b)
		}
	}
	requireHeaders(headers, true)
	with := func(k, v string) map[string]string {
		h := map[string]string{}
		for hk, hv := range headers {
			h[hk] = hv
		}
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
		return h
	}
	requireHeaders(with(HeaderDLQBodyOmitted, "1048600 bytes"), true)
	requireHeaders(with(HeaderDLQMsgID, ""), true)
	requireHeaders(with(HeaderDLQCode, CodeMaxDeliveries), true)
	requireHeaders(with(HeaderDLQCode, CodeCartNotFound), false) // a rejection, never a dead letter
	requireHeaders(with(HeaderDLQCode, ""), false)
	requireHeaders(with(HeaderDLQDeliveries, "0"), false)
	requireHeaders(with(HeaderMsgID, "cmd-1"), false)

	var doc struct {
		Properties map[string]struct {
			Enum []string `json:"enum"`
		} `json:"properties"`
	}
	raw, err := fs.ReadFile(Schemas(), SchemaDeadLetterHeaders)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &doc))
	for _, name := range []string{HeaderMsgID, HeaderDLQCode, HeaderDLQReason, HeaderDLQSubject, HeaderDLQMsgID,
		HeaderDLQSequence, HeaderDLQDeliveries, HeaderDLQBodyOmitted} {
		require.Contains(t, doc.Properties, name)
	}
	want := append(declaredCodes(t, "decode.go"), CodeStateRejected, CodeMaxDeliveries)
	slices.Sort(want)
	got := doc.Properties[HeaderDLQCode].Enum
	slices.Sort(got)
	require.Equal(t, want, got, "dead-letter codes: the decoder's, state_rejected and max_deliveries")
}

// TestSchemaEventCodesAreDeclared checks the event schema's codes against
// every Code* constant of the package's source, so that a new code cannot
// be left out of the schema.
func TestSchemaEventCodesAreDeclared(t *testing.T) {
	var doc struct {
		Properties struct {
			Error struct {
				Properties struct {
					Code struct {
						Enum []string `json:"enum"`
					} `json:"code"`
				} `json:"properties"`
			} `json:"error"`
		} `json:"properties"`
	}
	raw, err := fs.ReadFile(Schemas(), SchemaEvent)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &doc))
	got := doc.Properties.Error.Properties.Code.Enum
	want := declaredCodes(t, "command.go", "decode.go")
	slices.Sort(got)
	require.Equal(t, want, got)
}

// declaredCodes returns the values of the Code* string constants declared
// in the package's files, sorted.
func declaredCodes(t *testing.T, files ...string) []string {
	t.Helper()
	var codes []string
	fset := token.NewFileSet()
	for _, file := range files {
		f, err := parser.ParseFile(fset, file, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				require.True(t, ok && lit.Kind == token.STRING, "%s is not a string literal", name.Name)
				v, err := strconv.Unquote(lit.Value)
				require.NoError(t, err)
				codes = append(codes, v)
			}
			return true
		})
	}
	require.NotEmpty(t, codes)
	slices.Sort(codes)
	return codes
}

// compileSchema compiles the named schema of Schemas, with the others
// available to its references, without any network access.
func compileSchema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	names, err := fs.Glob(Schemas(), "schema/*.schema.json")
	require.NoError(t, err)
	require.Len(t, names, 3)
	var id string
	for _, n := range names {
		raw, err := fs.ReadFile(Schemas(), n)
		require.NoError(t, err)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		require.NoError(t, err, n)
		m, ok := doc.(map[string]any)
		require.True(t, ok, n)
		nid, _ := m["$id"].(string)
		require.True(t, strings.HasSuffix(nid, "/command/"+n), "%s: $id %q", n, nid)
		require.NoError(t, c.AddResource(nid, doc))
		if n == name {
			id = nid
		}
	}
	require.NotEmpty(t, id, name)
	sch, err := c.Compile(id)
	require.NoError(t, err, name)
	return sch
}

// validate checks a JSON text against sch; text that is not one JSON value
// is invalid too.
func validate(sch *jsonschema.Schema, text string) error {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		return err
	}
	return sch.Validate(v)
}

// bodySubject is the subject a body names, "cart.cmd.<cart_id>.<type>",
// or the example's own when it names none.
func bodySubject(ex example) string {
	var names struct {
		CartID *string `json:"cart_id"`
		Type   *string `json:"type"`
	}
	// Keys are matched exactly: encoding/json would match "Cart_ID" too.
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(ex.body), &m) != nil {
		return ex.subject
	}
	for k, v := range map[string]**string{"cart_id": &names.CartID, "type": &names.Type} {
		var s string
		if raw, ok := m[k]; ok && json.Unmarshal(raw, &s) == nil {
			*v = &s
		}
	}
	if names.CartID == nil || names.Type == nil {
		return ex.subject
	}
	return Subjects{}.Command(*names.CartID, Type(*names.Type))
}
