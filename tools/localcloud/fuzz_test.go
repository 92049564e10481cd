package localcloud

import "testing"

// Schedule expressions from the template parse or fail cleanly.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"rate(1 day)", "rate(5 minutes)", "cron(0 3 * * ? *)", "cron(0 4 ? * MON *)", "cron(0 5 1 * ? *)", "rate(0 days)", "cron()", "rate(99999999999999999999 days)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ParseSchedule(s)
	})
}
