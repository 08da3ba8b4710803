package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
)

// runMemory prints every backlog drain's peak RSS and fails when one is
// over the budget or did not complete: the check of `make bench-memory`.
func runMemory(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("memory", stderr)
	dir := fs.String("backlog", "", "directory of backlog drains (*.json) written by 'loadgen backlog'")
	budget := fs.Float64("budget-mib", 64, "the peak RSS (VmHWM) every drain must stay at or under, in MiB")
	if err := parse(fs, args); err != nil {
		return err
	}
	runs, err := readBacklog(*dir)
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		return usageError{errors.New("-backlog: no drains found")}
	}
	over, failed := memoryTable(stdout, runs, *budget)
	switch {
	case failed > 0:
		return fmt.Errorf("%d drain(s) did not complete", failed)
	case over > 0:
		return fmt.Errorf("%d drain(s) over the %.0f MiB budget", over, *budget)
	}
	return nil
}

// memoryTable writes one line per drain and counts those over budget and
// those that did not complete.
func memoryTable(w io.Writer, runs []*BacklogRun, budget float64) (over, failed int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "drain\tconsumer\tround\tcommands\tapplied\trefused\tcommands/s\tpeak RSS\tbudget\t")
	for _, r := range runs {
		verdict := "ok"
		switch {
		case !r.Complete():
			verdict, failed = "FAILED: "+r.Failure(), failed+1
		case r.PeakRSSMiB > budget:
			verdict, over = "OVER", over+1
		}
		fmt.Fprintf(tw, "%s (%d × %d)\t%s\t%d\t%d\t%d\t%d\t%.0f\t%.1f MiB\t%s\t\n",
			r.Scenario, r.Carts, r.AddItemsPerCart, r.Mode, r.Round, r.Commands, r.Applied, r.Refused,
			r.CommandsPerS, r.PeakRSSMiB, verdict)
	}
	_ = tw.Flush()
	return over, failed
}
