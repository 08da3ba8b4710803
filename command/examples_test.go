package command

import (
	"strconv"
	"strings"
)

// example is a command as published, with Decode's verdict on it: code is
// "" for a valid command, and reason, when given, is a part of the
// *InvalidError's Reason. Every test of Decode's verdicts reads the one
// table that examples returns, and TestSchemaAgreesWithDecode checks the
// JSON Schema of command/schema against the same bodies.
type example struct {
	name, subject, body, code, reason string
}

// add is an add-item of cart c-1 carrying the items, a JSON array's
// elements.
func add(items string) string {
	return `{"id":"i","type":"add-item","cart_id":"c-1","items":[` + items + `]}`
}

// priced is an add-item of one item priced as written.
func priced(price string) string {
	return add(`{"item_code":"A","quantity":1,"unit_price":` + price + `}`)
}

// examples returns every command the decoder's tests publish.
func examples() []example {
	const (
		addSubj    = "cart.cmd.c-1.add-item"
		cacheSubj  = "cart.cmd.c-1.cache"
		deleteSubj = "cart.cmd.c-1.delete"
	)
	item := func(q int, price string) string {
		return add(`{"item_code":"A","quantity":` + strconv.Itoa(q) + `,"unit_price":` + price + `}`)
	}
	tricky := `{"item_code":"A,\"]},[{","quantity":1,"unit_price":1,"description":"x\\","extra":[1,{"a":[2,3]}]}`
	big := `{"id":"i","type":"cache","cart_id":"c-1","cart":{"note":"` + strings.Repeat("x", MaxBodyBytes) + `"}}`
	return []example{
		// Valid commands.
		{"add-item", addSubj, goodAdd, "", ""},
		{"cache with a cart", cacheSubj, `{"id":"x","type":"cache","cart_id":"c-1","cart":{"status":"Idle","payments":[]}}`, "", ""},
		{"cache without a cart", cacheSubj, `{"id":"x","type":"cache","cart_id":"c-1","tenant_id":"T1","store_code":"S1","terminal_no":1}`, "", ""},
		{"cache with a null cart", cacheSubj, `{"id":"x","type":"cache","cart_id":"c-1","cart":null}`, "", ""},
		{"delete", deleteSubj, `{"id":"x","type":"delete","cart_id":"c-1"}`, "", ""},
		{"unknown fields are ignored", deleteSubj, `{"id":"x","type":"delete","cart_id":"c-1","note":{"a":[1]}}`, "", ""},
		{"optional fields null", addSubj, `{"id":"i","type":"add-item","cart_id":"c-1","tenant_id":null,"store_code":null,"terminal_no":null,
		  "items":[{"item_code":"A","quantity":1,"unit_price":1,"description":null,"tax_code":null,"category_code":null}]}`, "", ""},
		{"no tax code", addSubj, priced("1"), "", ""}, // rejected when applied: unknown_tax_code
		{"price zero", addSubj, priced("0"), "", ""},
		{"price with four places", addSubj, priced("99999999.9999"), "", ""},
		{"price with trailing zeros", addSubj, priced("120.50000"), "", ""},
		{"price with an exponent", addSubj, priced("1.2345e2"), "", ""},
		{"price at the limit", addSubj, priced("100000000"), "", ""},
		{"price as a string", addSubj, priced(`"120.5"`), "", ""},
		{"price with float noise", addSubj, priced("0.30000000000000004"), "", ""},
		{"price with float noise 2", addSubj, priced("79.92000000000002"), "", ""},
		{"quantity at the limit", addSubj, item(MaxQuantity, "1"), "", ""},
		{"100 tricky items", addSubj, string(addItemBody(MaxItems, tricky)), "", ""},
		{"items on a delete are not read", deleteSubj,
			strings.Replace(string(addItemBody(1000, tinyPriceItem)), `"type":"add-item"`, `"type":"delete"`, 1), "", ""},
		{"keys in another case", deleteSubj, `{"ID":"x","Type":"delete","Cart_ID":"c-1"}`, "", ""},

		// Refused by the subject alone.
		{"unknown type in subject", "cart.cmd.c-1.explode", `{}`, CodeUnknownType, `type "explode" in subject`},
		{"bad subject shape", "cart.cmd.c-1", `{}`, CodeSubjectMismatch, ""},
		{"cart id too long", "cart.cmd." + strings.Repeat("a", MaxCartIDLen+1) + ".delete", `{}`, CodeInvalidCartID, ""},
		{"invalid cart id", "cart.cmd.c@1.delete", `{"id":"i","type":"delete","cart_id":"c@1"}`, CodeInvalidCartID, ""},
		{"type mismatch", deleteSubj, `{"id":"i","type":"cache","cart_id":"c-1"}`, CodeSubjectMismatch, `type: "cache", but the subject says "delete"`},
		{"cart mismatch", deleteSubj, `{"id":"i","type":"delete","cart_id":"c-2"}`, CodeSubjectMismatch, `cart_id: "c-2", but the subject says "c-1"`},

		// Not JSON, or JSON of the wrong shape.
		{"not json", addSubj, `{"id":`, CodeMalformedJSON, "the body is not valid JSON: it ends inside a value"},
		{"syntax error", deleteSubj, `{"id": x}`, CodeMalformedJSON, "the body is not valid JSON: invalid character 'x' looking for beginning of value (at byte 8)"},
		{"empty body", deleteSubj, ``, CodeMalformedJSON, "the body is empty"},
		{"trailing data", deleteSubj, `{"id":"i","type":"delete","cart_id":"c-1"} {}`, CodeMalformedJSON, "trailing data"},
		{"body an array", deleteSubj, `[{"id":"i"}]`, CodeMalformedJSON, "body: must be an object, not an array"},
		{"body null", deleteSubj, `null`, CodeMissingID, ""},
		{"id a number", deleteSubj, `{"id":1,"type":"delete","cart_id":"c-1"}`, CodeMalformedJSON, "id: must be a string, not a number"},
		{"type an object", deleteSubj, `{"id":"i","type":{},"cart_id":"c-1"}`, CodeMalformedJSON, "type: must be a string, not an object"},
		{"terminal_no a string", cacheSubj, `{"id":"i","type":"cache","cart_id":"c-1","terminal_no":"7"}`, CodeMalformedJSON, "terminal_no: must be an integer, not a string"},
		{"terminal_no a fraction", cacheSubj, `{"id":"i","type":"cache","cart_id":"c-1","terminal_no":7.5}`, CodeMalformedJSON, "terminal_no: must be an integer, not 7.5"},
		{"terminal_no too large", cacheSubj, `{"id":"i","type":"cache","cart_id":"c-1","terminal_no":1e30}`, CodeMalformedJSON, "terminal_no: must be an integer, not 1e30"},
		{"items not an array", addSubj, `{"id":"i","type":"add-item","cart_id":"c-1","items":{"item_code":"A"}}`, CodeMalformedJSON, "items: must be an array, not an object"},
		{"items a string", addSubj, `{"id":"i","type":"add-item","cart_id":"c-1","items":"[]"}`, CodeMalformedJSON, "items: must be an array, not a string"},
		{"item not an object", addSubj, add(`1`), CodeMalformedJSON, "items[0]: must be an object, not a number"},
		{"quantity a string", addSubj, add(`{"item_code":"A","quantity":"1","unit_price":1}`), CodeMalformedJSON, "items[0].quantity: must be an integer, not a string"},
		{"quantity a fraction", addSubj, add(`{"item_code":"A","quantity":1.5,"unit_price":1}`), CodeMalformedJSON, "items[0].quantity: must be an integer, not 1.5"},
		{"quantity written 1.0", addSubj, add(`{"item_code":"A","quantity":1.0,"unit_price":1}`), CodeMalformedJSON, "items[0].quantity: must be an integer, not 1.0"},
		{"item_code a number in the second item", addSubj, add(`{"item_code":"A","quantity":1,"unit_price":1},{"item_code":5,"quantity":1,"unit_price":1}`),
			CodeMalformedJSON, "items[1].item_code: must be a string, not a number"},
		{"tax_code an array", addSubj, add(`{"item_code":"A","quantity":1,"unit_price":1,"tax_code":["01"]}`), CodeMalformedJSON, "items[0].tax_code: must be a string, not an array"},

		// Values the contract refuses.
		{"missing id", deleteSubj, `{"type":"delete","cart_id":"c-1"}`, CodeMissingID, "id: must not be empty"},
		{"unknown type in body", deleteSubj, `{"id":"i","type":"explode","cart_id":"c-1"}`, CodeUnknownType, `type: "explode" is not add-item, cache or delete`},
		{"quantity 0", addSubj, item(0, "1"), CodeInvalidQuantity, "items[0].quantity: 0 not in 1..9999"},
		{"quantity 10000", addSubj, item(MaxQuantity+1, "1"), CodeInvalidQuantity, ""},
		{"quantity missing", addSubj, add(`{"item_code":"A","unit_price":1}`), CodeInvalidQuantity, ""},
		{"item_code empty", addSubj, add(`{"item_code":"","quantity":1,"unit_price":1}`), CodeInvalidItem, "items[0].item_code: must not be empty"},
		{"item null", addSubj, add(`null`), CodeInvalidItem, ""},
		{"negative price", addSubj, item(1, "-1"), CodeInvalidPrice, "items[0].unit_price: -1 not in 0..100000000"},
		{"price too high", addSubj, item(1, "100000000.01"), CodeInvalidPrice, ""},
		{"price overflows", addSubj, item(1, "1e30"), CodeInvalidPrice, "items[0].unit_price: 1e30 not in 0..100000000"},
		{"price exponent out of range", addSubj, item(1, "1e-999999"), CodeInvalidPrice, "exponent beyond"},
		{"price 1e400", addSubj, item(1, "1e400"), CodeInvalidPrice, ""},
		{"price of 43 digits", addSubj, priced("1." + strings.Repeat("0", 42)), CodeInvalidPrice, "more than 40 digits"},
		{"price not a number", addSubj, item(1, `"abc"`), CodeInvalidPrice, `items[0].unit_price: must be a decimal number from 0 to 100000000: invalid amount: "abc"`},
		{"price a boolean", addSubj, priced("true"), CodeInvalidPrice, "items[0].unit_price: must be a number, not a boolean"},
		{"price an object", addSubj, priced(`{"amount":1}`), CodeInvalidPrice, "items[0].unit_price: must be a number, not an object"},
		{"price missing", addSubj, add(`{"item_code":"A","quantity":1}`), CodeInvalidPrice, "items[0].unit_price: is required"},
		{"price null", addSubj, priced("null"), CodeInvalidPrice, "items[0].unit_price: is required"},
		{"price with five places", addSubj, priced("1.23456"), CodeInvalidPrice, "items[0].unit_price: 1.23456 has more than 4 decimal places"},
		{"price of a tenth of a place", addSubj, priced("0.00005"), CodeInvalidPrice, "more than 4 decimal places"},
		{"price past the limit by a place", addSubj, priced("100000000.00001"), CodeInvalidPrice, "more than 4 decimal places"},
		{"price as a string with five places", addSubj, priced(`"1.23456"`), CodeInvalidPrice, `items[0].unit_price: "1.23456" has more than 4 decimal places`},
		{"price as a string too high", addSubj, priced(`"100000001"`), CodeInvalidPrice, ""},
		{"items null", addSubj, `{"id":"i","type":"add-item","cart_id":"c-1","items":null}`, CodeNoItems, ""},
		{"items missing", addSubj, `{"id":"i","type":"add-item","cart_id":"c-1"}`, CodeNoItems, ""},
		{"no items", addSubj, `{"id":"i","type":"add-item","cart_id":"c-1","items":[]}`, CodeNoItems, ""},
		{"too many items", addSubj, string(addItemBody(MaxItems+1, `{"item_code":"A","quantity":1,"unit_price":1}`)), CodeTooManyItems, "101 items, limit 100"},
		{"101 tricky items", addSubj, string(addItemBody(MaxItems+1, tricky)), CodeTooManyItems, ""},
		{"400 tiny prices", addSubj, string(addItemBody(400, tinyPriceItem)), CodeTooManyItems, ""},
		{"one tiny price", addSubj, string(addItemBody(1, tinyPriceItem)), CodeInvalidPrice, "items[0].unit_price"},
		{"cart not an object", cacheSubj, `{"id":"i","type":"cache","cart_id":"c-1","cart":[1]}`, CodeInvalidCart, "cart: must be an object, not an array"},
		{"cart a string", cacheSubj, `{"id":"i","type":"cache","cart_id":"c-1","cart":"{}"}`, CodeInvalidCart, ""},
		{"too large", deleteSubj, strings.Repeat(" ", MaxBodyBytes+1), CodeBodyTooLarge, ""},
		{"too large a cart", cacheSubj, big, CodeBodyTooLarge, ""},
	}
}
