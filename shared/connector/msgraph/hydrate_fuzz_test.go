package msgraph

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

// Whatever Graph answers (any status, any body), hydration fails cleanly or yields a valid,
// fully hydrated event.
func FuzzHydrate(f *testing.F) {
	f.Add(200, []byte(receivedMessage), false)
	f.Add(200, []byte(`{"iCalUId":"u","isCancelled":true,"start":{"dateTime":"2026-03-02T10:00:00","timeZone":"Mars/Olympus"}}`), true)
	f.Add(404, []byte(`{}`), false)
	f.Add(500, []byte(``), true)
	f.Add(200, []byte(`{"internetMessageId":"","from":{"emailAddress":{"address":"@"}},"sentDateTime":"yesterday"}`), false)
	f.Fuzz(func(t *testing.T, status int, body []byte, event bool) {
		item := itemMsg
		if event {
			item = itemEvt
		}
		both := connector.Secret{Current: map[string]string{"client_state": state, "access_token": "graph-token"},
			Previous: map[string]string{"client_state": prevState}}
		p, err := New().Parse(req(`{"value":[`+item+`]}`), both)
		if err != nil || len(p.Events) != 1 {
			t.Fatalf("Parse: %v", err)
		}
		ev := p.Events[0]
		client := doerFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: status, Body: io.NopCloser(bytes.NewReader(body)), Header: http.Header{}}, nil
		})
		err = New(WithInternalDomains("acme.com")).Hydrate(context.Background(), &ev, both, connector.API{BaseURL: "https://graph.microsoft.com/v1.0", Client: client})
		if err != nil {
			return
		}
		if ev.Kind == canonical.KindNotification || ev.Hydrate != nil || ev.Activity == nil {
			t.Fatalf("hydrated event is still thin: %+v", ev)
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("hydrated event invalid: %v", err)
		}
	})
}
