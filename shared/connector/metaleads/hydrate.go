package metaleads

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/identity"
)

// DefaultBaseURL is the Graph API base used when api.BaseURL is empty.
const DefaultBaseURL = "https://graph.facebook.com/v21.0"

// leadFields are the lead fields the leads_retrieval permission reads. adFields are the ad and
// campaign fields, which also need ads_management: requested only when the secret's ad_fields is
// "true" (without the permission Graph refuses the whole request).
const (
	leadFields = "id,created_time,field_data,form_id"
	adFields   = "ad_id,ad_name,adset_id,campaign_id,campaign_name"
)

// SecretAdFields is the secret field that, set to "true", makes hydration request the ad and
// campaign fields (the access token's app then needs ads_management).
const SecretAdFields = "ad_fields"

// maxBody bounds how much of a Graph answer is read.
const maxBody = 1 << 20

// Lead is the Graph API lead object, as GET /{leadgen_id} returns it.
type Lead struct {
	ID           flexString  `json:"id"`
	CreatedTime  string      `json:"created_time"`
	FieldData    []FieldData `json:"field_data"`
	FormID       flexString  `json:"form_id"`
	AdID         flexString  `json:"ad_id"`
	AdName       string      `json:"ad_name"`
	AdsetID      flexString  `json:"adset_id"`
	CampaignID   flexString  `json:"campaign_id"`
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
		Message     string `json:"message"`
		Code        int    `json:"code"`
		Subcode     int    `json:"error_subcode"`
		IsTransient bool   `json:"is_transient"`
	} `json:"error"`
}

// Hydrate fetches the lead behind a thin leadgen notification (GET {BaseURL}/{leadgen_id} with
// the access_token, fields id, created_time, field_data, form_id, plus the ad and campaign
// fields when ad_fields is "true") and turns the event into lead.submitted: Subject, Fields,
// Activity, GroupKey from the lead's email/phone, OccurredAt from created_time; Hydrate is
// cleared. Errors (see classify): a 404 or a deleted lead wraps connector.ErrNotFound; 429,
// 5xx, rate-limit codes and network failures wrap connector.ErrTransient; token, permission and
// parameter errors wrap connector.ErrPermanent.
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
		return fmt.Errorf("%w: meta-leads: no access_token configured", connector.ErrPermanent)
	}
	fields := leadFields
	withAds := strings.EqualFold(strings.TrimSpace(sec.Get(SecretAdFields)), "true")
	if withAds {
		fields += "," + adFields
	}
	lead, err := fetchLead(ctx, api, id, token, fields)
	if err != nil {
		return err
	}
	if !withAds {
		// Only what was asked for is used, whatever the answer holds.
		lead.AdName, lead.AdsetID, lead.CampaignID, lead.CampaignName = "", "", "", ""
	}
	return apply(ev, lead)
}

func fetchLead(ctx context.Context, api connector.API, id, token, fields string) (*Lead, error) {
	base := strings.TrimRight(api.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	client := api.Client
	if client == nil {
		client = http.DefaultClient
	}
	q := url.Values{"access_token": {token}, "fields": {fields}}
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
	if resp.StatusCode != http.StatusOK {
		return nil, classify(resp.StatusCode, body)
	}
	var lead Lead
	if err := json.Unmarshal(body, &lead); err != nil {
		return nil, fmt.Errorf("%w: meta-leads: lead is not JSON", connector.ErrUnusable)
	}
	return &lead, nil
}

// classify maps a Graph API error answer to a sentinel, by its error code first
// (https://developers.facebook.com/docs/graph-api/guides/error-handling), then by status:
//
//   - code 100 with subcode 33 (the lead does not exist or was deleted), or a 404: ErrNotFound;
//   - codes 1, 2 (temporary), 4, 17, 32, 341, 613, 80000–80014 (rate limits), is_transient,
//     429 and 5xx: ErrTransient;
//   - codes 190 and 102 (token), 10 and 200–299 (permission), 100 (invalid parameter), 3, and
//     any other 4xx: ErrPermanent, with the code and Meta's message.
func classify(status int, body []byte) error {
	var ge graphError
	_ = json.Unmarshal(body, &ge)
	code, sub := ge.Error.Code, ge.Error.Subcode
	switch {
	case code == 100 && sub == 33:
		return fmt.Errorf("%w: meta-leads: lead does not exist or was deleted (code 100/33)", connector.ErrNotFound)
	case code == 1 || code == 2 || code == 4 || code == 17 || code == 32 || code == 341 || code == 613 ||
		(code >= 80000 && code <= 80014) || ge.Error.IsTransient:
		return fmt.Errorf("%w: meta-leads: graph error code %d", connector.ErrTransient, code)
	case code == 190 || code == 102 || code == 10 || (code >= 200 && code <= 299) || code == 100 || code == 3:
		return fmt.Errorf("%w: meta-leads: graph error code %d: %s", connector.ErrPermanent, code, shortMessage(ge.Error.Message))
	case status == http.StatusNotFound:
		return fmt.Errorf("%w: meta-leads: lead not found", connector.ErrNotFound)
	case status == http.StatusTooManyRequests || status >= 500:
		return fmt.Errorf("%w: meta-leads: graph status %d", connector.ErrTransient, status)
	case status >= 400:
		return fmt.Errorf("%w: meta-leads: graph status %d, error code %d: %s", connector.ErrPermanent, status, code, shortMessage(ge.Error.Message))
	default:
		return fmt.Errorf("meta-leads: unexpected graph status %d", status)
	}
}

// shortMessage keeps Meta's error message short and printable (it names fields and ids, never
// the lead's answers).
func shortMessage(s string) string {
	if len(s) > 160 {
		s = s[:160]
	}
	return strconv.Quote(s)
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
	putIfMissing(ev.ExternalIDs, "adset_id", string(lead.AdsetID))
	putIfMissing(ev.ExternalIDs, "campaign_id", string(lead.CampaignID))

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
		if lead.AdName != "" {
			act.Attrs["ad_name"] = lead.AdName
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
