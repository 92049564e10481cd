package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/registry"
)

// LateFunc re-sends a delivery's events straight to the ingest queue, as a re-send after the SQS
// deduplication window looks to SQS: with a deduplication id it does not remember (n numbers the
// re-send). It returns the keys it enqueued.
type LateFunc func(ctx context.Context, d *Delivery, n int) ([]string, error)

// Sender posts a plan's deliveries to the local stack as the vendors would.
type Sender struct {
	// BaseURL is the HTTP API, e.g. http://127.0.0.1:3000.
	BaseURL string
	// Secrets are the connectors' secrets, by connector name (each delivery is signed with
	// Current at send time, so timestamped schemes stay inside their tolerance).
	Secrets map[string]connector.Secret
	// Concurrency is how many deliveries are in flight at once (default 16).
	Concurrency int
	// MaxAttempts bounds the attempts of one delivery answered 5xx (default 12).
	MaxAttempts int
	// RetryDelay is the vendor's first retry delay, doubled per attempt up to 8× (default 500ms).
	RetryDelay time.Duration
	// Late re-sends a Late duplicate; required when the plan has any.
	Late LateFunc
	// Client is the HTTP client (default: 30s timeout).
	Client *http.Client
	// Progress, when set, is called every second with the number of sends done.
	Progress func(done, total int)
	// Seed seeds the Mailgun tokens.
	Seed uint64
}

// Stats is what sending did.
type Stats struct {
	// Sends is the number of scheduled sends (unique + duplicates); Requests the HTTP requests
	// made (vendor retries included).
	Sends, Requests int
	// Statuses counts HTTP answers by status ("error" for transport failures).
	Statuses map[string]int
	// Retried counts deliveries the vendor had to retry after a 5xx (SQS refusing the send).
	Retried int
	// Accepted lists the keys a webhook accepted (answered 2xx, not quarantined). A late re-send
	// never marks a key accepted: it goes around the webhook, so counting it would hide a webhook
	// that refused or dropped the event.
	Accepted map[string]bool
	// Enqueued lists the keys the harness enqueued itself, past the webhook (late re-sends).
	Enqueued map[string]bool
	// AcceptedAt is when a webhook first accepted each key.
	AcceptedAt map[string]time.Time
	// Quarantined lists the keys of deliveries answered "quarantined".
	Quarantined map[string]bool
	// GaveUp lists the keys of deliveries never accepted within MaxAttempts.
	GaveUp map[string]bool
	// Refused lists the keys of authentic deliveries answered 4xx (never retried: a finding).
	Refused map[string]string
	// Late counts duplicates enqueued past the webhook.
	Late int
}

// Run sends the plan's schedule and returns when every send is settled.
func (s *Sender) Run(ctx context.Context, plan *Plan) (*Stats, error) {
	if s.Concurrency <= 0 {
		s.Concurrency = 16
	}
	if s.MaxAttempts <= 0 {
		s.MaxAttempts = 12
	}
	if s.RetryDelay <= 0 {
		s.RetryDelay = 500 * time.Millisecond
	}
	if s.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = s.Concurrency * 2
		s.Client = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	}
	st := &Stats{Sends: len(plan.Schedule), Statuses: map[string]int{}, Accepted: map[string]bool{}, Enqueued: map[string]bool{}, AcceptedAt: map[string]time.Time{},
		Quarantined: map[string]bool{}, GaveUp: map[string]bool{}, Refused: map[string]string{}}
	var mu sync.Mutex
	var done atomic.Int64
	var firstErr error
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < s.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(s.Seed, uint64(w)))
			for i := range work {
				snd := plan.Schedule[i]
				if snd.Late {
					keys, err := s.Late(ctx, snd.Delivery, i)
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = fmt.Errorf("late re-send of %s: %w", snd.Delivery.Event.Key, err)
					}
					for _, k := range keys {
						st.Enqueued[k] = true
					}
					st.Late++
					mu.Unlock()
					done.Add(1)
					continue
				}
				s.deliver(ctx, snd.Delivery, rnd, st, &mu)
				done.Add(1)
			}
		}(w)
	}
	stop := make(chan struct{})
	if s.Progress != nil {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					s.Progress(int(done.Load()), len(plan.Schedule))
				}
			}
		}()
	}
	for i := range plan.Schedule {
		select {
		case work <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	close(stop)
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return st, firstErr
}

// deliver sends one delivery until a webhook accepts it, refuses it with a 4xx, or MaxAttempts.
func (s *Sender) deliver(ctx context.Context, d *Delivery, rnd *rand.Rand, st *Stats, mu *sync.Mutex) {
	key := d.Event.Key
	delay := s.RetryDelay
	for attempt := 1; ; attempt++ {
		status, body, err := s.post(ctx, d, rnd)
		mu.Lock()
		st.Requests++
		label := fmt.Sprint(status)
		if err != nil {
			label = "error"
		}
		st.Statuses[label]++
		if attempt == 2 {
			st.Retried++
		}
		switch {
		case err == nil && status/100 == 2:
			if strings.Contains(body, `"quarantined"`) {
				st.Quarantined[key] = true
			} else if !st.Accepted[key] {
				st.Accepted[key] = true
				st.AcceptedAt[key] = time.Now()
			}
			delete(st.GaveUp, key)
			mu.Unlock()
			return
		case err == nil && status/100 == 4:
			if !st.Accepted[key] {
				st.Refused[key] = fmt.Sprintf("%d %s", status, strings.TrimSpace(body))
			}
			mu.Unlock()
			return
		case attempt >= s.MaxAttempts || ctx.Err() != nil:
			if !st.Accepted[key] {
				st.GaveUp[key] = true
			}
			mu.Unlock()
			return
		}
		mu.Unlock()
		// 5xx or no answer: the vendor retries this delivery later.
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		delay = min(delay*2, 8*s.RetryDelay)
	}
}

// post signs the delivery now, as its vendor would, and sends it.
func (s *Sender) post(ctx context.Context, d *Delivery, rnd *rand.Rand) (int, string, error) {
	req, err := Sign(d, s.BaseURL, s.Secrets[d.Connector], time.Now(), rnd)
	if err != nil {
		return 0, "", err
	}
	u := strings.TrimRight(s.BaseURL, "/") + req.Path
	if req.RawQuery != "" {
		u += "?" + req.RawQuery
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(req.Body))
	if err != nil {
		return 0, "", err
	}
	for k, v := range req.Headers {
		hr.Header.Set(k, v)
	}
	resp, err := s.Client.Do(hr)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), nil
}

// Sign returns the request a delivery's vendor would send at now: signed with sec.Current by the
// connector's own Signer, for baseURL/webhooks/<connector>. A Mailgun delivery gets a fresh random
// token (Mailgun signs each attempt with a new one).
func Sign(d *Delivery, baseURL string, sec connector.Secret, now time.Time, rnd *rand.Rand) (*connector.Request, error) {
	c, err := registry.New(d.Connector)
	if err != nil {
		return nil, err
	}
	signer, ok := c.(connector.Signer)
	if !ok {
		return nil, fmt.Errorf("connector %s cannot sign", d.Connector)
	}
	body := d.Body
	if d.Connector == "mailgun" {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil {
			return nil, errors.New("mailgun delivery is not a JSON object")
		}
		tok := make([]byte, 25)
		for i := range tok {
			tok[i] = byte(rnd.IntN(256))
		}
		obj["signature"], _ = json.Marshal(map[string]string{"token": fmt.Sprintf("%x", tok)})
		if body, err = json.Marshal(obj); err != nil {
			return nil, err
		}
	}
	path := "/webhooks/" + d.Connector
	req := &connector.Request{Method: http.MethodPost, Path: path, Headers: map[string]string{"content-type": d.ContentType},
		Body: append([]byte(nil), body...), PublicURL: strings.TrimRight(baseURL, "/") + path, ReceivedAt: now}
	if err := signer.Sign(req, sec, now); err != nil {
		return nil, fmt.Errorf("sign %s: %w", d.Connector, err)
	}
	return req, nil
}

// GotIn reports whether the event keyed key reached the queue: a webhook accepted it, or the
// harness enqueued it past the webhook.
func (s *Stats) GotIn(key string) bool { return s.Accepted[key] || s.Enqueued[key] }
