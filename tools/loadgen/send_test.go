package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/crmsync/crmsync/tools/samples"
)

// A late re-send goes around the webhook, so it never marks an event accepted: a webhook that
// refused the event stays a refusal even when the late re-send got the event into the queue
// (issue 16: the late re-sends used to mark keys accepted, hiding such refusals).
func TestLateResendsDoNotExcuseTheWebhook(t *testing.T) {
	secs, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		t.Fatal(err)
	}
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"signature mismatch"}`, http.StatusUnauthorized)
	}))
	defer refusing.Close()
	d := plan(3).Unique[0]
	p := &Plan{Unique: []*Delivery{d}, Schedule: []Send{{Delivery: d}, {Delivery: d, Dup: true, Late: true}}}
	s := &Sender{BaseURL: refusing.URL, Secrets: secs, Concurrency: 1,
		Late: func(ctx context.Context, d *Delivery, n int) ([]string, error) { return []string{d.Event.Key}, nil }}
	st, err := s.Run(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	k := d.Event.Key
	if st.Accepted[k] {
		t.Errorf("Accepted[%s] = true after a refusal and a late re-send, want false", k)
	}
	if !st.Enqueued[k] || !st.GotIn(k) {
		t.Errorf("Enqueued[%s] = %v, GotIn = %v: want the late re-send recorded", k, st.Enqueued[k], st.GotIn(k))
	}
	if st.Refused[k] == "" {
		t.Errorf("Refused[%s] empty: want the webhook's 401 recorded", k)
	}
}
