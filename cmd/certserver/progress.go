package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Progress modes of `domains add --progress`.
const (
	progressAuto  = "auto"  // bar on a terminal, lines otherwise
	progressBar   = "bar"   // a bar redrawn in place
	progressLines = "lines" // a plain line every progressInterval
	progressNone  = "none"
)

// progressInterval is how often lines mode prints a line.
const progressInterval = 5 * time.Second

// barWidth is the width of the bar, in characters.
const barWidth = 30

// progress reports how far a transfer of total items has gone, on w: in
// bar mode a bar redrawn in place after every update, in lines mode a
// plain line at most every interval (and always at the end), so that a
// log or a CI job gets a readable record. It is not safe for concurrent
// use.
type progress struct {
	w        io.Writer
	bar      bool
	what     string // the items, plural: "names"
	total    int
	interval time.Duration
	now      func() time.Time
	start    time.Time
	last     time.Time // when lines mode last printed
	printed  int       // the count lines mode last printed
	// eta adds the time left at the current rate to every report.
	eta bool
}

// newProgress returns a progress for mode on w, or nil for none. auto is
// a bar when w is a terminal.
func newProgress(mode string, w io.Writer, what string, total int, now func() time.Time) *progress {
	if mode == progressNone {
		return nil
	}
	t := now()
	return &progress{
		w: w, bar: mode == progressBar || mode == progressAuto && isTerminal(w),
		what: what, total: total, interval: progressInterval, now: now, start: t, last: t,
	}
}

// update reports that done items have been sent.
func (p *progress) update(done int) {
	if p == nil {
		return
	}
	t := p.now()
	switch {
	case p.bar:
		fmt.Fprintf(p.w, "\r%s", p.line(done, t))
	case t.Sub(p.last) >= p.interval:
		p.last, p.printed = t, done
		fmt.Fprintf(p.w, "%s\n", p.line(done, t))
	}
}

// clear erases the bar, so that other output to the same terminal starts
// on a clean line; the next update draws it again.
func (p *progress) clear() {
	if p != nil && p.bar {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// finish reports the last count, unless lines mode just printed it, and
// ends the bar's line.
func (p *progress) finish(done int) {
	switch {
	case p == nil:
	case p.bar:
		fmt.Fprintf(p.w, "\r%s\n", p.line(done, p.now()))
	case done != p.printed || done == 0:
		fmt.Fprintf(p.w, "%s\n", p.line(done, p.now()))
	}
}

// line describes the state after done items at t: "[#####-----]
// 120000/500000 names 24% 48000 names/s" for the bar, "sent
// 120000/500000 names (24%), 48000 names/s" for lines, each followed by
// "ETA 8s" (the time left at the rate so far) when eta is set.
func (p *progress) line(done int, t time.Time) string {
	pct := 100
	if p.total > 0 {
		pct = done * 100 / p.total
	}
	rate, eta := "-", ""
	if secs := t.Sub(p.start).Seconds(); secs > 0 {
		rate = fmt.Sprintf("%.0f", float64(done)/secs)
		if p.eta && done > 0 {
			eta = (time.Duration(float64(max(p.total-done, 0)) * secs / float64(done) * float64(time.Second))).Round(time.Second).String()
		}
	}
	if p.eta && eta == "" {
		eta = "-"
	}
	if !p.bar {
		line := fmt.Sprintf("sent %d/%d %s (%d%%), %s %s/s", done, p.total, p.what, pct, rate, p.what)
		if p.eta {
			line += ", ETA " + eta
		}
		return line
	}
	filled := barWidth * min(pct, 100) / 100
	line := fmt.Sprintf("[%s%s] %d/%d %s %3d%% %s %s/s ", strings.Repeat("#", filled), strings.Repeat("-", barWidth-filled),
		done, p.total, p.what, pct, rate, p.what)
	if p.eta {
		line += "ETA " + eta + " "
	}
	return line
}
