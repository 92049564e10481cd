package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is one problem found in a policy file.
type Error struct {
	// File is the name the policy was parsed under.
	File string
	// Line is the 1-based line of the offending node (0 if unknown).
	Line int
	// Path is the dotted field path, e.g. "entities.contact.groups.identity.rule"; "" for
	// problems with the document as a whole.
	Path string
	// Msg describes the problem.
	Msg string
}

// Error formats the problem as "file:line: path: msg".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one policy file, ordered by line. It is the error Parse
// and Load return for an invalid policy; errors.As finds it, and errors.Is/As also see each
// *Error through Unwrap.
type Errors []*Error

// Error lists the problems one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the individual errors.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

type parser struct {
	name string
	errs Errors
}

func (ps *parser) errf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	ps.errs = append(ps.errs, &Error{File: ps.name, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// kv is one key/value pair of a mapping node.
type kv struct {
	key   *yaml.Node
	value *yaml.Node
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// pairs returns the entries of a mapping node, reporting a non-mapping or duplicate keys.
func (ps *parser) pairs(n *yaml.Node, path string) ([]kv, bool) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		ps.errf(n, path, "want a mapping, got %s", kindName(n))
		return nil, false
	}
	seen := map[string]int{}
	var out []kv
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			ps.errf(k, path, "keys must be non-empty names")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			ps.errf(k, join(path, k.Value), "duplicate key (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, kv{k, v})
	}
	return out, true
}

// object returns a mapping's entries by key, reporting keys not in allowed (typos).
func (ps *parser) object(n *yaml.Node, path string, allowed ...string) (map[string]kv, bool) {
	entries, ok := ps.pairs(n, path)
	if !ok {
		return nil, false
	}
	out := map[string]kv{}
	for _, e := range entries {
		if !slices.Contains(allowed, e.key.Value) {
			ps.errf(e.key, join(path, e.key.Value), "unknown key %q (want one of %s)", e.key.Value, strings.Join(allowed, ", "))
			continue
		}
		out[e.key.Value] = e
	}
	return out, true
}

func (ps *parser) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		ps.errf(n, path, "want a value, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

// names returns a list of non-empty, distinct scalars.
func (ps *parser) names(n *yaml.Node, path string) ([]string, []*yaml.Node) {
	if n.Kind != yaml.SequenceNode {
		ps.errf(n, path, "want a list, got %s", kindName(n))
		return nil, nil
	}
	var out []string
	var nodes []*yaml.Node
	for i, item := range n.Content {
		item = deref(item)
		ip := fmt.Sprintf("%s[%d]", path, i)
		v, ok := ps.scalar(item, ip)
		if !ok {
			continue
		}
		if strings.TrimSpace(v) == "" {
			ps.errf(item, ip, "empty name")
			continue
		}
		if slices.Contains(out, v) {
			ps.errf(item, ip, "%q listed twice", v)
			continue
		}
		out = append(out, v)
		nodes = append(nodes, item)
	}
	return out, nodes
}

var daysRE = regexp.MustCompile(`^(\d+)d$`)

// ParseWindow parses a dedup window: "forever", N days ("7d"), or a Go duration ("36h",
// "90m"). The window must be positive.
func ParseWindow(s string) (d time.Duration, forever bool, err error) {
	s = strings.TrimSpace(s)
	if s == "forever" {
		return 0, true, nil
	}
	if m := daysRE.FindStringSubmatch(s); m != nil {
		n, err := strconv.Atoi(m[1])
		if err != nil || n <= 0 || n > 365*100 {
			return 0, false, fmt.Errorf("bad dedup window %q (days must be between 1 and 36500)", s)
		}
		return time.Duration(n) * 24 * time.Hour, false, nil
	}
	d, err = time.ParseDuration(s)
	if err != nil {
		return 0, false, fmt.Errorf("bad dedup window %q (want a Go duration like 36h, days like 7d, or forever)", s)
	}
	if d <= 0 {
		return 0, false, fmt.Errorf("bad dedup window %q (must be positive)", s)
	}
	return d, false, nil
}

func (ps *parser) window(e kv, path string) (time.Duration, bool, bool) {
	v, ok := ps.scalar(e.value, path)
	if !ok {
		return 0, false, false
	}
	d, forever, err := ParseWindow(v)
	if err != nil {
		ps.errf(e.value, path, "%v", err)
		return 0, false, false
	}
	return d, forever, true
}

func ruleList() string {
	rs := Rules()
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

func (ps *parser) parse(data []byte) *Policy {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := err.Error()
		line := 0
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = "yaml: " + m[2]
		}
		ps.errs = append(ps.errs, &Error{File: ps.name, Line: line, Msg: msg})
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		ps.errf(nil, "", "empty policy")
		return nil
	}
	root := deref(doc.Content[0])
	top, ok := ps.object(root, "", "version", "sources", "defaults", "entities")
	if !ok {
		return nil
	}
	p := &Policy{
		sources:       map[string]*Source{},
		entities:      map[string]*Entity{},
		fields:        map[string]map[string]*Group{},
		defaultWindow: DefaultDedupWindow,
	}

	if e, ok := top["version"]; !ok {
		ps.errf(root, "version", "required (e.g. version: 2026-11-01)")
	} else if v, ok := ps.scalar(e.value, "version"); ok {
		if strings.TrimSpace(v) == "" {
			ps.errf(e.value, "version", "must not be empty")
		}
		p.declared = v
	}

	if e, ok := top["defaults"]; ok {
		if d, ok := ps.object(e.value, "defaults", "dedup_window"); ok {
			if w, ok := d["dedup_window"]; ok {
				if dur, forever, ok := ps.window(w, "defaults.dedup_window"); ok {
					p.defaultWindow, p.defaultFor = dur, forever
				}
			}
		}
	}

	if e, ok := top["sources"]; !ok {
		ps.errf(root, "sources", "required")
	} else {
		ps.parseSources(p, e)
	}

	if e, ok := top["entities"]; !ok {
		ps.errf(root, "entities", "required")
	} else {
		ps.parseEntities(p, e)
	}
	return p
}

func (ps *parser) parseSources(p *Policy, e kv) {
	entries, ok := ps.pairs(e.value, "sources")
	if !ok {
		return
	}
	for _, se := range entries {
		name := se.key.Value
		path := "sources." + name
		src := &Source{Name: name, Line: se.key.Line, DedupWindow: p.defaultWindow, DedupForever: p.defaultFor}
		p.sources[name] = src
		f, ok := ps.object(se.value, path, "authority", "override_roles", "dedup_window")
		if !ok {
			continue
		}
		if a, ok := f["authority"]; !ok {
			ps.errf(se.key, path+".authority", "required")
		} else if v, ok := ps.scalar(a.value, path+".authority"); ok {
			n, err := strconv.Atoi(v)
			switch {
			case err != nil || a.value.Tag != "!!int":
				ps.errf(a.value, path+".authority", "want an integer, got %q", v)
			case n < 0:
				ps.errf(a.value, path+".authority", "negative authority %d (want 0 or more)", n)
			default:
				src.Authority = n
			}
		}
		if r, ok := f["override_roles"]; ok {
			src.OverrideRoles, _ = ps.names(r.value, path+".override_roles")
			if name != SystemOfRecord {
				ps.errf(r.key, path+".override_roles", "only the %s source may have override roles", SystemOfRecord)
			}
		}
		if w, ok := f["dedup_window"]; ok {
			if d, forever, ok := ps.window(w, path+".dedup_window"); ok {
				src.DedupWindow, src.DedupForever = d, forever
			}
		}
	}
	if _, ok := p.sources[SystemOfRecord]; !ok {
		ps.errf(e.key, "sources", "the system of record %q must be declared", SystemOfRecord)
	}
}

func (ps *parser) parseEntities(p *Policy, e kv) {
	entries, ok := ps.pairs(e.value, "entities")
	if !ok {
		return
	}
	for _, ee := range entries {
		ename := ee.key.Value
		epath := "entities." + ename
		ent := &Entity{Name: ename}
		p.entities[ename] = ent
		p.fields[ename] = map[string]*Group{}
		f, ok := ps.object(ee.value, epath, "groups")
		if !ok {
			continue
		}
		ge, ok := f["groups"]
		if !ok {
			ps.errf(ee.key, epath+".groups", "required")
			continue
		}
		groups, ok := ps.pairs(ge.value, epath+".groups")
		if !ok {
			continue
		}
		if len(groups) == 0 {
			ps.errf(ge.value, epath+".groups", "at least one group required")
		}
		for _, g := range groups {
			ps.parseGroup(p, ent, g, epath+".groups."+g.key.Value)
		}
	}
}

func (ps *parser) parseGroup(p *Policy, ent *Entity, g kv, path string) {
	grp := &Group{Entity: ent.Name, Name: g.key.Value, Line: g.key.Line}
	ent.Groups = append(ent.Groups, grp)
	custom, rest := splitKey(g.value, "custom")
	if custom != nil {
		grp.Custom = ps.flag(custom, path+".custom")
	}
	f, ok := ps.object(rest, path, "fields", "owner", "rule")
	if !ok {
		return
	}
	if fe, ok := f["fields"]; !ok {
		ps.errf(g.key, path+".fields", "required")
	} else {
		names, nodes := ps.names(fe.value, path+".fields")
		if len(names) == 0 && fe.value.Kind == yaml.SequenceNode && len(fe.value.Content) == 0 {
			ps.errf(fe.value, path+".fields", "at least one field required")
		}
		for i, field := range names {
			if other, dup := p.fields[ent.Name][field]; dup {
				ps.errf(nodes[i], path+".fields", "field %q is already in group %s (line %d)", field, other.Name, other.Line)
				continue
			}
			p.fields[ent.Name][field] = grp
			grp.Fields = append(grp.Fields, field)
		}
	}
	if re, ok := f["rule"]; !ok {
		ps.errf(g.key, path+".rule", "required (want one of %s)", ruleList())
	} else if v, ok := ps.scalar(re.value, path+".rule"); ok {
		if !Rule(v).Valid() {
			ps.errf(re.value, path+".rule", "unknown rule %q (want one of %s)", v, ruleList())
		} else {
			grp.Rule = Rule(v)
		}
	}
	if oe, ok := f["owner"]; ok {
		if v, ok := ps.scalar(oe.value, path+".owner"); ok {
			if _, known := p.sources[v]; !known {
				ps.errf(oe.value, path+".owner", "unknown source %q (declared: %s)", v, strings.Join(p.Sources(), ", "))
			} else {
				grp.Owner = v
			}
		}
	} else if grp.Rule.NeedsOwner() {
		ps.errf(g.key, path+".owner", "required for rule %s", grp.Rule)
	}
}

// splitKey returns the value of key in mapping node n (nil when absent or n is no mapping) and
// n without that entry. It lets an optional key (a group's custom flag) stay out of the list of
// keys an unknown-key error names.
func splitKey(n *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, n
	}
	var value *yaml.Node
	rest := *n
	rest.Content = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := deref(n.Content[i]); value == nil && k.Kind == yaml.ScalarNode && k.Value == key {
			value = deref(n.Content[i+1])
			continue
		}
		rest.Content = append(rest.Content, n.Content[i], n.Content[i+1])
	}
	return value, &rest
}

// flag reads a boolean (true or false), reporting anything else.
func (ps *parser) flag(n *yaml.Node, path string) bool {
	v, ok := ps.scalar(n, path)
	if !ok {
		return false
	}
	if n.Tag != "!!bool" {
		ps.errf(n, path, "want true or false, got %q", v)
		return false
	}
	return strings.EqualFold(v, "true")
}
