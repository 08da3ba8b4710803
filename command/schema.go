package command

import (
	"embed"
	"io/fs"
)

// The contract as JSON Schema (draft 2020-12), for publishers in any
// language. Each is a file of Schemas, and of command/schema in the
// repository.
const (
	// SchemaCommand is the schema of a command body; its description
	// documents the subject and headers a command is published with.
	SchemaCommand = "schema/command.schema.json"
	// SchemaEvent is the schema of an outcome event.
	SchemaEvent = "schema/event.schema.json"
	// SchemaDeadLetterHeaders is the schema of a dead letter's headers, as
	// an object of header name to value.
	SchemaDeadLetterHeaders = "schema/dead-letter-headers.schema.json"
)

//go:embed schema/*.schema.json
var schemas embed.FS

// Schemas returns the contract's JSON Schemas, named by the Schema*
// constants. They describe what Decode accepts, except where JSON Schema
// cannot say it (schema_test.go lists those cases and why).
func Schemas() fs.FS { return schemas }
