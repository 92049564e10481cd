package decide

import (
	"testing"
	"time"
)

// benchContact is a contact as a typical lead leaves it: identity from the CRM, attribution and
// engagement from vendors.
func benchContact() Record {
	t := time.Date(2026, 3, 11, 15, 0, 0, 0, time.UTC)
	p := func(v, src, key string, h int) Provenance {
		return Provenance{Value: v, Source: src, EventKey: key, OccurredAt: t.Add(time.Duration(h) * time.Hour)}
	}
	return Record{
		"first_name": p("Ada", "crm", "crm:c1", 0), "last_name": p("Lovelace", "crm", "crm:c1", 0),
		"email": p("ada@example.com", "typeform", "typeform:e1", 0), "phone": p("+14155550123", "typeform", "typeform:e1", 0),
		"company": p("Analytical Engines Ltd", "typeform", "typeform:e1", 0), "lead_source": p("typeform", "typeform", "typeform:e1", 0),
		"utm_source": p("linkedin", "typeform", "typeform:e1", 0), "utm_medium": p("paid_social", "typeform", "typeform:e1", 0),
		"utm_campaign": p("spring_webinar", "typeform", "typeform:e1", 0), "last_activity_at": p("2026-03-11T15:00:00Z", "typeform", "typeform:e1", 0),
		"last_call_status": p("ringing", "twilio", "twilio:call:CA1:1", 1),
	}
}

// BenchmarkDecide is the policy decision for one entity of one event.
func BenchmarkDecide(b *testing.B) {
	pol := realPolicy(b)
	at := time.Date(2026, 3, 11, 17, 0, 0, 0, time.UTC)
	cases := map[string]Proposal{
		// A call-status update: two engagement fields (rule latest).
		"call-status": {Source: "twilio", EventKey: "twilio:call:CA1:3", OccurredAt: at,
			Fields: map[string]string{"last_call_status": "completed", "last_activity_at": "2026-03-11T17:00:00Z", "phone": "+14155550123"}},
		// A second lead for a known contact: identity, firmographic and attribution fields.
		"lead": {Source: "meta-leads", EventKey: "meta-leads:1", OccurredAt: at, Fields: map[string]string{
			"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "+14155550123",
			"company": "Analytical Engines", "job_title": "Head of Operations", "lead_source": "meta", "campaign": "Spring",
			"utm_source": "facebook", "utm_medium": "paid_social", "utm_campaign": "spring_webinar"}},
	}
	for name, prop := range cases {
		b.Run(name, func(b *testing.B) {
			rec := benchContact()
			b.ReportAllocs()
			for b.Loop() {
				ds := Decide(pol, "contact", rec, prop)
				if Changed(ds) {
					_ = Apply(rec, ds)
				}
			}
		})
	}
}
