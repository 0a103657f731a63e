package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/certserver/certserver/certserver/api"
)

// importReport prints the report of an import as its outcomes come, a
// line per certificate (or a JSON document), and keeps only the counts by
// result for the summary at the end.
type importReport struct {
	// w buffers the output between flushes, so that a progress bar on
	// the same terminal is erased before it and drawn again after it.
	w      *bufio.Writer
	json   bool
	tw     *tabwriter.Writer
	prog   *progress
	counts map[string]int
	done   int
}

// importFlushEvery is how many table lines are aligned together: the
// table is flushed every so many lines, so it is printed as it goes.
const importFlushEvery = 500

func newImportReport(w io.Writer, asJSON bool, prog *progress) *importReport {
	r := &importReport{w: bufio.NewWriter(w), json: asJSON, prog: prog, counts: map[string]int{}}
	if asJSON {
		fmt.Fprint(r.w, "{\n  \"items\": [")
	} else {
		r.tw = tabwriter.NewWriter(r.w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(r.tw, "RESULT\tNAME\tEXPIRES\tPATH\tDETAIL")
	}
	return r
}

// add reports one outcome.
func (r *importReport) add(o importOutcome) {
	r.counts[o.Result]++
	r.done++
	if r.json {
		b, _ := json.MarshalIndent(o, "    ", "  ")
		sep := ","
		if r.done == 1 {
			sep = ""
		}
		fmt.Fprintf(r.w, "%s\n    %s", sep, b)
	} else {
		fmt.Fprintln(r.tw, tableLine(o))
	}
	if r.done%importFlushEvery == 0 {
		r.flush()
	}
}

// flush prints what the report holds and moves the progress report on.
func (r *importReport) flush() {
	r.prog.clear()
	if r.tw != nil {
		r.tw.Flush()
	}
	r.w.Flush()
	r.prog.update(r.done)
}

// finish ends the report with its summary.
func (r *importReport) finish() {
	r.prog.clear()
	if r.tw != nil {
		r.tw.Flush()
	}
	r.w.Flush()
	r.prog.finish(r.done)
	if r.json {
		b, _ := json.MarshalIndent(r.counts, "  ", "  ")
		fmt.Fprintf(r.w, "\n  ],\n  \"summary\": %s\n}\n", b)
	} else {
		fmt.Fprintln(r.w, summary(r.counts))
	}
	r.w.Flush()
}

// tableLine is the tab-separated report line of one outcome.
func tableLine(o importOutcome) string {
	name, expires := "-", "-"
	if o.ID != "" {
		name = o.ID
		if len(o.Names) > 1 {
			name += fmt.Sprintf(" (+%d)", len(o.Names)-1)
		}
	}
	if !o.NotAfter.IsZero() {
		expires = day(o.NotAfter)
	}
	detail := o.Reason
	if o.Detail != "" && o.Reason != api.ReasonExpired && o.Reason != api.ReasonKeyMismatch {
		if detail != "" {
			detail += ": "
		}
		detail += o.Detail
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", o.Result, name, expires, o.Path, detail)
}
