package reconcile

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"90m": 90 * time.Minute, "72h": 72 * time.Hour, "8d": 8 * 24 * time.Hour, "0d": 0} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "-1h", "1.5d", "-2d"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"version: 1\njobs: {}\n", "jobs.parity: missing"},
		{"version: 1\njobs:\n  parity: {lookback: 1h, interval: 1x}\n  consistency: {lookback: 1h, interval: 1h}\n  mapping-review: {lookback: 1h, interval: 1h}\n", "jobs.parity.interval"},
		{"version: 1\njobs:\n  nightly: {}\n", "jobs.nightly: unknown job"},
		{"version: 1\nsurprise: 1\n", "field surprise not found"},
		{"jobs: {}\n", "version: required"},
		{"version: 1\nsources:\n  msgraph: {settle: 1h}\n", "sources.msgraph: not a listable source"},
		{"version: 1\nslas:\n  parity: {drift_percent: -1}\n", "must not be negative"},
	} {
		_, err := ParseConfig("r.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "r.yaml") {
			t.Errorf("ParseConfig(%q) = %v, want an error naming the file and %q", tc.yaml, err, tc.want)
		}
	}
}
