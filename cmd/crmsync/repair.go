package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/identity"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/worker"
)

// contactQuery reads a contact reference: an email, a phone or a contact id (c-...).
func contactQuery(ref string) (worker.ContactQuery, error) {
	ref = strings.TrimSpace(ref)
	switch {
	case ref == "":
		return worker.ContactQuery{}, fmt.Errorf("--contact is required (an email, a phone or a contact id)")
	case strings.Contains(ref, "@"):
		return worker.ContactQuery{Email: ref}, nil
	case strings.HasPrefix(ref, "c-"):
		return worker.ContactQuery{ID: ref}, nil
	}
	if _, ok := identity.Phone(ref); ok {
		return worker.ContactQuery{Phone: ref}, nil
	}
	return worker.ContactQuery{}, fmt.Errorf("--contact %q is neither an email, a phone number nor a contact id", ref)
}

func printDiff(w io.Writer, d *worker.RebuildDiff) {
	if d.Empty() {
		fmt.Fprintf(w, "contact %s matches its ledger: nothing to rebuild\n", d.ContactID)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintf(tw, "contact %s\n", d.ContactID)
	for _, f := range d.Fields {
		fmt.Fprintf(tw, "- %s\t%q (%s)\n+ %s\t%q (%s)\n", f.Field, f.Stored.Value, f.Stored.Source, f.Field, f.Rebuilt.Value, f.Rebuilt.Source)
	}
	for _, a := range d.Activities {
		fmt.Fprintf(tw, "- activity %s\t%s\n+ activity %s\t%s\n", a.ActivityID, a.Stored, a.ActivityID, a.Rebuilt)
	}
	_ = tw.Flush()
}

func newRebuildCmd() *cobra.Command {
	var contacts []string
	var reason, by string
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "rebuild --contact <email|phone|id> [--contact ...] [--dry-run]",
		Short: "Recompute contacts' fields and timelines from the ledger and restore them (audited)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(contacts) == 0 {
				contacts = []string{""}
			}
			var qs []worker.ContactQuery
			for _, c := range contacts {
				q, err := contactQuery(c)
				if err != nil {
					return err
				}
				qs = append(qs, q)
			}
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			w, err := workerFor(ref)
			if err != nil {
				return err
			}
			if reason == "" {
				reason = "crmsync rebuild"
			}
			type result struct {
				DryRun bool                `json:"dry_run"`
				Diff   *worker.RebuildDiff `json:"diff"`
			}
			var results []result
			bar := newProgress(cmd, "rebuild", len(qs), asJSON || len(qs) < 2)
			for i, q := range qs {
				d, err := rebuildOne(cmd, w, q, dryRun, operator(by), reason)
				if err != nil {
					bar.Finish()
					return fmt.Errorf("rebuild %s: %w", contacts[i], err)
				}
				results = append(results, result{DryRun: dryRun, Diff: d})
				bar.Add(1)
			}
			bar.Finish()
			if asJSON {
				if len(results) == 1 {
					return printJSON(cmd.OutOrStdout(), results[0])
				}
				return printJSON(cmd.OutOrStdout(), results)
			}
			for _, r := range results {
				d := r.Diff
				printDiff(cmd.OutOrStdout(), d)
				if dryRun && !d.Empty() {
					fmt.Fprintln(cmd.OutOrStdout(), "dry run: nothing written; run without --dry-run to restore")
				} else if !d.Empty() {
					fmt.Fprintln(cmd.OutOrStdout(), "restored")
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&contacts, "contact", nil, "the contact: an email, a phone or a contact id (repeatable)")
	f.BoolVar(&dryRun, "dry-run", false, "print the diff; write nothing")
	f.StringVar(&reason, "reason", "", "why (stored in the audit; default \"crmsync rebuild\")")
	f.StringVar(&by, "by", "", "who runs it (default $CRMSYNC_OPERATOR or the OS user)")
	f.BoolVar(&asJSON, "json", false, "print {dry_run, diff: {contact_id, fields: [{field, stored, rebuilt}], activities: [...]}} (an array of them for several --contact)")
	return cmd
}

// rebuildOne recomputes one contact from the ledger: the diff only (dry run), or restored.
func rebuildOne(cmd *cobra.Command, w *worker.Worker, q worker.ContactQuery, dryRun bool, who, reason string) (*worker.RebuildDiff, error) {
	id, err := w.ResolveContact(cmd.Context(), q)
	if err != nil {
		return nil, err
	}
	rb, err := w.Rebuild(cmd.Context(), id)
	if err != nil {
		return nil, err
	}
	if dryRun {
		return w.DiffRebuild(cmd.Context(), rb)
	}
	return w.WriteRebuild(cmd.Context(), rb, who, reason)
}

// explanation is the JSON shape of `explain`.
type explanation struct {
	ContactID string            `json:"contact_id"`
	Field     string            `json:"field"`
	Current   store.Field       `json:"current"`
	History   []store.AuditItem `json:"history"`
	Rejected  []store.AuditItem `json:"rejected"`
}

func newExplainCmd() *cobra.Command {
	var contact, field string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "explain --contact <email|phone|id> --field <field>",
		Short: "Why a field holds its value: its provenance and every proposal the policy refused",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := contactQuery(contact)
			if err != nil {
				return err
			}
			if field == "" {
				return fmt.Errorf("--field is required")
			}
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			w, err := workerFor(ref)
			if err != nil {
				return err
			}
			v, err := w.GetContact(cmd.Context(), q)
			if err != nil {
				return err
			}
			ex := explanation{ContactID: v.Contact.ID, Field: field, Current: v.Contact.Fields[field],
				History: []store.AuditItem{}, Rejected: []store.AuditItem{}}
			for _, a := range v.Audit {
				if a.Field != field {
					continue
				}
				ex.History = append(ex.History, a)
				if a.Decision != "applied" && a.Decision != "rebuild" {
					ex.Rejected = append(ex.Rejected, a)
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ex)
			}
			out := cmd.OutOrStdout()
			c := ex.Current
			if c.Value == "" {
				fmt.Fprintf(out, "%s is blank on contact %s\n", field, ex.ContactID)
			} else {
				fmt.Fprintf(out, "%s = %q on contact %s\n  set by %s (event %s, occurred %s)\n", field, c.Value, ex.ContactID, c.Source, c.EventKey, c.OccurredAt)
			}
			if c.LockedBy != "" {
				fmt.Fprintf(out, "  locked by %s: automation cannot change it until a crm change unlocks it\n", c.LockedBy)
			}
			if len(ex.Rejected) == 0 {
				fmt.Fprintln(out, "no proposal for it was refused")
				return nil
			}
			fmt.Fprintln(out, "refused proposals:")
			tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "  OCCURRED\tSOURCE\tVALUE\tDECISION\tRULE\tREASON")
			for _, a := range ex.Rejected {
				fmt.Fprintf(tw, "  %s\t%s\t%q\t%s\t%s\t%s\n", a.OccurredAt, a.Source, a.Proposed, a.Decision, a.Rule, a.Reason)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&contact, "contact", "", "the contact: an email, a phone or a contact id")
	f.StringVar(&field, "field", "", "the field (e.g. phone, lead_source)")
	f.BoolVar(&asJSON, "json", false, "print {contact_id, field, current, history: [audit...], rejected: [audit...]}")
	return cmd
}
