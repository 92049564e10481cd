package metaleads

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/identity"
)

// DefaultBaseURL is the Graph API base used when api.BaseURL is empty.
const DefaultBaseURL = "https://graph.facebook.com/v21.0"

// leadFields is the Graph field list requested for a lead.
const leadFields = "id,created_time,field_data,ad_id,form_id,campaign_name"

// maxBody bounds how much of a Graph answer is read.
const maxBody = 1 << 20

// Lead is the Graph API lead object, as GET /{leadgen_id} returns it.
type Lead struct {
	ID           flexString  `json:"id"`
	CreatedTime  string      `json:"created_time"`
	FieldData    []FieldData `json:"field_data"`
	AdID         flexString  `json:"ad_id"`
	FormID       flexString  `json:"form_id"`
	CampaignName string      `json:"campaign_name"`
}

// FieldData is one answered lead form field.
type FieldData struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

// graphError is Graph's error envelope.
type graphError struct {
	Error struct {
		Code    int `json:"code"`
		Subcode int `json:"error_subcode"`
	} `json:"error"`
}

// Hydrate fetches the lead behind a thin leadgen notification (GET {BaseURL}/{leadgen_id} with
// the access_token) and turns the event into lead.submitted: Subject, Fields, Activity, GroupKey
// from the lead's email/phone, OccurredAt from created_time; Hydrate is cleared. A 404 (or
// Graph's "object does not exist", code 100/33) wraps connector.ErrNotFound; 429, 5xx, Graph's
// throttling codes and network failures wrap connector.ErrTransient.
func (*Connector) Hydrate(ctx context.Context, ev *canonical.Event, sec connector.Secret, api connector.API) error {
	if ev == nil || ev.Hydrate == nil || ev.Hydrate.Object != "lead" || ev.Hydrate.Resource == "" {
		return fmt.Errorf("%w: meta-leads: event has no lead to hydrate", connector.ErrUnusable)
	}
	id := ev.Hydrate.Resource
	if strings.ContainsAny(id, "/?#%\\ ") || strings.Contains(id, "..") {
		return fmt.Errorf("%w: meta-leads: malformed leadgen id", connector.ErrUnusable)
	}
	token := sec.Get(SecretAccessToken)
	if token == "" {
		return errors.New("meta-leads: no access_token configured")
	}
	lead, err := fetchLead(ctx, api, id, token)
	if err != nil {
		return err
	}
	return apply(ev, lead)
}

func fetchLead(ctx context.Context, api connector.API, id, token string) (*Lead, error) {
	base := strings.TrimRight(api.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	client := api.Client
	if client == nil {
		client = http.DefaultClient
	}
	q := url.Values{"access_token": {token}, "fields": {leadFields}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+url.PathEscape(id)+"?"+q.Encode(), nil)
	if err != nil {
		return nil, errors.New("meta-leads: cannot build lead request")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		// The URL carries the access token: report the cause only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: meta-leads: fetch lead: %v", connector.ErrTransient, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("%w: meta-leads: read lead: %v", connector.ErrTransient, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%w: meta-leads: lead not found", connector.ErrNotFound)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, fmt.Errorf("%w: meta-leads: graph status %d", connector.ErrTransient, resp.StatusCode)
	default:
		var ge graphError
		_ = json.Unmarshal(body, &ge)
		switch code := ge.Error.Code; {
		case code == 100 && ge.Error.Subcode == 33:
			return nil, fmt.Errorf("%w: meta-leads: lead does not exist or is not readable", connector.ErrNotFound)
		case code == 1 || code == 2 || code == 4 || code == 17 || code == 32 || code == 613 || (code >= 80000 && code <= 80014):
			return nil, fmt.Errorf("%w: meta-leads: graph error code %d", connector.ErrTransient, code)
		default:
			return nil, fmt.Errorf("meta-leads: graph status %d, error code %d", resp.StatusCode, code)
		}
	}
	var lead Lead
	if err := json.Unmarshal(body, &lead); err != nil {
		return nil, fmt.Errorf("%w: meta-leads: lead is not JSON", connector.ErrUnusable)
	}
	return &lead, nil
}

// fieldMap maps Meta's standard lead form field names to the contact vocabulary.
var fieldMap = map[string]string{
	"first_name":   "first_name",
	"last_name":    "last_name",
	"email":        "email",
	"phone_number": "phone",
	"company_name": "company",
	"job_title":    "job_title",
}

func apply(ev *canonical.Event, lead *Lead) error {
	contact := map[string]string{"lead_source": Name}
	var subject canonical.Person
	unmapped := append([]string(nil), ev.Unmapped...)
	fullName := ""
	for _, fd := range lead.FieldData {
		val := ""
		for _, v := range fd.Values {
			if v = strings.TrimSpace(v); v != "" {
				val = v
				break
			}
		}
		name := strings.ToLower(strings.TrimSpace(fd.Name))
		path := "field_data[" + fd.Name + "]"
		if val == "" {
			continue
		}
		switch name {
		case "full_name":
			fullName = val
			continue
		case "email":
			n, ok := identity.Email(val)
			if !ok {
				unmapped = append(unmapped, path)
				continue
			}
			subject.Emails = append(subject.Emails, n)
			val = n
		case "phone_number":
			n, ok := identity.Phone(val)
			if !ok {
				unmapped = append(unmapped, path)
				continue
			}
			subject.Phones = append(subject.Phones, n)
			val = n
		}
		key, ok := fieldMap[name]
		if !ok {
			unmapped = append(unmapped, path)
			continue
		}
		if _, dup := contact[key]; !dup {
			contact[key] = val
		}
	}
	subject.Name = fullName
	if subject.Name == "" {
		subject.Name = strings.TrimSpace(contact["first_name"] + " " + contact["last_name"])
	}
	if lead.CampaignName != "" {
		contact["campaign"] = lead.CampaignName
	}

	if lead.CreatedTime != "" {
		t, err := parseGraphTime(lead.CreatedTime)
		if err != nil {
			return fmt.Errorf("%w: meta-leads: lead created_time malformed", connector.ErrUnusable)
		}
		ev.OccurredAt = t
	}
	leadID := ev.Hydrate.Resource
	if ev.ExternalIDs == nil {
		ev.ExternalIDs = map[string]string{}
	}
	putIfMissing(ev.ExternalIDs, "form_id", string(lead.FormID))
	putIfMissing(ev.ExternalIDs, "ad_id", string(lead.AdID))

	act := &canonical.Activity{
		ID:     "form:" + leadID,
		Type:   "form",
		Status: "submitted",
	}
	for _, e := range subject.Emails {
		act.Participants = append(act.Participants, canonical.Participant{Role: "from", Email: e, Name: subject.Name})
	}
	for _, p := range subject.Phones {
		act.Participants = append(act.Participants, canonical.Participant{Role: "from", Phone: p, Name: subject.Name})
	}
	if f := ev.ExternalIDs["form_id"]; f != "" {
		act.Attrs = map[string]string{"form_id": f}
		if a := ev.ExternalIDs["ad_id"]; a != "" {
			act.Attrs["ad_id"] = a
		}
	}

	ev.Kind = canonical.KindLeadSubmitted
	ev.Subject = subject
	ev.Fields = map[string]map[string]string{"contact": contact}
	ev.Activity = act
	ev.GroupKey = identity.GroupKey(subject.Emails, subject.Phones, Name, leadID)
	ev.Unmapped = sortedUnique(unmapped)
	ev.Hydrate = nil
	return nil
}

func putIfMissing(m map[string]string, k, v string) {
	if v != "" && m[k] == "" {
		m[k] = v
	}
}

// parseGraphTime reads Graph's created_time: ISO 8601 with a +0000 offset, RFC 3339, or unix
// seconds.
func parseGraphTime(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02T15:04:05-0700", time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	var n flexInt
	if err := n.UnmarshalJSON([]byte(s)); err == nil && n > 0 {
		return time.Unix(int64(n), 0).UTC(), nil
	}
	return time.Time{}, errors.New("unrecognised time")
}
