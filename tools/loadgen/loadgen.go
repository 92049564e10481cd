// Package loadgen owns the reliability suite's vendor load: a seeded population of people, the
// deliveries every connector's vendor would send about them (realistic bodies, per person, signed
// with each connector's own Signer at send time), the vendor API fixtures that thin
// notifications (Meta leads, Graph messages and events) hydrate from, a send schedule with
// duplicate deliveries and deliveries out of order, and the sender that posts them over HTTP at a
// configurable concurrency and, acting as the vendor, retries any delivery answered 5xx.
//
// Every unique delivery carries the oracle's description of its event (oracle.Event): what the
// generator put in the payload, in the CRM's vocabulary, written from the vendors' semantics and
// the design — never by running a connector — so the oracle can check the connectors too.
//
// People come in two shapes so that a person's events always share one identity (crmsync never
// merges two contacts, so a person whose events carried disjoint identities could legitimately end
// as two contacts depending on arrival order): phone people, whose every event carries their phone
// (Twilio calls, Calendly with a text-reminder number, Typeform, Meta and generic leads with a
// phone), and email people, whose every event carries their email (Calendly, Typeform, Meta, Graph
// mail and calendar, Mailgun, generic). A share of email people use free-mail domains (no
// account); the others each have their own company domain, so an account's existence never
// depends on another person's events.
package loadgen

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/crmsync/crmsync/tools/oracle"
)

// Options configure a plan.
type Options struct {
	// Events is the number of unique vendor events (default 10,000).
	Events int
	// People is the number of people they are about (default 1,000).
	People int
	// DupRate is the number of duplicate deliveries as a share of unique events (0: none; the
	// reliability suite uses 0.3).
	DupRate float64
	// LateShare is the share of duplicates re-sent "after the SQS deduplication window": straight
	// to the queue with a deduplication id SQS no longer remembers, so only the ledger can catch
	// them (default 1/3).
	LateShare float64
	// ReorderRate is the share of unique events delivered before an earlier event of the same
	// person (0: none; the reliability suite uses 0.2).
	ReorderRate float64
	// Seed seeds everything.
	Seed uint64
	// Now is the reference time: events occur in the 30 days before it.
	Now time.Time
}

func (o *Options) defaults() {
	if o.Events <= 0 {
		o.Events = 10000
	}
	if o.People <= 0 {
		o.People = 1000
	}
	if o.DupRate < 0 {
		o.DupRate = 0
	}
	if o.LateShare <= 0 {
		o.LateShare = 1.0 / 3
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
}

// Delivery is one unique vendor delivery and the event it carries.
type Delivery struct {
	// Connector is the route, /webhooks/<Connector>.
	Connector string
	// Body is the vendor's body before signing; ContentType its media type.
	Body        []byte
	ContentType string
	// Event is the oracle's description of the event.
	Event oracle.Event
	// Fixture is the path (in Plan.Fixtures) of the vendor object a thin delivery's event is
	// hydrated from; "" for a delivery that carries its event whole.
	Fixture string
}

// Fixture is a vendor API answer the local vendor fake must serve: PUT at /_vendor/<Path>.
type Fixture struct {
	Path string
	Body []byte
}

// Send is one scheduled delivery.
type Send struct {
	Delivery *Delivery
	// Dup marks a duplicate of an earlier delivery; Late a duplicate re-sent after the SQS
	// deduplication window (straight to the queue).
	Dup, Late bool
}

// Plan is a generated load.
type Plan struct {
	Options Options
	// Unique holds every unique delivery, in the order their events occurred.
	Unique []*Delivery
	// Fixtures are the vendor API answers hydration needs.
	Fixtures []Fixture
	// Schedule is the send order: every unique delivery once, duplicates after their original.
	Schedule []Send
	// Duplicates and Late count duplicate sends (Late included in Duplicates); OutOfOrder
	// counts unique deliveries scheduled before an earlier event of the same person.
	Duplicates, Late, OutOfOrder int
	// BySource counts unique events per connector.
	BySource map[string]int
}

// Events returns the oracle events of every unique delivery.
func (p *Plan) Events() []oracle.Event {
	out := make([]oracle.Event, len(p.Unique))
	for i, d := range p.Unique {
		out[i] = d.Event
	}
	return out
}

// The organisation's side: reps (Graph mailboxes, Calendly hosts, Mailgun senders), its phone
// number and accounts.
const (
	repDomain      = "crmsync-sales.example"
	businessNumber = "+16505550100"
	twilioAccount  = "AC00000000000000000000000000c0ffee"
	metaPage       = "104857600012345"
	metaForm       = "771122334455667"
	graphTenant    = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
)

var (
	reps       = []string{"sam.rivera", "noor.haddad", "lee.chen", "ana.souza", "tom.okafor"}
	firstNames = []string{"Ada", "Grace", "Alan", "Katherine", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia",
		"Tim", "Margaret", "Dennis", "Hedy", "John", "Lynn", "Niklaus", "Shafi", "Vint", "Mary"}
	lastNames = []string{"Lovelace", "Hopper", "Turing", "Johnson", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
		"Perlman", "Berners-Lee", "Hamilton", "Ritchie", "Lamarr", "Backus", "Conway", "Wirth", "Goldwasser", "Cerf", "Keller"}
	titles    = []string{"VP Engineering", "Head of Operations", "CTO", "Sales Director", "Office Manager", "Founder"}
	zones     = []string{"America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Berlin", "Asia/Tokyo"}
	freeMail  = []string{"gmail.com", "outlook.com", "yahoo.com", "proton.me"}
	utmSource = []string{"linkedin", "google", "newsletter", "facebook", "partner"}
	utmMedium = []string{"paid_social", "cpc", "email", "organic"}
	utmCamp   = []string{"spring_webinar", "q3_launch", "retargeting", "brand", "ebook"}
	campaigns = []string{"Spring webinar 2025 - Lead Ads", "Q3 launch", "Always-on prospecting"}
)

// person is one generated person.
type person struct {
	id                  string
	first, last         string
	email, phone        string // normalised
	domain              string // email domain
	free                bool
	company, title, tz  string
	phoneFirst          bool
	clock               time.Time
	sentMessages        []string // Graph message ids sent to them, for Mailgun to report on
	phoneInEmailEvents  bool     // email people whose form events also carry their phone
	calendlyReminderSMS bool
}

type gen struct {
	o        Options
	r        *rand.Rand
	seq      int
	unique   []*Delivery
	fixtures []Fixture
}

// NewPlan generates a load.
func NewPlan(o Options) *Plan {
	o.defaults()
	g := &gen{o: o, r: rand.New(rand.NewPCG(o.Seed, o.Seed^0x5eed))}
	people := make([]*person, o.People)
	start := o.Now.Add(-30 * 24 * time.Hour).Truncate(time.Second)
	for i := range people {
		people[i] = g.person(i, start)
	}
	for len(g.unique) < o.Events {
		p := people[g.r.IntN(len(people))]
		g.interaction(p)
	}
	g.unique = g.unique[:o.Events]
	sort.SliceStable(g.unique, func(i, j int) bool { return g.unique[i].Event.OccurredAt.Before(g.unique[j].Event.OccurredAt) })
	plan := &Plan{Options: o, Unique: g.unique, Fixtures: g.fixtures, BySource: map[string]int{}}
	for _, d := range g.unique {
		plan.BySource[d.Connector]++
	}
	g.schedule(plan)
	return plan
}

func (g *gen) person(i int, start time.Time) *person {
	first := firstNames[g.r.IntN(len(firstNames))]
	last := lastNames[g.r.IntN(len(lastNames))]
	p := &person{id: fmt.Sprintf("p%05d", i), first: first, last: last,
		phone:   fmt.Sprintf("+1%03d555%04d", 212+i/10000, i%10000),
		title:   titles[g.r.IntN(len(titles))],
		tz:      zones[g.r.IntN(len(zones))],
		company: fmt.Sprintf("%s Labs %d", last, i),
		clock:   start.Add(time.Duration(g.r.IntN(5*24*3600)) * time.Second),
	}
	p.phoneFirst = g.r.Float64() < 0.3
	local := strings.ToLower(strings.ReplaceAll(first+"."+last, "-", "")) + "." + strconv.Itoa(i)
	if !p.phoneFirst && g.r.Float64() < 0.3 {
		p.free, p.domain = true, freeMail[g.r.IntN(len(freeMail))]
	} else {
		p.domain = fmt.Sprintf("%s%d.example", strings.ToLower(strings.ReplaceAll(last, "-", "")), i)
	}
	p.email = local + "@" + p.domain
	p.phoneInEmailEvents = p.phoneFirst || g.r.Float64() < 0.5
	p.calendlyReminderSMS = p.phoneFirst || g.r.Float64() < 0.3
	return p
}

// tick advances a person's clock and returns the new time.
func (g *gen) tick(p *person, min, max time.Duration) time.Time {
	p.clock = p.clock.Add(min + time.Duration(g.r.Int64N(int64(max-min)+1))).Truncate(time.Second)
	return p.clock
}

// id returns prefix followed by n random hex digits, the last eight of which are a sequence
// number, so ids never repeat within a plan.
func (g *gen) id(prefix string, n int) string {
	g.seq++
	var b strings.Builder
	b.WriteString(prefix)
	for b.Len() < len(prefix)+n-8 {
		fmt.Fprintf(&b, "%016x", g.r.Uint64())
	}
	return b.String()[:len(prefix)+n-8] + fmt.Sprintf("%08x", g.seq)
}

func (g *gen) pick(xs []string) string { return xs[g.r.IntN(len(xs))] }

func (g *gen) rep() string { return g.pick(reps) + "@" + repDomain }

// utm draws a campaign's UTM parameters, in a fixed order (so a seed always draws the same).
func (g *gen) utm() [][2]string {
	return [][2]string{{"utm_campaign", g.pick(utmCamp)}, {"utm_medium", g.pick(utmMedium)}, {"utm_source", g.pick(utmSource)}}
}

// interaction generates one real-world interaction of a person: one or more events.
func (g *gen) interaction(p *person) {
	g.tick(p, 30*time.Minute, 36*time.Hour)
	x := g.r.Float64()
	if p.phoneFirst {
		switch {
		case x < 0.32:
			g.twilioCall(p)
		case x < 0.50:
			g.calendly(p)
		case x < 0.66:
			g.typeform(p)
		case x < 0.83:
			g.meta(p)
		default:
			g.generic(p)
		}
		return
	}
	switch {
	case x < 0.13:
		g.calendly(p)
	case x < 0.28:
		g.typeform(p)
	case x < 0.44:
		g.meta(p)
	case x < 0.58:
		g.graphMessage(p)
	case x < 0.66:
		g.graphEvent(p)
	case x < 0.83:
		g.mailgun(p)
	default:
		g.generic(p)
	}
}

func (g *gen) add(d *Delivery) { g.unique = append(g.unique, d) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func (p *person) ids(withPhone bool) (emails, phones []string) {
	if withPhone {
		return []string{p.email}, []string{p.phone}
	}
	return []string{p.email}, nil
}

// twilioCall: one call, its status callbacks in sequence (form-encoded, as Twilio sends them).
func (g *gen) twilioCall(p *person) {
	chains := [][]string{{"initiated", "ringing", "in-progress", "completed"}, {"initiated", "ringing", "no-answer"},
		{"ringing", "in-progress", "completed"}, {"initiated", "ringing", "busy"}}
	chain := chains[g.r.IntN(len(chains))]
	sid := "CA" + g.id("", 32)
	inbound := g.r.Float64() < 0.7
	from, to, dir := p.phone, businessNumber, "inbound"
	if !inbound {
		from, to, dir = businessNumber, p.phone, "outbound-api"
	}
	t := p.clock
	for i, status := range chain {
		if i > 0 {
			t = t.Add(time.Duration(3+g.r.IntN(40)) * time.Second)
		}
		v := url.Values{"AccountSid": {twilioAccount}, "CallSid": {sid}, "CallStatus": {status},
			"SequenceNumber": {strconv.Itoa(i)}, "Timestamp": {t.UTC().Format(time.RFC1123Z)}, "From": {from}, "To": {to},
			"Direction": {dir}, "ApiVersion": {"2010-04-01"}, "CallbackSource": {"call-progress-events"},
			"Called": {to}, "Caller": {from}}
		if status == "completed" {
			v.Set("CallDuration", strconv.Itoa(20+g.r.IntN(900)))
		}
		g.add(&Delivery{Connector: "twilio", Body: []byte(v.Encode()), ContentType: "application/x-www-form-urlencoded",
			Event: oracle.Event{Key: "twilio:call:" + sid + ":" + strconv.Itoa(i), Source: "twilio", OccurredAt: t.UTC(), Person: p.id,
				Phones:   []string{p.phone},
				Contact:  map[string]string{"last_activity_at": rfc3339(t), "phone": p.phone, "last_call_status": status},
				Activity: &oracle.Activity{ID: "call:" + sid, Type: "call", Status: status}}})
	}
	p.clock = t
}

// calendly: an invitee.created, sometimes followed by its invitee.canceled.
func (g *gen) calendly(p *person) {
	se := "https://api.calendly.com/scheduled_events/SE" + strings.ToUpper(g.id("", 18))
	inv := se + "/invitees/INV" + strings.ToUpper(g.id("", 18))
	created := p.clock
	startAt := created.Add(time.Duration(24+g.r.IntN(96)) * time.Hour).Truncate(time.Hour)
	host := g.rep()
	tracking := map[string]any{"utm_source": nil, "utm_medium": nil, "utm_campaign": nil, "utm_term": nil, "utm_content": nil,
		"c_id": nil, "g_clid": nil, "msclkid": nil, "salesforce_uuid": nil}
	contact := map[string]string{"email": p.email, "first_name": p.first, "last_name": p.last, "timezone": p.tz}
	if g.r.Float64() < 0.7 {
		for _, u := range g.utm() {
			tracking[u[0]], contact[u[0]] = u[1], u[1]
		}
	}
	emails, phones := p.ids(p.calendlyReminderSMS)
	reminder := any(nil)
	if p.calendlyReminderSMS {
		reminder = "+1 " + p.phone[2:5] + "-" + p.phone[5:8] + "-" + p.phone[8:]
		contact["phone"] = p.phone
	}
	ts := func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z") }
	mkPayload := func(status string, updated time.Time, cancel bool) map[string]any {
		pl := map[string]any{
			"cancel_url": "https://calendly.com/cancellations/x", "created_at": ts(created),
			"email": strings.ToUpper(p.email[:1]) + p.email[1:], // as people type it
			"event": se, "first_name": p.first, "last_name": p.last, "name": p.first + " " + p.last,
			"new_invitee": nil, "no_show": nil, "old_invitee": nil, "payment": nil, "questions_and_answers": []any{},
			"reconfirmation": nil, "reschedule_url": "https://calendly.com/reschedulings/x", "rescheduled": false,
			"routing_form_submission": nil, "scheduling_method": nil, "status": status, "text_reminder_number": reminder,
			"timezone": p.tz, "tracking": tracking, "updated_at": ts(updated), "uri": inv,
			"scheduled_event": map[string]any{"created_at": ts(created), "start_time": ts(startAt), "end_time": ts(startAt.Add(30 * time.Minute)),
				"event_guests": []any{}, "event_memberships": []any{map[string]any{"user": "https://api.calendly.com/users/" + strings.ToUpper(host[:3]),
					"user_email": host, "user_name": host}}, "event_type": "https://api.calendly.com/event_types/DISCOVERY",
				"location": map[string]any{"type": "custom"}, "name": "30 Minute Discovery Call", "status": "active",
				"updated_at": ts(created), "uri": se},
		}
		if cancel {
			pl["cancellation"] = map[string]any{"canceled_by": p.first + " " + p.last, "reason": "Conflict", "canceler_type": "invitee"}
		}
		return pl
	}
	c := copyMap(contact)
	c["last_activity_at"] = rfc3339(created)
	g.add(&Delivery{Connector: "calendly", ContentType: "application/json; charset=utf-8",
		Body: mustJSON(map[string]any{"created_at": ts(created), "created_by": "https://api.calendly.com/users/HOST",
			"event": "invitee.created", "payload": mkPayload("active", created, false)}),
		Event: oracle.Event{Key: "calendly:invitee.created:" + inv, Source: "calendly", OccurredAt: created.UTC(), Person: p.id,
			Emails: emails, Phones: phones, Contact: c,
			Activity: &oracle.Activity{ID: "meeting:" + se, Type: "meeting", Status: "scheduled"}}})
	if g.r.Float64() < 0.25 {
		canceled := g.tick(p, 10*time.Minute, 20*time.Hour)
		c := copyMap(contact)
		c["last_activity_at"] = rfc3339(canceled)
		g.add(&Delivery{Connector: "calendly", ContentType: "application/json; charset=utf-8",
			Body: mustJSON(map[string]any{"created_at": ts(canceled), "created_by": "https://api.calendly.com/users/HOST",
				"event": "invitee.canceled", "payload": mkPayload("canceled", canceled, true)}),
			Event: oracle.Event{Key: "calendly:invitee.canceled:" + inv, Source: "calendly", OccurredAt: canceled.UTC(), Person: p.id,
				Emails: emails, Phones: phones, Contact: c,
				Activity: &oracle.Activity{ID: "meeting:" + se, Type: "meeting", Status: "canceled", Cancel: true}}})
	}
}

// typeform: one form_response.
func (g *gen) typeform(p *person) {
	t := p.clock
	eventID := "01J" + strings.ToUpper(g.id("", 23))
	token := g.id("", 32)
	withPhone := p.phoneInEmailEvents
	type field struct {
		ID, Ref, Type, Title string
	}
	fields := []field{{"f1", "first_name", "short_text", "First name"}, {"f2", "last_name", "short_text", "Last name"},
		{"f3", "email", "email", "Work email"}, {"f5", "company", "short_text", "Company"}}
	answers := []map[string]any{
		{"type": "text", "text": p.first, "field": map[string]any{"id": "f1", "type": "short_text", "ref": "first_name"}},
		{"type": "text", "text": p.last, "field": map[string]any{"id": "f2", "type": "short_text", "ref": "last_name"}},
		{"type": "email", "email": p.email, "field": map[string]any{"id": "f3", "type": "email", "ref": "email"}},
		{"type": "text", "text": p.company, "field": map[string]any{"id": "f5", "type": "short_text", "ref": "company"}},
	}
	contact := map[string]string{"first_name": p.first, "last_name": p.last, "email": p.email, "company": p.company,
		"lead_source": "typeform", "last_activity_at": rfc3339(t)}
	if withPhone {
		fields = append(fields, field{"f4", "phone", "phone_number", "Phone"})
		answers = append(answers, map[string]any{"type": "phone_number", "phone_number": p.phone,
			"field": map[string]any{"id": "f4", "type": "phone_number", "ref": "phone"}})
		contact["phone"] = p.phone
	}
	hidden := map[string]any{}
	var hiddenNames []string
	if g.r.Float64() < 0.7 {
		for _, u := range g.utm() {
			hidden[u[0]], contact[u[0]] = u[1], u[1]
			hiddenNames = append(hiddenNames, u[0])
		}
	}
	var defs []map[string]any
	for _, f := range fields {
		defs = append(defs, map[string]any{"id": f.ID, "ref": f.Ref, "type": f.Type, "title": f.Title, "properties": map[string]any{}})
	}
	body := mustJSON(map[string]any{"event_id": eventID, "event_type": "form_response", "form_response": map[string]any{
		"form_id": "lT4Z3j", "token": token, "landed_at": rfc3339(t.Add(-2 * time.Minute)), "submitted_at": rfc3339(t),
		"hidden": hidden, "definition": map[string]any{"id": "lT4Z3j", "title": "Request a demo", "fields": defs, "hidden": hiddenNames},
		"answers": answers, "ending": map[string]any{"id": "DefaultTyScreen", "ref": "default_tys"}}})
	emails, phones := p.ids(withPhone)
	ev := oracle.Event{Key: "typeform:" + eventID, Source: "typeform", OccurredAt: t.UTC(), Person: p.id, Emails: emails, Phones: phones,
		Contact: contact, Activity: &oracle.Activity{ID: "form:" + token, Type: "form", Status: "submitted"}}
	if !p.free {
		ev.AccountName, ev.Domain = p.company, p.domain
	}
	g.add(&Delivery{Connector: "typeform", ContentType: "application/json", Body: body, Event: ev})
}

// meta: a thin leadgen notification, and the lead the Graph API serves for it.
func (g *gen) meta(p *person) {
	t := p.clock
	g.seq++
	leadID := fmt.Sprintf("9%014d", uint64(g.r.Int64N(1e8))*1e6+uint64(g.seq%1000000))
	withPhone := p.phoneInEmailEvents
	campaign := g.pick(campaigns)
	fd := []map[string]any{{"name": "first_name", "values": []string{p.first}}, {"name": "last_name", "values": []string{p.last}},
		{"name": "email", "values": []string{p.email}}, {"name": "company_name", "values": []string{p.company}},
		{"name": "job_title", "values": []string{p.title}}}
	contact := map[string]string{"lead_source": "meta-leads", "first_name": p.first, "last_name": p.last, "email": p.email,
		"company": p.company, "job_title": p.title, "campaign": campaign}
	if withPhone {
		fd = append(fd, map[string]any{"name": "phone_number", "values": []string{p.phone}})
		contact["phone"] = p.phone
	}
	g.fixtures = append(g.fixtures, Fixture{Path: "meta-graph/" + leadID, Body: mustJSON(map[string]any{
		"id": leadID, "created_time": t.UTC().Format("2006-01-02T15:04:05-0700"), "field_data": fd,
		"ad_id": "238500011122233", "form_id": metaForm, "campaign_name": campaign})})
	body := mustJSON(map[string]any{"object": "page", "entry": []any{map[string]any{"id": metaPage, "time": t.Unix(),
		"changes": []any{map[string]any{"field": "leadgen", "value": map[string]any{"ad_id": "238500011122233", "form_id": metaForm,
			"leadgen_id": leadID, "created_time": t.Unix(), "page_id": metaPage, "adgroup_id": "238500011122233"}}}}}})
	emails, phones := p.ids(withPhone)
	g.add(&Delivery{Connector: "meta-leads", ContentType: "application/json", Body: body, Fixture: "meta-graph/" + leadID,
		Event: oracle.Event{Key: "meta-leads:" + leadID, Source: "meta-leads", OccurredAt: t.UTC(), Person: p.id, Emails: emails,
			Phones: phones, Contact: contact, Activity: &oracle.Activity{ID: "form:" + leadID, Type: "form", Status: "submitted"}}})
}

// graphNotification is one basic Graph change notification for a resource.
func (g *gen) graphNotification(resource, odataType, gid, etag string) []byte {
	return mustJSON(map[string]any{"value": []any{map[string]any{
		"subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07", "subscriptionExpirationDateTime": "2099-01-01T00:00:00.0000000+00:00",
		"changeType": "created", "resource": resource, "clientState": "signed-at-send-time", "tenantId": graphTenant,
		"resourceData": map[string]any{"@odata.type": odataType, "@odata.id": resource, "@odata.etag": etag, "id": gid}}}})
}

// graphMessage: a mail message between a rep and the person, seen in the rep's mailbox.
func (g *gen) graphMessage(p *person) {
	t := p.clock
	rep := g.rep()
	gid := "AAMk" + g.id("", 40)
	msgID := g.id("", 30) + "@mail." + repDomain
	etag := `W/"` + g.id("", 20) + `"`
	resource := "users/" + rep + "/messages/" + gid
	sent := g.r.Float64() < 0.7
	from, to := map[string]any{"emailAddress": map[string]any{"name": rep, "address": rep}},
		map[string]any{"emailAddress": map[string]any{"name": p.first + " " + p.last, "address": p.email}}
	if !sent {
		from, to = to, from
	}
	g.fixtures = append(g.fixtures, Fixture{Path: "msgraph/" + resource, Body: mustJSON(map[string]any{
		"id": gid, "internetMessageId": "<" + msgID + ">", "from": from, "toRecipients": []any{to}, "ccRecipients": []any{},
		"subject": "Following up", "sentDateTime": rfc3339(t), "receivedDateTime": rfc3339(t), "conversationId": "conv-" + gid[:12]})})
	if sent {
		p.sentMessages = append(p.sentMessages, strings.ToLower(msgID))
	}
	g.add(&Delivery{Connector: "msgraph", ContentType: "application/json", Fixture: "msgraph/" + resource,
		Body: g.graphNotification(resource, "#Microsoft.Graph.Message", gid, etag),
		Event: oracle.Event{Key: "msgraph:7f105c7d-2dc5-4530-97cd-4e7ae6534c07:created:" + resource + ":" + etag, Source: "msgraph",
			OccurredAt: t.UTC(), Person: p.id, Emails: []string{p.email},
			Contact:  map[string]string{"last_activity_at": rfc3339(t), "email": p.email},
			Activity: &oracle.Activity{ID: "email:" + strings.ToLower(msgID), Type: "email"}}})
}

// graphEvent: a calendar event a rep organised with the person.
func (g *gen) graphEvent(p *person) {
	t := p.clock
	rep := g.rep()
	gid := "AAMkEv" + g.id("", 36)
	uid := "040000008200E00074C5B7101A82E008" + strings.ToUpper(g.id("", 32))
	etag := `W/"` + g.id("", 20) + `"`
	resource := "users/" + rep + "/events/" + gid
	canceled := g.r.Float64() < 0.15
	start := t.Add(time.Duration(24+g.r.IntN(72)) * time.Hour).Truncate(time.Hour)
	g.fixtures = append(g.fixtures, Fixture{Path: "msgraph/" + resource, Body: mustJSON(map[string]any{
		"id": gid, "iCalUId": uid, "subject": "Demo", "isCancelled": canceled,
		"organizer":       map[string]any{"emailAddress": map[string]any{"name": rep, "address": rep}},
		"attendees":       []any{map[string]any{"type": "required", "emailAddress": map[string]any{"name": p.first + " " + p.last, "address": p.email}}},
		"start":           map[string]any{"dateTime": start.UTC().Format("2006-01-02T15:04:05.0000000"), "timeZone": "UTC"},
		"end":             map[string]any{"dateTime": start.Add(time.Hour).UTC().Format("2006-01-02T15:04:05.0000000"), "timeZone": "UTC"},
		"createdDateTime": rfc3339(t.Add(-time.Hour)), "lastModifiedDateTime": rfc3339(t)})})
	status := "scheduled"
	if canceled {
		status = "canceled"
	}
	g.add(&Delivery{Connector: "msgraph", ContentType: "application/json", Fixture: "msgraph/" + resource,
		Body: g.graphNotification(resource, "#Microsoft.Graph.Event", gid, etag),
		Event: oracle.Event{Key: "msgraph:7f105c7d-2dc5-4530-97cd-4e7ae6534c07:created:" + resource + ":" + etag, Source: "msgraph",
			OccurredAt: t.UTC(), Person: p.id, Emails: []string{p.email},
			Contact:  map[string]string{"last_activity_at": rfc3339(t), "email": p.email},
			Activity: &oracle.Activity{ID: "meeting:" + uid, Type: "meeting", Status: status, Cancel: canceled}}})
}

// mailgun: delivery events of one message a rep sent the person (often one Graph also saw).
func (g *gen) mailgun(p *person) {
	msgID := ""
	if len(p.sentMessages) > 0 && g.r.Float64() < 0.5 {
		msgID = p.sentMessages[g.r.IntN(len(p.sentMessages))]
	} else {
		msgID = g.id("", 28) + "@mg." + repDomain
	}
	rep := g.rep()
	events := []string{"delivered"}
	if g.r.Float64() < 0.6 {
		events = append(events, "opened")
		if g.r.Float64() < 0.5 {
			events = append(events, "clicked")
		}
	}
	t := p.clock
	for i, ev := range events {
		if i > 0 {
			t = t.Add(time.Duration(60+g.r.IntN(4*3600)) * time.Second)
		}
		micros := g.r.IntN(1000000)
		at := t.Add(time.Duration(micros) * time.Microsecond)
		id := g.id("", 22)
		data := map[string]any{"id": id, "timestamp": json.Number(fmt.Sprintf("%d.%06d", t.Unix(), micros)), "log-level": "info",
			"event": ev, "recipient": p.email, "recipient-domain": p.domain,
			"message": map[string]any{"headers": map[string]any{"to": p.first + " " + p.last + " <" + p.email + ">",
				"message-id": msgID, "from": rep, "subject": "Following up"}, "attachments": []any{}, "size": 4521},
			"envelope": map[string]any{"transport": "smtp", "sender": rep, "targets": p.email}, "tags": []any{}, "campaigns": []any{}}
		if ev == "delivered" {
			data["delivery-status"] = map[string]any{"code": 250, "message": "OK", "attempt-no": 1, "tls": true}
		}
		if ev == "clicked" {
			data["url"] = "https://crmsync.example/pricing"
		}
		contact := map[string]string{}
		if ev != "delivered" {
			contact["last_activity_at"] = rfc3339(at)
		}
		g.add(&Delivery{Connector: "mailgun", ContentType: "application/json",
			Body: mustJSON(map[string]any{"signature": map[string]any{"timestamp": "0", "token": "", "signature": ""}, "event-data": data}),
			Event: oracle.Event{Key: "mailgun:" + id, Source: "mailgun", OccurredAt: at.UTC(), Person: p.id, Emails: []string{p.email},
				Contact: contact, Activity: &oracle.Activity{ID: "email:" + msgID, Type: "email", Status: ev}}})
	}
	p.clock = t
}

// generic: a lead or a note through the Standard Webhooks route.
func (g *gen) generic(p *person) {
	t := p.clock
	withPhone := p.phoneFirst || p.phoneInEmailEvents
	emails, phones := p.ids(withPhone)
	person := map[string]any{"emails": []string{p.email}}
	contact := map[string]string{"email": p.email}
	if withPhone {
		person["phones"] = []string{"+1 (" + p.phone[2:5] + ") " + p.phone[5:8] + "-" + p.phone[8:]}
		contact["phone"] = p.phone
	}
	var body []byte
	var act *oracle.Activity
	if g.r.Float64() < 0.6 {
		ext := "gen-" + g.id("", 20)
		person["first_name"], person["last_name"], person["company"], person["job_title"] = p.first, p.last, p.company, p.title
		contact["first_name"], contact["last_name"], contact["company"], contact["job_title"] = p.first, p.last, p.company, p.title
		attr := map[string]any{"lead_source": g.pick([]string{"website", "webinar", "referral"}), "campaign": g.pick(campaigns),
			"utm_source": g.pick(utmSource), "utm_medium": g.pick(utmMedium), "utm_campaign": g.pick(utmCamp)}
		for k, v := range attr {
			contact[k] = v.(string)
		}
		body = mustJSON(map[string]any{"schema": "crmsync.generic/v1", "type": "lead", "occurred_at": rfc3339(t),
			"external_id": ext, "person": person, "attribution": attr})
		act = &oracle.Activity{ID: "form:" + ext, Type: "form", Status: "submitted"}
	} else {
		nid := "n-" + g.id("", 20)
		contact["last_activity_at"] = rfc3339(t)
		body = mustJSON(map[string]any{"schema": "crmsync.generic/v1", "type": "activity", "occurred_at": rfc3339(t),
			"person": person, "activity": map[string]any{"id": nid, "type": "note", "subject": "Asked for a quote"}})
		act = &oracle.Activity{ID: "note:" + nid, Type: "note"}
	}
	sum := sha256.Sum256(body)
	g.add(&Delivery{Connector: "generic", ContentType: "application/json", Body: body,
		Event: oracle.Event{Key: "generic:msg_" + hex.EncodeToString(sum[:])[:32], Source: "generic", OccurredAt: t.UTC(), Person: p.id,
			Emails: emails, Phones: phones, Contact: contact, Activity: act}})
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// schedule orders the sends: the unique deliveries in the order their events occurred, except
// ReorderRate of them moved before an earlier event of the same person; then duplicates, each
// placed after its original (Late ones flagged to go straight to the queue).
func (g *gen) schedule(plan *Plan) {
	o := plan.Options
	order := make([]*Delivery, len(plan.Unique))
	copy(order, plan.Unique)
	pos := func(d *Delivery) int {
		for i, x := range order {
			if x == d {
				return i
			}
		}
		return -1
	}
	earlier := map[string][]*Delivery{} // person -> deliveries so far, in occurrence order
	var candidates []*Delivery
	for _, d := range plan.Unique {
		if len(earlier[d.Event.Person]) > 0 {
			candidates = append(candidates, d)
		}
		earlier[d.Event.Person] = append(earlier[d.Event.Person], d)
	}
	g.r.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
	want := int(float64(len(plan.Unique))*o.ReorderRate + 0.5)
	if want > len(candidates) {
		want = len(candidates)
	}
	for _, d := range candidates[:want] {
		from := pos(d)
		// Move it before a random earlier event of the same person.
		var before []*Delivery
		for _, x := range earlier[d.Event.Person] {
			if x.Event.OccurredAt.Before(d.Event.OccurredAt) {
				before = append(before, x)
			}
		}
		if len(before) == 0 {
			continue
		}
		target := before[g.r.IntN(len(before))]
		to := pos(target)
		if to < 0 || to >= from {
			continue
		}
		copy(order[to+1:from+1], order[to:from])
		order[to] = d
	}
	// Count what is out of order: delivered before an event of the same person that occurred
	// earlier.
	earliestAfter := map[string]time.Time{}
	for i := len(order) - 1; i >= 0; i-- {
		d := order[i]
		if at, ok := earliestAfter[d.Event.Person]; ok && at.Before(d.Event.OccurredAt) {
			plan.OutOfOrder++
		}
		if at, ok := earliestAfter[d.Event.Person]; !ok || d.Event.OccurredAt.Before(at) {
			earliestAfter[d.Event.Person] = d.Event.OccurredAt
		}
	}
	dups := int(float64(len(order))*o.DupRate + 0.5)
	after := map[int][]Send{} // index in order -> duplicates sent right after it
	for i := 0; i < dups; i++ {
		src := g.r.IntN(len(order))
		late := g.r.Float64() < o.LateShare
		at := min(src+1+g.r.IntN(200), len(order)-1) // never before the original
		after[at] = append(after[at], Send{Delivery: order[src], Dup: true, Late: late})
		plan.Duplicates++
		if late {
			plan.Late++
		}
	}
	sends := make([]Send, 0, len(order)+dups)
	for i, d := range order {
		sends = append(sends, Send{Delivery: d})
		sends = append(sends, after[i]...)
	}
	plan.Schedule = sends
}
