package metaleads

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

// Whatever the Graph API answers for a lead, hydration fails cleanly or yields a valid lead.
func FuzzHydrate(f *testing.F) {
	f.Add(200, []byte(sampleLead))
	f.Add(200, []byte(`{"id":"1","created_time":"not a time","field_data":[{"name":"email","values":[]}]}`))
	f.Add(400, []byte(`{"error":{"code":100,"error_subcode":33}}`))
	f.Add(200, []byte(`{"field_data":[{"name":"phone_number","values":["+1"]},{"name":"full_name","values":[""]}]}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		p, err := New().Parse(signed(sampleDelivery, appSecret), connector.Secret{})
		if err != nil {
			t.Fatal(err)
		}
		ev := p.Events[0]
		client := doerFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: status, Body: io.NopCloser(bytes.NewReader(body)), Header: http.Header{}}, nil
		})
		sec := connector.Secret{Current: map[string]string{"access_token": "page-token"}}
		if err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: "https://graph.facebook.com/v21.0", Client: client}); err != nil {
			return
		}
		if ev.Kind != canonical.KindLeadSubmitted || ev.Hydrate != nil {
			t.Fatalf("hydrated lead: kind %s, hydrate %v", ev.Kind, ev.Hydrate)
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("hydrated lead invalid: %v", err)
		}
	})
}
