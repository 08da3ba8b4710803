package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cartworker/cartworker/command"
)

// Defaults of the common flags.
const (
	defaultNATSURL = "nats://127.0.0.1:4222"
	defaultDapr    = "http://127.0.0.1:3500"
	defaultStore   = "cartstore"
	defaultTimeout = 10 * time.Second
)

// usageError is a mistake on the command line; main exits 2 for it.
type usageError struct {
	self string // how cartctl was run (cli.self); empty means "cartctl"
	cmd  string // "add", "dlq list"; empty for cartctl itself
	err  error
}

func (e *usageError) Error() string {
	return e.prog() + ": " + e.err.Error()
}

func (e *usageError) Unwrap() error { return e.err }

func (e *usageError) prog() string {
	self := e.self
	if self == "" {
		self = "cartctl"
	}
	if e.cmd == "" {
		return self
	}
	return self + " " + e.cmd
}

// flagSet is one command's flags, with environment fallbacks and required
// flags checked after parsing.
type flagSet struct {
	c        *cli
	fs       *flag.FlagSet
	name     string // "add", "dlq list"
	synopsis string // the arguments after the command name
	summary  string // what the command does, printed under the synopsis
	env      []envFlag
	required []string
	// args names the positional arguments the command takes, all
	// required; none by default.
	args []string
}

// envFlag names the variable that fills a flag not given on the command line.
type envFlag struct{ flag, env string }

func (c *cli) newFlagSet(name, synopsis, summary string) *flagSet {
	fs := flag.NewFlagSet("cartctl "+name, flag.ContinueOnError)
	// Errors are returned and usage printed by parse, on the right stream.
	fs.SetOutput(io.Discard)
	return &flagSet{c: c, fs: fs, name: name, synopsis: synopsis, summary: summary}
}

// stringEnv defines a string flag that falls back to $env. The usage shows
// the built-in default, never the environment's value, because that value
// may be a secret (a token, or credentials in a URL).
func (f *flagSet) stringEnv(p *string, name, env, def, usage string) {
	f.fs.StringVar(p, name, def, usage+" (env "+env+")")
	f.env = append(f.env, envFlag{flag: name, env: env})
}

func (f *flagSet) require(names ...string) { f.required = append(f.required, names...) }

// positional makes the command take these arguments after its flags; Args
// returns them once parsed.
func (f *flagSet) positional(names ...string) { f.args = names }

// Args returns the positional arguments.
func (f *flagSet) Args() []string { return f.fs.Args() }

func (f *flagSet) usageErr(err error) error {
	return &usageError{self: f.c.prog, cmd: f.name, err: err}
}

func (f *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s %s %s\n\n%s\n\nFlags:\n", f.c.self(), f.name, f.synopsis, f.summary)
	f.fs.SetOutput(w)
	f.fs.PrintDefaults()
	f.fs.SetOutput(io.Discard)
}

// parse parses args. help is true when -h was given: the usage is printed on
// stdout and the command should return nil.
func (f *flagSet) parse(args []string) (help bool, err error) {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.printUsage(f.c.stdout)
			return true, nil
		}
		return false, f.usageErr(err)
	}
	if f.fs.NArg() > len(f.args) {
		return false, f.usageErr(fmt.Errorf("unexpected argument %q", f.fs.Arg(len(f.args))))
	}
	if f.fs.NArg() < len(f.args) {
		return false, f.usageErr(fmt.Errorf("want %s after the flags", strings.Join(f.args, " ")))
	}
	given := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	for _, e := range f.env {
		v, ok := f.c.lookupEnv(e.env)
		if given[e.flag] || !ok || v == "" {
			continue
		}
		if err := f.fs.Set(e.flag, v); err != nil {
			return false, f.usageErr(fmt.Errorf("$%s: %w", e.env, err))
		}
	}
	for _, name := range f.required {
		if f.fs.Lookup(name).Value.String() == "" {
			return false, f.usageErr(fmt.Errorf("-%s is required", name))
		}
	}
	return false, nil
}

// given reports whether the flag was set on the command line.
func (f *flagSet) given(name string) bool {
	found := false
	f.fs.Visit(func(fl *flag.Flag) { found = found || fl.Name == name })
	return found
}

// natsOptions are the flags of commands that talk to NATS.
type natsOptions struct {
	url, prefix                      string
	nkeySeed, tlsCA, tlsCert, tlsKey string
}

// natsFlags defines the NATS flags. They mirror the worker's settings of
// the same names, so that one environment serves both programs.
func (f *flagSet) natsFlags() *natsOptions {
	o := &natsOptions{}
	f.stringEnv(&o.url, "nats-url", "NATS_URL", defaultNATSURL,
		"NATS server `URL`s, comma separated; credentials from NATS_USER+NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or -nats-nkey-seed")
	f.stringEnv(&o.nkeySeed, "nats-nkey-seed", "NATS_NKEY_SEED", "", "`file` holding a NATS user nkey seed (SU...)")
	f.stringEnv(&o.tlsCA, "nats-tls-ca", "NATS_TLS_CA", "", "PEM CA bundle `file` that signed the NATS server's certificate (default: the system's); turns TLS on")
	f.stringEnv(&o.tlsCert, "nats-tls-cert", "NATS_TLS_CERT", "", "PEM client certificate `file` for NATS mutual TLS, with -nats-tls-key")
	f.stringEnv(&o.tlsKey, "nats-tls-key", "NATS_TLS_KEY", "", "PEM private key `file` of -nats-tls-cert")
	f.stringEnv(&o.prefix, "prefix", "CART_SUBJECT_PREFIX", command.DefaultPrefix,
		"subject `prefix` of commands, events and dead letters")
	return o
}

// timeoutFlag defines -timeout; usage says what it bounds in this command.
func (f *flagSet) timeoutFlag(usage string) *time.Duration {
	return f.fs.Duration("timeout", defaultTimeout, usage)
}

// daprOptions are the flags of commands that read the state store.
type daprOptions struct {
	endpoint, token, store string
}

func (f *flagSet) daprFlags() *daprOptions {
	o := &daprOptions{}
	f.stringEnv(&o.endpoint, "dapr", "DAPR_HTTP_ENDPOINT", defaultDapr, "Dapr sidecar HTTP `endpoint`")
	f.stringEnv(&o.token, "dapr-token", "DAPR_API_TOKEN", "", "Dapr API `token`, sent as the dapr-api-token header and never printed")
	f.stringEnv(&o.store, "store", "CART_STATE_STORE", defaultStore, "Dapr state store `name`")
	return o
}
