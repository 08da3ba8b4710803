package cartworkertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cartworker/cartworker/command"
	"github.com/cartworker/cartworker/internal/statepool"
	"github.com/cartworker/cartworker/money"
)

// ErrCartNotFound is Cart's error for a cart that is not stored (never
// created, or deleted).
var ErrCartNotFound = errors.New("cartworkertest: cart not found")

// Cart is a stored cart document as a test checks it: the fields a
// publisher's tests look at, decoded, amounts exact. Raw is the whole
// document as daprd returned it, for everything else.
type Cart struct {
	CartID            string          `json:"cart_id"`
	TenantID          string          `json:"tenant_id"`
	StoreCode         string          `json:"store_code"`
	TerminalNo        int             `json:"terminal_no"`
	Status            string          `json:"status"`
	LineItems         []LineItem      `json:"line_items"`
	Taxes             []Tax           `json:"taxes"`
	Sales             Sales           `json:"sales"`
	SubtotalAmount    money.Amount    `json:"subtotal_amount"`
	BalanceAmount     money.Amount    `json:"balance_amount"`
	AppliedCommandIDs []string        `json:"applied_command_ids"`
	Raw               json.RawMessage `json:"-"`
	// ETag is daprd's version of the document.
	ETag string `json:"-"`
}

// LineItem is one line of a cart.
type LineItem struct {
	LineNo      int          `json:"line_no"`
	ItemCode    string       `json:"item_code"`
	Description string       `json:"description"`
	Quantity    int          `json:"quantity"`
	UnitPrice   money.Amount `json:"unit_price"`
	Amount      money.Amount `json:"amount"`
	TaxCode     string       `json:"tax_code"`
	IsCancelled bool         `json:"is_cancelled"`
}

// Tax is one tax of a cart, per tax code.
type Tax struct {
	TaxNo          int          `json:"tax_no"`
	TaxCode        string       `json:"tax_code"`
	TaxType        string       `json:"tax_type"`
	TaxName        string       `json:"tax_name"`
	TaxAmount      money.Amount `json:"tax_amount"`
	TargetAmount   money.Amount `json:"target_amount"`
	TargetQuantity int          `json:"target_quantity"`
}

// Sales are a cart's totals.
type Sales struct {
	TotalAmount        money.Amount `json:"total_amount"`
	TotalAmountWithTax money.Amount `json:"total_amount_with_tax"`
	TaxAmount          money.Amount `json:"tax_amount"`
	TotalQuantity      int          `json:"total_quantity"`
}

// Cart reads the stored document of cart id through daprd's state API, as
// the worker stores it. A cart that is not stored is ErrCartNotFound.
func (s *Stack) Cart(ctx context.Context, id string) (*Cart, error) {
	e, err := s.dapr.Get(ctx, id)
	if errors.Is(err, statepool.ErrNotFound) || (err == nil && len(e.Value) == 0) {
		return nil, fmt.Errorf("%w: %s", ErrCartNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("cartworkertest: read cart %s through daprd: %w", id, err)
	}
	c := &Cart{Raw: e.Value, ETag: e.ETag}
	if err := json.Unmarshal(e.Value, c); err != nil {
		return nil, fmt.Errorf("cartworkertest: cart %s: %w", id, err)
	}
	return c, nil
}

// DeadLetter is a message of the dead-letter stream, CART_DLQ: a command
// the worker can never apply, with why.
type DeadLetter struct {
	// Seq is its sequence in CART_DLQ, Subject "<prefix>.dlq.<cart>.<type>".
	Seq     uint64
	Subject string
	// Code is the reason's code (command.Code*), Reason its text.
	Code, Reason string
	// OriginalSubject is the subject the command was published on.
	OriginalSubject string
	// Deliveries is how many times the worker got the command.
	Deliveries int
	Time       time.Time
	// Data is the command's body (empty when it was too large to keep,
	// see command.HeaderDLQBodyOmitted), Header every header.
	Data   []byte
	Header nats.Header
}

// DeadLetters returns every message of CART_DLQ, oldest first, reading by
// sequence: no consumer is made and nothing changes. Before a worker has
// created the stream there are none.
func (s *Stack) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	st, err := s.js.Stream(ctx, command.StreamDeadLetters)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cartworkertest: stream %s: %w", command.StreamDeadLetters, err)
	}
	var out []DeadLetter
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cartworkertest: read %s at seq %d: %w", command.StreamDeadLetters, seq, err)
		}
		deliveries, _ := strconv.Atoi(m.Header.Get(command.HeaderDLQDeliveries))
		out = append(out, DeadLetter{
			Seq: m.Sequence, Subject: m.Subject, Time: m.Time, Data: m.Data, Header: m.Header,
			Code: m.Header.Get(command.HeaderDLQCode), Reason: m.Header.Get(command.HeaderDLQReason),
			OriginalSubject: m.Header.Get(command.HeaderDLQSubject), Deliveries: deliveries,
		})
		seq = m.Sequence + 1
	}
}

// BuildWorker builds the worker binary (github.com/cartworker/cartworker/cmd/worker,
// at the version the calling module requires) into dir with the go
// command, for WithWorkerBinary, and returns its path.
func BuildWorker(ctx context.Context, dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("cartworkertest: build the worker: %w", err)
	}
	out := filepath.Join(dir, "worker")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "github.com/cartworker/cartworker/cmd/worker")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cartworkertest: go build github.com/cartworker/cartworker/cmd/worker: %w\n%s", err, b)
	}
	return out, nil
}
