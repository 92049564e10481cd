package main

import (
	"bytes"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/spf13/cobra"
)

// backfillItems is the size of the backfill the progress tests drive: newProgress with the
// backfill's label, advanced one step at a time as `crmsync backfill` advances it.
const backfillItems = 500

// driveBackfill reports backfillItems steps as a backfill does, a little apart so the bar (which
// redraws at most every 100 ms) is drawn many times.
func driveBackfill(cmd *cobra.Command) *progress {
	p := newProgress(cmd, "backfill twilio", backfillItems, false)
	for i := 0; i < backfillItems; i++ {
		p.Add(1)
		time.Sleep(4 * time.Millisecond)
	}
	p.Finish()
	return p
}

var (
	barCount = regexp.MustCompile(`\((\d+)/` + strconv.Itoa(backfillItems) + `\)`)
	barETA   = regexp.MustCompile(`\[[0-9hmsµn.]+:[0-9hmsµn.]+\]`)
)

// On a real terminal (a pseudo-terminal whose output the test reads, as a terminal emulator
// would) a backfill of 500 items shows a bar that moves: it is redrawn in place (carriage
// returns) with several distinct, increasing counts out of 500 and an ETA ([elapsed:left]).
func TestProgressBarMovesOnATerminal(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 120}); err != nil {
		t.Fatalf("size the pseudo-terminal: %v", err)
	}
	screen := make(chan []byte, 1)
	go func() {
		var out bytes.Buffer
		_, _ = io.Copy(&out, ptmx) // ends with EIO once the terminal side is closed
		screen <- out.Bytes()
	}()

	cmd := &cobra.Command{}
	cmd.SetErr(tty)
	p := driveBackfill(cmd)
	if err := tty.Close(); err != nil {
		t.Fatal(err)
	}
	var out []byte
	select {
	case out = <-screen:
	case <-time.After(10 * time.Second):
		t.Fatal("the pseudo-terminal's output did not end")
	}
	if p.bar == nil {
		t.Fatalf("stderr is a terminal but no bar was drawn; output %q", out)
	}

	var counts []int
	for _, m := range barCount.FindAllSubmatch(out, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		if len(counts) == 0 || counts[len(counts)-1] != n {
			counts = append(counts, n)
		}
	}
	if len(counts) < 5 {
		t.Fatalf("the bar showed %d distinct counts (%v), want several: %q", len(counts), counts, lastBytes(string(out), 600))
	}
	for i := 1; i < len(counts); i++ {
		if counts[i] <= counts[i-1] {
			t.Fatalf("counts went %v: not increasing", counts)
		}
	}
	if counts[len(counts)-1] < backfillItems*9/10 {
		t.Errorf("the last count drawn is %d of %d", counts[len(counts)-1], backfillItems)
	}
	if !barETA.Match(out) {
		t.Errorf("no ETA ([elapsed:left]) on the bar: %q", lastBytes(string(out), 600))
	}
	if !bytes.Contains(out, []byte("\r")) || !bytes.Contains(out, []byte("backfill twilio")) {
		t.Errorf("the bar is not redrawn in place with its label: %q", lastBytes(string(out), 600))
	}
	if bytes.Contains(out, []byte("backfill twilio: ")) {
		t.Errorf("plain progress lines on a terminal: %q", lastBytes(string(out), 600))
	}
	t.Logf("the bar moved through %d distinct counts: %v", len(counts), counts)
}

// With stderr not a terminal (a pipe, a file, CI logs) the same backfill prints plain lines: one
// per tenth, increasing, with an ETA until the last, which is the total.
func TestProgressPlainLinesOffATerminal(t *testing.T) {
	var buf bytes.Buffer
	cmd := &cobra.Command{}
	cmd.SetErr(&buf)
	if p := driveBackfill(cmd); p.bar != nil {
		t.Fatal("a bar was drawn on a buffer")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 10 {
		t.Fatalf("%d lines, want 10 (one per tenth):\n%s", len(lines), buf.String())
	}
	line := regexp.MustCompile(`^backfill twilio: (\d+)/500(, ETA \d+[0-9hms.]*)?$`)
	for i, l := range lines {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %d = %q, want %q", i, l, "backfill twilio: N/500, ETA ...")
		}
		got, _ := strconv.Atoi(m[1])
		if want := (i + 1) * backfillItems / 10; got != want {
			t.Errorf("line %d count = %d, want %d", i, got, want)
		}
		if last := i == len(lines)-1; (m[2] == "") != last {
			t.Errorf("line %d = %q: ETA on every line but the last", i, l)
		}
	}
	if strings.Contains(buf.String(), "\r") || strings.Contains(buf.String(), "|") {
		t.Errorf("bar drawing off a terminal:\n%q", buf.String())
	}
}
