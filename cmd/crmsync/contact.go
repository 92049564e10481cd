package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/worker"
)

// contactSchema names the shape of `contact get --json`; it changes only when the shape does.
const contactSchema = "crmsync.contact/v1"

const contactJSONHelp = `With --json the output is one JSON document of this shape (schema "` + contactSchema + `"; members
marked ? are omitted when empty; times are RFC 3339 UTC):

  {
    "schema": "` + contactSchema + `",
    "contact": {
      "id": "c-…", "version": 3, "account_id"?: "a-…",
      "identities": ["email:ada@example.com", "phone:+14155550123"],
      "created_at": "…", "updated_at": "…", "last_activity_at"?: "…",
      "fields": {
        "<field>": {"value": "…", "source": "typeform", "event_key": "typeform:…",
                    "occurred_at": "…", "locked_by"?: "alice@example.com"}
      }
    },
    "timeline": [                                  // by first occurrence, then id
      {
        "id": "call:CA…", "type": "call", "status"?: "completed", "outcome"?: "completed",
        "canceled"?: true, "direction"?: "inbound", "subject"?: "…", "start_at"?: "…", "end_at"?: "…",
        "duration_sec"?: 42, "deal_id"?: "…", "relates_to"?: ["…"], "sources": ["twilio"],
        "actor"?: {"id"?, "email"?, "name"?, "role"?, "type"?},
        "participants"?: [{"role": "caller", "email"?, "phone"?, "name"?}],
        "attrs"?: {"…": "…"}, "first_at": "…", "last_at": "…",
        "updates": [{"key": "…", "source": "…", "kind"?: "call.status", "status"?: "…", "at": "…"}],
        "associations": {                          // how each link was made
          "contact"?: {"id": "c-…", "method": "exact_email|phone|explicit_id", "via"?: "…"},
          "account"?: {"id": "a-…", "method": "contact_account|email_domain|explicit_id", "via"?: "…"},
          "deal"?:    {"id": "d-…", "method": "explicit_id|latest_open_deal", "via"?: "…"}
        }
      }
    ],
    "audit": [                                     // oldest first (occurred_at, event key, field)
      {
        "entity": "contact", "record_id": "c-…", "field": "phone",
        "decision": "applied|rejected|blocked_by_lock|rerun", "rule": "…", "reason": "…",
        "proposed"?: "…", "before": {field}, "after": {field}, "source": "crm", "actor"?: "…",
        "event_key": "crm:…", "occurred_at": "…", "recorded_at": "…", "policy_version": "…",
        "rerun_by"?: "…", "rerun_why"?: "…"
      }
    ]
  }`

// contactDoc is the --json document.
type contactDoc struct {
	Schema   string          `json:"schema"`
	Contact  contactRecord   `json:"contact"`
	Timeline []timelineEntry `json:"timeline"`
	Audit    []auditEntry    `json:"audit"`
}

type contactRecord struct {
	ID             string                 `json:"id"`
	Version        int64                  `json:"version"`
	AccountID      string                 `json:"account_id,omitempty"`
	Identities     []string               `json:"identities"`
	CreatedAt      string                 `json:"created_at"`
	UpdatedAt      string                 `json:"updated_at"`
	LastActivityAt string                 `json:"last_activity_at,omitempty"`
	Fields         map[string]store.Field `json:"fields"`
}

type timelineUpdate struct {
	Key    string         `json:"key"`
	Source string         `json:"source"`
	Kind   canonical.Kind `json:"kind,omitempty"`
	Status string         `json:"status,omitempty"`
	At     time.Time      `json:"at"`
}

type timelineEntry struct {
	ID           string                  `json:"id"`
	Type         string                  `json:"type"`
	Status       string                  `json:"status,omitempty"`
	Outcome      string                  `json:"outcome,omitempty"`
	Canceled     bool                    `json:"canceled,omitempty"`
	Direction    string                  `json:"direction,omitempty"`
	Subject      string                  `json:"subject,omitempty"`
	StartAt      *time.Time              `json:"start_at,omitempty"`
	EndAt        *time.Time              `json:"end_at,omitempty"`
	DurationSec  int                     `json:"duration_sec,omitempty"`
	DealID       string                  `json:"deal_id,omitempty"`
	RelatesTo    []string                `json:"relates_to,omitempty"`
	Sources      []string                `json:"sources"`
	Actor        *canonical.Actor        `json:"actor,omitempty"`
	Participants []canonical.Participant `json:"participants,omitempty"`
	Attrs        map[string]string       `json:"attrs,omitempty"`
	FirstAt      time.Time               `json:"first_at"`
	LastAt       time.Time               `json:"last_at"`
	Updates      []timelineUpdate        `json:"updates"`
	Associations association.Result      `json:"associations"`
}

type auditEntry struct {
	Entity        string      `json:"entity"`
	RecordID      string      `json:"record_id"`
	Field         string      `json:"field"`
	Decision      string      `json:"decision"`
	Rule          string      `json:"rule"`
	Reason        string      `json:"reason"`
	Proposed      string      `json:"proposed,omitempty"`
	Before        store.Field `json:"before"`
	After         store.Field `json:"after"`
	Source        string      `json:"source"`
	Actor         string      `json:"actor,omitempty"`
	EventKey      string      `json:"event_key"`
	OccurredAt    string      `json:"occurred_at"`
	RecordedAt    string      `json:"recorded_at"`
	PolicyVersion string      `json:"policy_version"`
	RerunBy       string      `json:"rerun_by,omitempty"`
	RerunWhy      string      `json:"rerun_why,omitempty"`
}

// newContactDoc converts the worker's view into the stable document.
func newContactDoc(v *worker.ContactView) contactDoc {
	c := v.Contact
	doc := contactDoc{Schema: contactSchema, Timeline: []timelineEntry{}, Audit: []auditEntry{}}
	doc.Contact = contactRecord{ID: c.ID, Version: c.Version, AccountID: c.AccountID, Identities: append([]string{}, c.Identities...),
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, LastActivityAt: c.LastActivityAt, Fields: map[string]store.Field{}}
	for k, f := range c.Fields {
		doc.Contact.Fields[k] = f
	}
	for _, t := range v.Timeline {
		a := t.Activity
		e := timelineEntry{ID: a.ID, Type: a.Type, Status: a.Status, Outcome: a.Outcome, Canceled: a.Canceled,
			Direction: a.Direction, Subject: a.Subject, StartAt: a.StartAt, EndAt: a.EndAt, DurationSec: a.DurationSec,
			DealID: a.DealID, RelatesTo: a.RelatesTo, Sources: append([]string{}, a.Sources...), Actor: a.Actor,
			Participants: a.Participants, Attrs: a.Attrs, FirstAt: a.FirstAt.UTC(), LastAt: a.LastAt.UTC(),
			Updates: []timelineUpdate{}, Associations: t.Assoc}
		for _, u := range a.Entries {
			e.Updates = append(e.Updates, timelineUpdate{Key: u.Key, Source: u.Source, Kind: u.Kind, Status: u.Status, At: u.At.UTC()})
		}
		doc.Timeline = append(doc.Timeline, e)
	}
	for _, a := range v.Audit {
		doc.Audit = append(doc.Audit, auditEntry{Entity: a.Entity, RecordID: a.RecordID, Field: a.Field, Decision: a.Decision,
			Rule: a.Rule, Reason: a.Reason, Proposed: a.Proposed, Before: a.Before, After: a.After, Source: a.Source, Actor: a.Actor,
			EventKey: a.EventKey, OccurredAt: a.OccurredAt, RecordedAt: a.RecordedAt, PolicyVersion: a.PolicyVersion,
			RerunBy: a.RerunBy, RerunWhy: a.RerunWhy})
	}
	sort.SliceStable(doc.Audit, func(i, j int) bool {
		a, b := doc.Audit[i], doc.Audit[j]
		if a.OccurredAt != b.OccurredAt {
			return a.OccurredAt < b.OccurredAt
		}
		if a.EventKey != b.EventKey {
			return a.EventKey < b.EventKey
		}
		return a.Field < b.Field
	})
	return doc
}

func newContactCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "contact", Short: "Read contacts: record with provenance, timeline, audit"}
	var q worker.ContactQuery
	var asJSON bool
	get := &cobra.Command{
		Use:   "get (--email <e> | --phone <p> | --id <id>) [--json]",
		Short: "Show a contact: each field's value and provenance, its timeline with associations, its audit trail",
		Long: `Show one contact of the stack (--local / --stack): the record with each field's value and
provenance (source, event key, occurred_at, lock), its timeline — one entry per real-world
interaction, with how it was associated to the contact, account and deal — and its audit trail
(every applied, rejected and lock-blocked decision, with rule, reason and policy version).

` + contactJSONHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n := 0
			for _, v := range []string{q.Email, q.Phone, q.ID} {
				if v != "" {
					n++
				}
			}
			if n != 1 {
				return errors.New("give exactly one of --email, --phone or --id")
			}
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			w, err := workerFor(ref)
			if err != nil {
				return err
			}
			view, err := w.GetContact(cmd.Context(), q)
			if err != nil {
				if errors.Is(err, worker.ErrNotFound) {
					return fmt.Errorf("no such contact in stack %s", ref.Name)
				}
				return err
			}
			doc := newContactDoc(view)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(doc)
			}
			return printContact(cmd.OutOrStdout(), doc)
		},
	}
	f := get.Flags()
	f.StringVar(&q.Email, "email", "", "the contact's email address (any of them)")
	f.StringVar(&q.Phone, "phone", "", "the contact's phone number (any format; E.164 preferred)")
	f.StringVar(&q.ID, "id", "", "the contact id")
	f.BoolVar(&asJSON, "json", false, "print the stable JSON document described above")
	cmd.AddCommand(get)
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func linkText(l *association.Link) string {
	if l == nil {
		return "-"
	}
	s := l.ID + " (" + string(l.Method)
	if l.Via != "" {
		s += " " + l.Via
	}
	return s + ")"
}

func printContact(out io.Writer, d contactDoc) error {
	c := d.Contact
	fmt.Fprintf(out, "Contact %s  version %d  account %s\n", c.ID, c.Version, orDash(c.AccountID))
	fmt.Fprintf(out, "Identities: %s\n", orDash(strings.Join(c.Identities, ", ")))
	fmt.Fprintf(out, "Created %s, updated %s\n\n", c.CreatedAt, c.UpdatedAt)

	names := make([]string, 0, len(c.Fields))
	for k := range c.Fields {
		names = append(names, k)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "FIELD\tVALUE\tSOURCE\tOCCURRED_AT\tEVENT\tLOCKED_BY\n")
	for _, k := range names {
		f := c.Fields[k]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k, orDash(f.Value), orDash(f.Source), orDash(f.OccurredAt), orDash(f.EventKey), orDash(f.LockedBy))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(out, "\nTimeline (%d)\n", len(d.Timeline))
	for _, t := range d.Timeline {
		status := t.Status
		if t.Canceled {
			status = "canceled"
		}
		line := fmt.Sprintf("  %s  %-8s %s  %s", t.FirstAt.Format(time.RFC3339), t.Type, t.ID, orDash(status))
		if t.DurationSec > 0 {
			line += fmt.Sprintf("  %ds", t.DurationSec)
		}
		if t.Subject != "" {
			line += fmt.Sprintf("  %q", t.Subject)
		}
		fmt.Fprintln(out, line)
		fmt.Fprintf(out, "      sources %s; %d update(s)\n", strings.Join(t.Sources, ","), len(t.Updates))
		fmt.Fprintf(out, "      contact %s, account %s, deal %s\n", linkText(t.Associations.Contact), linkText(t.Associations.Account), linkText(t.Associations.Deal))
		if len(t.RelatesTo) > 0 {
			fmt.Fprintf(out, "      relates to %s\n", strings.Join(t.RelatesTo, ", "))
		}
	}

	fmt.Fprintf(out, "\nAudit (%d)\n", len(d.Audit))
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "OCCURRED_AT\tFIELD\tDECISION\tRULE\tSOURCE\tACTOR\tBEFORE\tAFTER\tEVENT\tREASON\n")
	for _, a := range d.Audit {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.OccurredAt, a.Field, a.Decision, orDash(a.Rule), a.Source, orDash(a.Actor),
			orDash(a.Before.Value), orDash(a.After.Value), a.EventKey, a.Reason)
	}
	return tw.Flush()
}
