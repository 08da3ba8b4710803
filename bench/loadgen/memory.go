package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cartworker/cartworker/bench/report"
)

// runMemory prints every backlog drain's peak RSS and fails when one is
// over the budget or did not complete: the check of `make bench-memory`.
func runMemory(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("memory", stderr)
	dir := fs.String("backlog", "", "directory of backlog drains (*.json) written by 'loadgen backlog'")
	budget := fs.Float64("budget-mib", report.FloorMaxRSSMiB, "the peak RSS (VmHWM) every drain must stay at or under, in MiB (the report's floor)")
	if err := parse(fs, args); err != nil {
		return err
	}
	runs, err := report.ReadBacklog(*dir)
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		return usageError{errors.New("-backlog: no drains found")}
	}
	over, failed := report.MemoryTable(stdout, runs, *budget)
	switch {
	case failed > 0:
		return fmt.Errorf("%d drain(s) did not complete", failed)
	case over > 0:
		return fmt.Errorf("%d drain(s) over the %.0f MiB budget", over, *budget)
	}
	return nil
}
