package report

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// MemoryTable writes one line per drain, its peak RSS against budget (MiB),
// and counts those over budget and those that did not complete: the table
// of `loadgen memory` (make bench-memory).
func MemoryTable(w io.Writer, runs []*BacklogRun, budget float64) (over, failed int) {
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
