package typeform

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/policy"
)

// MappingFile is the name the embedded mapping (config/typeform.yaml) is parsed under.
const MappingFile = "config/typeform.yaml"

// AllForms is the form id whose mapping applies to every form (after the form's own).
const AllForms = "*"

// customPrefix starts a mapping target naming a custom field ("custom.marketing_consent").
const customPrefix = "custom."

// accountTargets are the non-contact targets a mapping may name.
var accountTargets = []string{"account.domain"}

// Mapping is a parsed, validated Typeform mapping file: per form id, which answers (by field
// ref or title), hidden fields, variables and the score go to which contact or custom field.
// Anything a mapping does not name falls back to the built-in defaults (RefFields, then the
// answer's type, then its question title). A *Mapping is immutable and safe for concurrent use.
type Mapping struct {
	version string
	forms   map[string]*formMapping
}

// formMapping is one form's entries. Keys are normalised: refs and names by normRef, titles by
// normTitle. Values are targets: a contact field, "account.domain", or a custom field's name
// (custom fields are contact fields too; the policy's custom group governs them).
type formMapping struct {
	refs      map[string]string
	titles    map[string]string
	hidden    map[string]string
	variables map[string]string
	score     string
}

// Version identifies the mapping's content: its declared version, "+", and the first 12 hex
// digits of the sha256 of the file's bytes; "" for the empty mapping.
func (m *Mapping) Version() string {
	if m == nil {
		return ""
	}
	return m.version
}

// lookup returns the target form's entry (else the all-forms entry) gives by pick; "" if none.
func (m *Mapping) lookup(formID string, pick func(*formMapping) string) string {
	if m == nil {
		return ""
	}
	for _, id := range []string{formID, AllForms} {
		if f := m.forms[id]; f != nil && id != "" {
			if t := pick(f); t != "" {
				return t
			}
		}
	}
	return ""
}

// answerTarget returns the field a form's mapping names for an answer by ref, else by title.
func (m *Mapping) answerTarget(formID, ref, title string) string {
	if t := m.lookup(formID, func(f *formMapping) string { return f.refs[normRef(ref)] }); t != "" && ref != "" {
		return t
	}
	if title == "" {
		return ""
	}
	return m.lookup(formID, func(f *formMapping) string { return f.titles[normTitle(title)] })
}

func (m *Mapping) hiddenTarget(formID, name string) string {
	return m.lookup(formID, func(f *formMapping) string { return f.hidden[normRef(name)] })
}

func (m *Mapping) variableTarget(formID, key string) string {
	return m.lookup(formID, func(f *formMapping) string { return f.variables[normRef(key)] })
}

func (m *Mapping) scoreTarget(formID string) string {
	return m.lookup(formID, func(f *formMapping) string { return f.score })
}

var spaces = regexp.MustCompile(`\s+`)

// normTitle lower-cases a question title, trims it and folds runs of white space, so titles
// match case-insensitively.
func normTitle(s string) string {
	return spaces.ReplaceAllString(strings.ToLower(strings.TrimSpace(s)), " ")
}

// LoadMapping reads and parses the mapping file at path against pol.
func LoadMapping(path string, pol *policy.Policy) (*Mapping, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseMapping(path, data, pol)
}

// defaultMapping parses the embedded mapping against the embedded policy once.
var defaultMapping = sync.OnceValues(func() (*Mapping, error) {
	pol, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		return nil, err
	}
	return ParseMapping(MappingFile, config.TypeformYAML, pol)
})

// DefaultMapping returns the embedded mapping (config/typeform.yaml) validated against the
// embedded policy. config's tests keep both valid; should they not be, the error says why.
func DefaultMapping() (*Mapping, error) { return defaultMapping() }

// ParseMapping parses and validates a mapping file. name is used in error messages (normally
// the file's path). Every target must be a contact field of pol that is not custom,
// "account.domain", or "custom.<field>" naming a field of one of pol's custom contact groups.
// On failure the error is a policy.Errors listing every problem with file, line and field path.
func ParseMapping(name string, data []byte, pol *policy.Policy) (*Mapping, error) {
	mp := &mappingParser{name: name, pol: pol}
	m := mp.parse(data)
	if len(mp.errs) > 0 {
		sort.SliceStable(mp.errs, func(i, j int) bool { return mp.errs[i].Line < mp.errs[j].Line })
		return nil, mp.errs
	}
	sum := sha256.Sum256(data)
	m.version += "+" + hex.EncodeToString(sum[:])[:12]
	return m, nil
}

// mappingParser collects every problem of one mapping file.
type mappingParser struct {
	name string
	pol  *policy.Policy
	errs policy.Errors
}

func (mp *mappingParser) errf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	mp.errs = append(mp.errs, &policy.Error{File: mp.name, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

var yamlErrLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (mp *mappingParser) parse(data []byte) *Mapping {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg, line := err.Error(), 0
		if m := yamlErrLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = "yaml: " + m[2]
		}
		mp.errs = append(mp.errs, &policy.Error{File: mp.name, Line: line, Msg: msg})
		return nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		mp.errf(nil, "", "empty mapping")
		return nil
	}
	root := doc.Content[0]
	top := mp.object(root, "", "version", "forms")
	m := &Mapping{forms: map[string]*formMapping{}}
	if v, ok := top["version"]; !ok {
		mp.errf(root, "version", "required (e.g. version: 2026-12-01)")
	} else if s, ok := mp.scalar(v[1], "version"); ok {
		m.version = s
	}
	forms, ok := top["forms"]
	if !ok {
		mp.errf(root, "forms", "required")
		return m
	}
	for _, e := range mp.pairs(forms[1], "forms") {
		id := e[0].Value
		m.forms[id] = mp.parseForm(e[1], "forms."+id)
	}
	return m
}

// parseForm reads one form's answers, hidden, variables and score entries.
func (mp *mappingParser) parseForm(n *yaml.Node, path string) *formMapping {
	f := &formMapping{refs: map[string]string{}, titles: map[string]string{}, hidden: map[string]string{}, variables: map[string]string{}}
	entries := mp.object(n, path, "answers", "hidden", "variables", "score")
	if a, ok := entries["answers"]; ok {
		mp.parseAnswers(a[1], path+".answers", f)
	}
	for _, kind := range []struct {
		key  string
		into map[string]string
	}{{"hidden", f.hidden}, {"variables", f.variables}} {
		e, ok := entries[kind.key]
		if !ok {
			continue
		}
		for _, kv := range mp.pairs(e[1], path+"."+kind.key) {
			p := path + "." + kind.key + "." + kv[0].Value
			if t, ok := mp.target(kv[1], p); ok {
				kind.into[normRef(kv[0].Value)] = t
			}
		}
	}
	if s, ok := entries["score"]; ok {
		f.score, _ = mp.target(s[1], path+".score")
	}
	return f
}

// parseAnswers reads a form's answer entries: a list of {ref or title, to}.
func (mp *mappingParser) parseAnswers(n *yaml.Node, path string, f *formMapping) {
	if n.Kind != yaml.SequenceNode {
		mp.errf(n, path, "want a list of {ref or title, to}, got %s", kindOf(n))
		return
	}
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		e := mp.object(item, p, "ref", "title", "to")
		ref, hasRef := e["ref"]
		title, hasTitle := e["title"]
		if hasRef == hasTitle {
			mp.errf(item, p, "want exactly one of ref or title")
			continue
		}
		to, ok := e["to"]
		if !ok {
			mp.errf(item, p+".to", "required")
			continue
		}
		target, ok := mp.target(to[1], p+".to")
		if !ok {
			continue
		}
		into, key, kp := f.refs, ref, p+".ref"
		if hasTitle {
			into, key, kp = f.titles, title, p+".title"
		}
		s, ok := mp.scalar(key[1], kp)
		if !ok {
			continue
		}
		norm := normRef(s)
		if hasTitle {
			norm = normTitle(s)
		}
		if _, dup := into[norm]; dup {
			mp.errf(key[1], kp, "%q is mapped twice", s)
			continue
		}
		into[norm] = target
	}
}

// target validates a mapping target against the policy and returns the contact field it names.
func (mp *mappingParser) target(n *yaml.Node, path string) (string, bool) {
	s, ok := mp.scalar(n, path)
	if !ok {
		return "", false
	}
	if name, custom := strings.CutPrefix(s, customPrefix); custom {
		if mp.pol.IsCustom("contact", name) {
			return name, true
		}
		mp.errf(n, path, "%q is not a custom field of the policy (declared: %s)", s, strings.Join(mp.pol.CustomFields("contact"), ", "))
		return "", false
	}
	for _, t := range accountTargets {
		if s == t {
			return s, true
		}
	}
	if _, known := mp.pol.GroupOf("contact", s); known && !mp.pol.IsCustom("contact", s) {
		return s, true
	}
	if mp.pol.IsCustom("contact", s) {
		mp.errf(n, path, "%q is a custom field: write it custom.%s", s, s)
		return "", false
	}
	mp.errf(n, path, "unknown field %q (want a contact field of the policy, %s, or custom.<field>)", s, strings.Join(accountTargets, ", "))
	return "", false
}

// object returns a mapping's entries by key ([key, value] nodes), reporting unknown keys.
func (mp *mappingParser) object(n *yaml.Node, path string, allowed ...string) map[string][2]*yaml.Node {
	out := map[string][2]*yaml.Node{}
	for _, e := range mp.pairs(n, path) {
		k := e[0].Value
		if !containsString(allowed, k) {
			mp.errf(e[0], joinPath(path, k), "unknown key %q (want one of %s)", k, strings.Join(allowed, ", "))
			continue
		}
		out[k] = e
	}
	return out
}

// pairs returns a mapping node's [key, value] entries, reporting a non-mapping, empty or
// duplicate keys.
func (mp *mappingParser) pairs(n *yaml.Node, path string) [][2]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		mp.errf(n, path, "want a mapping, got %s", kindOf(n))
		return nil
	}
	seen := map[string]int{}
	var out [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || strings.TrimSpace(k.Value) == "" {
			mp.errf(k, path, "keys must be non-empty names")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			mp.errf(k, joinPath(path, k.Value), "duplicate key (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, [2]*yaml.Node{k, v})
	}
	return out
}

func (mp *mappingParser) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" || strings.TrimSpace(n.Value) == "" {
		mp.errf(n, path, "want a value, got %s", kindOf(n))
		return "", false
	}
	return strings.TrimSpace(n.Value), true
}

func kindOf(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode && (n.Tag == "!!null" || strings.TrimSpace(n.Value) == ""):
		return "nothing"
	case n.Kind == yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "something else"
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
