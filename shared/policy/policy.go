// Package policy owns crmsync's ownership and conflict policy (design section 5): loading
// config/policy.yaml, validating it with errors that name file, line and field, and answering
// the questions the worker asks of it — which group and rule govern a field, how much authority
// a source has, how long its events are deduplicated, and which roles may override.
//
// A *Policy is immutable after Parse and safe for concurrent use. It decides nothing itself;
// shared/decide applies it to records.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"slices"
	"sort"
	"time"
)

// SystemOfRecord is the source name of the CRM itself. Only its changes may lock, unlock or
// write locked fields, and only its source entry may carry override_roles. Every policy must
// declare it.
const SystemOfRecord = "crm"

// DefaultDedupWindow is the deduplication window used when neither the source nor the policy's
// defaults declare one.
const DefaultDedupWindow = 30 * 24 * time.Hour

// Rule names how conflicts inside a field group are resolved.
type Rule string

// The rules a group may use.
const (
	// OwnerOnly: only the owner source writes; every other source is rejected.
	OwnerOnly Rule = "owner_only"
	// OwnerWinsUnlessBlank: the owner always writes; other sources only fill a blank field.
	OwnerWinsUnlessBlank Rule = "owner_wins_unless_blank"
	// FirstTouch: the earliest occurred_at wins; exact ties go to the lower event key.
	FirstTouch Rule = "first_touch"
	// Latest: the latest occurred_at wins; ties go to higher authority, then higher event key.
	Latest Rule = "latest"
	// Precedence: higher authority wins; equal authority falls back to Latest.
	Precedence Rule = "precedence"
)

// Rules returns every known rule, in documentation order.
func Rules() []Rule {
	return []Rule{OwnerOnly, OwnerWinsUnlessBlank, FirstTouch, Latest, Precedence}
}

// Valid reports whether r is a known rule.
func (r Rule) Valid() bool { return slices.Contains(Rules(), r) }

// NeedsOwner reports whether the rule requires the group to name an owner source.
func (r Rule) NeedsOwner() bool { return r == OwnerOnly || r == OwnerWinsUnlessBlank }

// OrderIndependent reports whether the rule converges to the same value for any delivery order
// of the same set of events (first_touch, latest, precedence).
func (r Rule) OrderIndependent() bool { return r == FirstTouch || r == Latest || r == Precedence }

// Source is one declared event source and its settings, with defaults already applied.
type Source struct {
	// Name is the source's key under sources:, e.g. "crm", "typeform".
	Name string
	// Authority ranks sources under precedence and breaks latest ties; higher wins. Never negative.
	Authority int
	// OverrideRoles are the actor roles whose changes may lock and unlock fields and write
	// locked ones. Only the SystemOfRecord source may have them.
	OverrideRoles []string
	// DedupWindow is how long an event key is remembered in the ledger; meaningless if
	// DedupForever is set.
	DedupWindow time.Duration
	// DedupForever means event keys from this source are never forgotten.
	DedupForever bool
	// Line is the line of the source's declaration in the policy file.
	Line int
}

// Group is a named set of fields of one entity governed by one rule.
type Group struct {
	// Entity is the entity the group belongs to, e.g. "contact".
	Entity string
	// Name is the group's key under groups:, e.g. "identity".
	Name string
	// Fields lists the group's fields in declaration order.
	Fields []string
	// Owner is the owning source; required for owner_only and owner_wins_unless_blank, optional
	// (informational) otherwise.
	Owner string
	// Rule resolves conflicts for every field of the group.
	Rule Rule
	// Custom marks a group of custom fields: fields the CRM does not define itself but a
	// connector's mapping may fill (`custom: true` in the file). Mappings may only target a
	// custom field that such a group declares.
	Custom bool
	// Line is the line of the group's declaration in the policy file.
	Line int
}

// Entity is one record type (contact, account, deal) and its field groups.
type Entity struct {
	// Name is the entity's key under entities:.
	Name string
	// Groups lists the entity's groups in declaration order.
	Groups []*Group
}

// Policy is a parsed, validated policy. Values returned by its methods must not be modified.
type Policy struct {
	file          string
	declared      string
	version       string
	sources       map[string]*Source
	defaultWindow time.Duration
	defaultFor    bool
	entities      map[string]*Entity
	fields        map[string]map[string]*Group // entity -> field -> group
}

// Load reads and parses the policy file at path. Errors name the path as given.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse parses and validates policy YAML. name is used in error messages (normally the file's
// path). On failure the error is an Errors value listing every problem found, each with
// file, line and field path; no partial policy is returned.
func Parse(name string, data []byte) (*Policy, error) {
	ps := &parser{name: name}
	p := ps.parse(data)
	if len(ps.errs) > 0 {
		sort.SliceStable(ps.errs, func(i, j int) bool { return ps.errs[i].Line < ps.errs[j].Line })
		return nil, ps.errs
	}
	sum := sha256.Sum256(data)
	p.file = name
	p.version = p.declared + "+" + hex.EncodeToString(sum[:])[:12]
	return p, nil
}

// Version identifies the exact policy content: the declared version, "+", and the first 12 hex
// digits of the sha256 of the file's bytes (e.g. "2026-11-01+3f2a9c0d1e4b"). Audit entries and
// the ledger record it, so an edit without a version bump is still distinguishable.
func (p *Policy) Version() string { return p.version }

// DeclaredVersion returns the version: value as written in the file.
func (p *Policy) DeclaredVersion() string { return p.declared }

// File returns the name the policy was parsed under.
func (p *Policy) File() string { return p.file }

// Source returns the named source's settings.
func (p *Policy) Source(name string) (Source, bool) {
	s, ok := p.sources[name]
	if !ok {
		return Source{}, false
	}
	return *s, true
}

// Sources returns the declared source names, sorted.
func (p *Policy) Sources() []string {
	names := make([]string, 0, len(p.sources))
	for n := range p.sources {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Entities returns the declared entity names, sorted.
func (p *Policy) Entities() []string {
	names := make([]string, 0, len(p.entities))
	for n := range p.entities {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Entity returns the named entity and its groups.
func (p *Policy) Entity(name string) (*Entity, bool) {
	e, ok := p.entities[name]
	return e, ok
}

// GroupOf returns the group that governs field of entity; false if the entity or field is not
// in the policy.
func (p *Policy) GroupOf(entity, field string) (*Group, bool) {
	g, ok := p.fields[entity][field]
	return g, ok
}

// IsCustom reports whether field of entity is declared in a custom group (`custom: true`).
func (p *Policy) IsCustom(entity, field string) bool {
	g, ok := p.fields[entity][field]
	return ok && g.Custom
}

// CustomFields returns the fields of entity's custom groups, sorted; nil when it has none.
func (p *Policy) CustomFields(entity string) []string {
	var out []string
	for f, g := range p.fields[entity] {
		if g.Custom {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// DedupWindow returns how long the source's event keys are deduplicated: its own
// dedup_window, else defaults.dedup_window, else DefaultDedupWindow. forever is true when keys
// never expire (d is then 0). Unknown sources get the default.
func (p *Policy) DedupWindow(source string) (d time.Duration, forever bool) {
	if s, ok := p.sources[source]; ok {
		return s.DedupWindow, s.DedupForever
	}
	return p.defaultWindow, p.defaultFor
}

// Authority returns the source's authority; 0 for an unknown source.
func (p *Policy) Authority(source string) int {
	if s, ok := p.sources[source]; ok {
		return s.Authority
	}
	return 0
}

// CanOverride reports whether a change from source by an actor with role may lock, unlock and
// write locked fields: source must declare role in its override_roles (in practice only the
// SystemOfRecord can). An empty role never overrides.
func (p *Policy) CanOverride(source, role string) bool {
	s, ok := p.sources[source]
	return ok && role != "" && slices.Contains(s.OverrideRoles, role)
}
