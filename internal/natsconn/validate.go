package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/cartworker/cartworker/internal/setting"
)

// ErrInvalid is wrapped by Connect's error for options that fail Validate,
// which no retry can fix: a program may report it as a usage error.
var ErrInvalid = errors.New("invalid NATS settings")

// Validate reports the options that cannot work, each as a *setting.Error
// naming its field: a URL that does not parse, a user without password,
// a client certificate without key, more than one way to authenticate, and
// an nkey seed or TLS file that cannot be read or holds no usable key or
// certificate. Problems never quote a file's contents.
func (o Options) Validate() error {
	var errs []error
	for _, u := range strings.Split(o.URL, ",") {
		if pu, err := url.Parse(strings.TrimSpace(u)); err != nil || pu.Host == "" {
			errs = append(errs, setting.Errorf("URL", "%q is not a URL like nats://host:4222", RedactURL(u)))
		}
	}
	if (o.User == "") != (o.Password == "") {
		errs = append(errs, setting.Errorf("User", "NATS_USER and NATS_PASSWORD must be set together"))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		errs = append(errs, setting.Errorf("TLSCert", "NATS_TLS_CERT and NATS_TLS_KEY must be set together"))
	}
	// The server takes one of them; which one would depend on how it is
	// configured, so a second one is a mistake rather than a fallback.
	if ways := o.authMethods(); len(ways) > 1 {
		all := "all"
		if len(ways) == 2 {
			all = "both"
		}
		errs = append(errs, setting.Errorf(ways[0].field, "%s are %s set: authenticate one way only",
			joinAnd(names(ways)), all))
	}
	if o.NkeySeed != "" {
		if err := checkSeed(o.NkeySeed); err != nil {
			errs = append(errs, setting.Errorf("NkeySeed", "%v", err))
		}
	}
	if o.TLSCA != "" {
		if err := checkCA(o.TLSCA); err != nil {
			errs = append(errs, setting.Errorf("TLSCA", "%v", err))
		}
	}
	if o.TLSCert != "" && o.TLSKey != "" {
		errs = append(errs, checkKeyPair(o.TLSCert, o.TLSKey)...)
	}
	return errors.Join(errs...)
}

// authMethod is one way of authenticating that o sets.
type authMethod struct{ field, vars string }

func (o Options) authMethods() []authMethod {
	var out []authMethod
	if o.User != "" || o.Password != "" {
		out = append(out, authMethod{"User", "NATS_USER/NATS_PASSWORD"})
	}
	if o.Token != "" {
		out = append(out, authMethod{"Token", "NATS_TOKEN"})
	}
	if o.Creds != "" {
		out = append(out, authMethod{"Creds", "NATS_CREDS"})
	}
	if o.NkeySeed != "" {
		out = append(out, authMethod{"NkeySeed", "NATS_NKEY_SEED"})
	}
	return out
}

// authHint names what to check when the server refused the credentials:
// the way o authenticates, the credentials in the URL, or else every way,
// since the server wants one.
func (o Options) authHint() string {
	if ways := o.authMethods(); len(ways) > 0 {
		return joinAnd(names(ways))
	}
	for _, u := range strings.Split(o.URL, ",") {
		if pu, err := url.Parse(strings.TrimSpace(u)); err == nil && pu.User != nil {
			return "the credentials in NATS_URL"
		}
	}
	return "NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or NATS_NKEY_SEED"
}

func names(ways []authMethod) []string {
	out := make([]string, len(ways))
	for i, w := range ways {
		out[i] = w.vars
	}
	return out
}

// joinAnd joins "a", "b" and "c" as "a, b and c".
func joinAnd(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// envOf is the environment variable of an Options field, as both programs
// name them.
func envOf(field string) string {
	switch field {
	case "URL":
		return "NATS_URL"
	case "User":
		return "NATS_USER"
	case "Password":
		return "NATS_PASSWORD"
	case "Token":
		return "NATS_TOKEN"
	case "Creds":
		return "NATS_CREDS"
	case "NkeySeed":
		return "NATS_NKEY_SEED"
	case "TLSCA":
		return "NATS_TLS_CA"
	case "TLSCert":
		return "NATS_TLS_CERT"
	case "TLSKey":
		return "NATS_TLS_KEY"
	case "ConnectTimeout":
		return "NATS_CONNECT_TIMEOUT"
	}
	return field
}

// byVariable rewrites Validate's field errors as "<VARIABLE>: <problem>".
func byVariable(err error) error {
	var errs []error
	rest := setting.Each(err, func(e *setting.Error) {
		errs = append(errs, fmt.Errorf("%s: %s", envOf(e.Field), e.Problem))
	})
	return errors.Join(append(errs, rest...)...)
}

// checkSeed reads an nkey seed file as nats.go will, and wipes what it read.
func checkSeed(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	defer wipe(b)
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		// nkeys' errors never quote the input.
		return fmt.Errorf("%s: %w", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return fmt.Errorf("%s: not a user nkey seed (one begins with SU)", path)
	}
	return nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}

func checkCA(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return nil
}

// checkKeyPair reads the client certificate and key, naming the variable
// of a file that cannot be read, and then checks that they make a pair.
func checkKeyPair(certPath, keyPath string) []error {
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	defer wipe(keyPEM)
	var errs []error
	if certErr != nil {
		errs = append(errs, setting.Errorf("TLSCert", "%v", certErr))
	}
	if keyErr != nil {
		errs = append(errs, setting.Errorf("TLSKey", "%v", keyErr))
	}
	if len(errs) > 0 {
		return errs
	}
	// crypto/tls's errors name PEM block types, never the key.
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return []error{setting.Errorf("TLSCert", "%s with NATS_TLS_KEY %s: %v", certPath, keyPath, err)}
	}
	return nil
}
