// Package crmchange owns the CRM changes route, POST /crm/changes (IAM-authorized): the CRM's own
// edits, made by people with an actor role, that may also lock and unlock fields. A change is
// validated against the policy and enqueued as a canonical crm.change event with key
// crm:{change_id} on the same ingest queue as every webhook, so it goes through the same ledger,
// policy and audit as everything else (the worker decides; locks are enforced there).
//
// The request body (docs/crm-changes.md):
//
//	{"change_id": "chg-0001",
//	 "contact": {"email": "ada@example.com"} | {"phone": "+14155550100"} | {"id": "c-..."},
//	 "actor": {"email": "alice@example.com", "role": "revops"},
//	 "fields": {"phone": "+14155550199"},
//	 "lock": ["phone"], "unlock": [],
//	 "occurred_at": "2026-11-20T10:00:00Z"}
//
// The caller's IAM principal (requestContext.authorizer.iam.userArn) must hold the requested
// actor.role in the roles file (Principals, config/crm-roles.yaml); otherwise 403.
//
// Answers: 202 when enqueued, 400 with a specific message for bad input, 403 when the principal
// does not hold the role, 405/413/415 for the wrong
// method, size or media type, 503 when SQS did not accept the event (the caller retries with the
// same change id; duplicates are harmless).
package crmchange

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/identity"
	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/worker"
)

// Source is the canonical source of CRM changes (the policy's system of record).
const Source = policy.SystemOfRecord

// Entity is the entity CRM changes address.
const Entity = "contact"

// MappingVersion is stamped on every crm.change event this package builds.
const MappingVersion = "crm-changes/1"

// MaxBodyBytes is the request body limit.
const MaxBodyBytes = 64 << 10

// maxValueLen bounds one field value.
const maxValueLen = 2048

var (
	changeIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,127}$`)
	roleRe     = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
)

// Contact names the contact a change is about: exactly one of Email, Phone or ID.
type Contact struct {
	// Email is any of the contact's email addresses.
	Email string `json:"email,omitempty"`
	// Phone is any of the contact's phone numbers.
	Phone string `json:"phone,omitempty"`
	// ID is the contact id; the contact must exist.
	ID string `json:"id,omitempty"`
}

// Actor is the person who made the change in the CRM and the role they acted in.
type Actor struct {
	// Email identifies the person (audit actor, locked_by).
	Email string `json:"email"`
	// Role is the role they acted in; locks need one of the policy's override roles.
	Role string `json:"role"`
}

// Request is the body of POST /crm/changes.
type Request struct {
	// ChangeID is the caller's id for the change; the event key is crm:{ChangeID}, so a retry
	// with the same id is applied once.
	ChangeID string `json:"change_id"`
	// Contact names the contact changed.
	Contact Contact `json:"contact"`
	// Actor is who changed it.
	Actor Actor `json:"actor"`
	// Fields are the new values, by contact field name (as in the policy).
	Fields map[string]string `json:"fields,omitempty"`
	// Lock lists fields to lock (override roles only).
	Lock []string `json:"lock,omitempty"`
	// Unlock lists fields to unlock (override roles only).
	Unlock []string `json:"unlock,omitempty"`
	// OccurredAt is when the change was made (RFC 3339); default: when it was received.
	OccurredAt string `json:"occurred_at,omitempty"`
}

// Accepted is the 202 answer.
type Accepted struct {
	// Status is "accepted".
	Status string `json:"status"`
	// ChangeID echoes the request's change id.
	ChangeID string `json:"change_id"`
	// Key is the canonical event key, crm:{change_id}.
	Key string `json:"key"`
}

// InvalidError is a change the route refuses with 400; its message says what is wrong.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

// Event validates a change against the policy and returns its canonical crm.change event.
// caller is the IAM identity of the request (recorded as Actor.ID; may be empty); now is the
// receipt time (and occurred_at when the request has none). Errors are *InvalidError.
func Event(req Request, pol *policy.Policy, caller string, now time.Time) (*canonical.Event, error) {
	now = now.UTC()
	req.ChangeID = strings.TrimSpace(req.ChangeID)
	switch {
	case req.ChangeID == "":
		return nil, invalid("change_id is required")
	case !changeIDRe.MatchString(req.ChangeID):
		return nil, invalid("change_id %q is not valid: 1-128 characters of letters, digits and . _ : @ + / -, starting with a letter or digit", req.ChangeID)
	}

	subject, groupKey, contactID, err := addressee(req.Contact)
	if err != nil {
		return nil, err
	}
	actorEmail, role, err := actorOf(req.Actor)
	if err != nil {
		return nil, err
	}
	fields, err := fieldsOf(req.Fields, pol)
	if err != nil {
		return nil, err
	}
	locks, err := locksOf(req.Lock, req.Unlock, pol, role)
	if err != nil {
		return nil, err
	}
	if len(fields) == 0 && len(locks) == 0 {
		return nil, invalid("nothing to change: give fields, lock or unlock")
	}

	occurred := now
	if s := strings.TrimSpace(req.OccurredAt); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, invalid("occurred_at %q is not an RFC 3339 time", req.OccurredAt)
		}
		occurred = t.UTC()
	}

	ev := &canonical.Event{
		Key: "crm:" + req.ChangeID, Source: Source, Kind: canonical.KindCRMChange,
		OccurredAt: occurred, ReceivedAt: now, GroupKey: groupKey, Subject: subject,
		Actor:          &canonical.Actor{ID: caller, Email: actorEmail, Role: role, Type: "user"},
		Fields:         map[string]map[string]string{},
		ExternalIDs:    map[string]string{"change_id": req.ChangeID},
		MappingVersion: MappingVersion,
	}
	if len(fields) > 0 {
		ev.Fields[Entity] = fields
	}
	if len(locks) > 0 {
		ev.Fields[Entity+worker.LockSuffix] = locks
	}
	if contactID != "" {
		ev.ExternalIDs[worker.ContactIDKey] = contactID
	}
	// The payload hash covers what the change asks for, not when it was received: a retry of
	// the same change (same id, same content) is a duplicate; the same id with other content is
	// flagged by the worker and never applied.
	canon := struct {
		ChangeID   string                       `json:"change_id"`
		Contact    string                       `json:"contact"`
		Actor      canonical.Actor              `json:"actor"`
		Fields     map[string]map[string]string `json:"fields"`
		OccurredAt string                       `json:"occurred_at,omitempty"`
	}{req.ChangeID, groupKey, *ev.Actor, ev.Fields, strings.TrimSpace(req.OccurredAt)}
	if canon.OccurredAt != "" {
		canon.OccurredAt = occurred.Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(canon)
	if err != nil {
		return nil, err
	}
	ev.PayloadHash = canonical.PayloadHash(b)
	if err := ev.Validate(); err != nil {
		return nil, invalid("%v", err)
	}
	return ev, nil
}

// addressee validates how the change names its contact (exactly one of email, phone or id) and
// returns the subject, the FIFO group key and the contact id (when named by id).
func addressee(c Contact) (subject canonical.Person, groupKey, contactID string, err error) {
	n := 0
	for _, v := range []string{c.Email, c.Phone, c.ID} {
		if strings.TrimSpace(v) != "" {
			n++
		}
	}
	if n != 1 {
		return subject, "", "", invalid("contact must name exactly one of email, phone or id")
	}
	switch {
	case strings.TrimSpace(c.Email) != "":
		e, ok := identity.Email(c.Email)
		if !ok {
			return subject, "", "", invalid("contact.email %q is not an email address", c.Email)
		}
		subject.Emails, groupKey = []string{e}, "email:"+e
	case strings.TrimSpace(c.Phone) != "":
		p, ok := identity.Phone(c.Phone)
		if !ok {
			return subject, "", "", invalid("contact.phone %q is not a phone number (use E.164, e.g. +14155550100)", c.Phone)
		}
		subject.Phones, groupKey = []string{p}, "phone:"+p
	default:
		contactID = strings.TrimSpace(c.ID)
		if !changeIDRe.MatchString(contactID) {
			return subject, "", "", invalid("contact.id %q is not a contact id", c.ID)
		}
		groupKey = worker.ContactGroupKey(contactID)
	}

	return subject, groupKey, contactID, nil
}

// actorOf validates the actor: a normalised email and a well-formed role.
func actorOf(a Actor) (email, role string, err error) {
	var ok bool
	email, ok = identity.Email(a.Email)
	if !ok {
		if strings.TrimSpace(a.Email) == "" {
			return "", "", invalid("actor.email is required")
		}
		return "", "", invalid("actor.email %q is not an email address", a.Email)
	}
	role = strings.TrimSpace(a.Role)
	switch {
	case role == "":
		return "", "", invalid("actor.role is required")
	case !roleRe.MatchString(role):
		return "", "", invalid("actor.role %q is not valid: lower-case letters, digits, _ and -", a.Role)
	}

	return email, role, nil
}

// fieldsOf validates the proposed values against the policy and normalises phones and emails.
func fieldsOf(in map[string]string, pol *policy.Policy) (map[string]string, error) {
	fields := map[string]string{}
	for _, f := range sortedKeys(in) {
		if err := knownField(pol, f, "fields"); err != nil {
			return nil, err
		}
		v := strings.TrimSpace(in[f])
		if len(v) > maxValueLen {
			return nil, invalid("fields.%s: value longer than %d bytes", f, maxValueLen)
		}
		switch {
		case v == "":
		case f == "phone":
			p, ok := identity.Phone(v)
			if !ok {
				return nil, invalid("fields.phone %q is not a phone number (use E.164, e.g. +14155550100)", in[f])
			}
			v = p
		case f == "email":
			e, ok := identity.Email(v)
			if !ok {
				return nil, invalid("fields.email %q is not an email address", in[f])
			}
			v = e
		}
		fields[f] = v
	}
	return fields, nil
}

// locksOf validates the fields to lock and unlock; only an override role may do either.
func locksOf(lock, unlock []string, pol *policy.Policy, role string) (map[string]string, error) {
	locks := map[string]string{}
	for _, l := range []struct {
		name, op string
		list     []string
	}{{"lock", "lock", lock}, {"unlock", "unlock", unlock}} {
		for _, f := range l.list {
			f = strings.TrimSpace(f)
			if err := knownField(pol, f, l.name); err != nil {
				return nil, err
			}
			if prev, dup := locks[f]; dup && prev != l.op {
				return nil, invalid("field %q is both locked and unlocked", f)
			}
			locks[f] = l.op
		}
	}
	if len(locks) > 0 && !pol.CanOverride(Source, role) {
		var roles []string
		if s, ok := pol.Source(Source); ok {
			roles = s.OverrideRoles
		}
		return nil, invalid("actor.role %q may not lock or unlock fields (override roles: %s)", role, strings.Join(roles, ", "))
	}
	return locks, nil
}

func knownField(pol *policy.Policy, f, where string) error {
	if f == "" {
		return invalid("%s: empty field name", where)
	}
	if _, ok := pol.GroupOf(Entity, f); !ok {
		var known []string
		if e, ok := pol.Entity(Entity); ok {
			for _, g := range e.Groups {
				known = append(known, g.Fields...)
			}
		}
		sort.Strings(known)
		return invalid("%s: unknown field %q: the policy (%s) has no %s field of that name (known: %s)",
			where, f, pol.Version(), Entity, strings.Join(known, ", "))
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Config configures the handler.
type Config struct {
	// QueueURL is the ingest FIFO queue.
	QueueURL string
	// Policy validates field names and lock roles.
	Policy *policy.Policy
	// Principals maps the caller's IAM principal to the CRM roles it may act in; a change whose
	// actor.role the principal does not hold is refused with 403.
	Principals *Principals
	// CRMTable is the CRM table whose identity items say which contact an email or phone belongs
	// to, so every CRM edit of one contact travels in that contact's FIFO group. Empty: edits are
	// grouped by the identity they name.
	CRMTable string
}

// IdentityAPI is the DynamoDB call the handler makes: one strongly consistent read of an identity
// item (IDENT#email#... or IDENT#phone#...).
type IdentityAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
}

// Deps are the handler's collaborators.
type Deps struct {
	// SQS sends to the ingest queue.
	SQS ingest.SQSAPI
	// Identities reads identity items of Config.CRMTable; nil: edits are grouped by identity.
	Identities IdentityAPI
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Log receives one line per request (event key, never personal data); discarded when nil.
	Log *slog.Logger
	// Metrics receives EMF counts (Connector=crm); discarded when nil.
	Metrics *emf.Writer
}

// Handler serves POST /crm/changes.
type Handler struct {
	cfg Config
	d   Deps
}

// New returns the handler.
func New(cfg Config, d Deps) *Handler {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, d: d}
}

func respond(status int, v any) events.APIGatewayV2HTTPResponse {
	b, _ := json.Marshal(v)
	return events.APIGatewayV2HTTPResponse{StatusCode: status, Headers: map[string]string{"content-type": "application/json"}, Body: string(b)}
}

func failure(status int, code, msg string) events.APIGatewayV2HTTPResponse {
	body := map[string]string{"error": code}
	if msg != "" {
		body["message"] = msg
	}
	return respond(status, body)
}

// Handle answers one API Gateway HTTP API (payload 2.0) request.
func (h *Handler) Handle(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	resp, outcome, key := h.handle(ctx, ev)
	// The webhook functions' metric names, with Connector=crm: Received, then one of Enqueued,
	// Invalid, Refused, EnqueueFailures.
	h.d.Metrics.Emit(map[string]string{"Connector": Source}, emf.Metric{Name: "Received", Value: 1, Unit: emf.Count},
		emf.Metric{Name: outcome, Value: 1, Unit: emf.Count})
	h.d.Log.InfoContext(ctx, "crm change handled", "status", resp.StatusCode, "outcome", outcome, "key", key)
	return resp, nil
}

func (h *Handler) handle(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, string, string) {
	if m := ev.RequestContext.HTTP.Method; m != "" && m != "POST" {
		return failure(405, "method_not_allowed", ""), "Refused", ""
	}
	mt, _, err := mime.ParseMediaType(headerOf(ev.Headers, "content-type"))
	if err != nil || !strings.EqualFold(mt, "application/json") {
		return failure(415, "unsupported_media_type", "send application/json"), "Refused", ""
	}
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		if body, err = base64.StdEncoding.DecodeString(ev.Body); err != nil {
			return failure(400, "invalid_change", "body is not valid base64"), "Invalid", ""
		}
	}
	if len(body) > MaxBodyBytes {
		return failure(413, "payload_too_large", fmt.Sprintf("body larger than %d bytes", MaxBodyBytes)), "Refused", ""
	}
	req, err := decode(body)
	if err != nil {
		return failure(400, "invalid_change", err.Error()), "Invalid", ""
	}
	caller := ""
	if a := ev.RequestContext.Authorizer; a != nil && a.IAM != nil {
		caller = a.IAM.UserARN
	}
	ce, err := Event(req, h.cfg.Policy, caller, h.d.Now())
	if err != nil {
		var inv *InvalidError
		if errors.As(err, &inv) {
			return failure(400, "invalid_change", inv.Msg), "Invalid", ""
		}
		return failure(500, "internal", ""), "Invalid", ""
	}
	if why := h.cfg.Principals.authorize(caller, ce.Actor.Role); why != "" {
		return failure(403, "forbidden", why), "Forbidden", ""
	}
	h.groupByContact(ctx, ce)
	if err := ingest.Enqueue(ctx, h.d.SQS, h.cfg.QueueURL, []canonical.Event{*ce}); err != nil {
		h.d.Log.ErrorContext(ctx, "enqueue failed", "key", ce.Key, "error", err.Error())
		return failure(503, "unavailable", ""), "EnqueueFailures", ce.Key
	}
	return respond(202, Accepted{Status: "accepted", ChangeID: req.ChangeID, Key: ce.Key}), "Enqueued", ce.Key
}

// groupByContact moves a change addressed by email or phone into its contact's FIFO group
// (contact:<id>) when the identity already belongs to a contact, so that every CRM edit of one
// contact is ordered with the others however the CRM addressed it. The payload hash, which covers
// how the change was addressed, is unchanged; the worker still resolves the contact by identity.
// A change for a contact that does not exist yet, or when the read fails, keeps its identity's
// group (decisions do not depend on processing order, so that costs ordering, never correctness).
func (h *Handler) groupByContact(ctx context.Context, ev *canonical.Event) {
	if h.d.Identities == nil || h.cfg.CRMTable == "" || ev.ExternalIDs[worker.ContactIDKey] != "" {
		return
	}
	var pk string
	switch {
	case len(ev.Subject.Emails) > 0:
		pk = store.IdentEmailPK(ev.Subject.Emails[0])
	case len(ev.Subject.Phones) > 0:
		pk = store.IdentPhonePK(ev.Subject.Phones[0])
	default:
		return
	}
	out, err := h.d.Identities.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(h.cfg.CRMTable), ConsistentRead: aws.Bool(true),
		Key:                  map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: pk}, "sk": &ddbtypes.AttributeValueMemberS{Value: store.SKIdent}},
		ProjectionExpression: aws.String("contact_id")})
	if err != nil {
		h.d.Log.WarnContext(ctx, "identity lookup failed; change grouped by identity", "key", ev.Key, "error", err.Error())
		return
	}
	var claim store.IdentityClaim
	if out.Item == nil || attributevalue.UnmarshalMap(out.Item, &claim) != nil || claim.ContactID == "" {
		return
	}
	ev.GroupKey = worker.ContactGroupKey(claim.ContactID)
}

// decode parses the body strictly: unknown members and trailing data are errors.
func decode(body []byte) (Request, error) {
	var req Request
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("body is not a CRM change: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, errors.New("body is not a CRM change: trailing data after the JSON object")
	}
	return req, nil
}

func headerOf(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}
