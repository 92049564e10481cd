package association

import (
	"context"
	"testing"
	"time"
)

// BenchmarkAssociate is one activity's association: identities to contact, account and deal,
// against in-memory lookups (the worker's reads are DynamoDB calls, counted separately).
func BenchmarkAssociate(b *testing.B) {
	t := time.Date(2026, 3, 11, 15, 0, 0, 0, time.UTC)
	lk := Static{
		Emails:          map[string]string{"ada@example.com": "c1"},
		Phones:          map[string]string{"+14155550123": "c1"},
		ContactAccounts: map[string]string{"c1": "a1"},
		Domains:         map[string]string{"example.com": "a1"},
		Deals: map[string][]Deal{"a1": {{ID: "d1", Open: false, LastActivityAt: t}, {ID: "d2", Open: true, LastActivityAt: t.Add(time.Hour)},
			{ID: "d3", Open: true, LastActivityAt: t.Add(-time.Hour)}}},
	}
	cases := map[string]Input{
		"known-email":  {Emails: []string{"Ada@Example.com"}, Phones: []string{"+1 415 555 0123"}},
		"phone-only":   {Phones: []string{"+14155550123"}},
		"unknown":      {Emails: []string{"grace@example.org"}},
		"explicit-ids": {Contact: &Link{ID: "c1", Method: ExplicitID}, AccountID: "a1", DealID: "d2"},
	}
	ctx := context.Background()
	for name, in := range cases {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Associate(ctx, in, lk); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
