package samtemplate

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decodeYAML decodes the first YAML document in data into generic JSON-like values: mappings
// become map[string]any, sequences []any, and scalars string, float64 (every number, as after a
// round trip through JSON), bool or nil, following YAML's own scalar typing. CloudFormation's
// short-form intrinsics become their long form:
//
//	!Ref Name          {"Ref": "Name"}
//	!GetAtt Res.Attr   {"Fn::GetAtt": ["Res", "Attr"]} (the sequence form stays a sequence)
//	!Condition Name    {"Condition": "Name"}
//	!Name value        {"Fn::Name": value}, value decoded recursively (scalar, sequence or mapping)
//
// The value of a tagged scalar is always a string (!Select [0, ...] has a number inside a
// sequence, !Base64 123 is the string "123"). Aliases are expanded, merge keys (<<) applied and
// duplicate keys rejected; mapping keys must be scalars and are taken as strings. An empty
// document decodes to nil.
func decodeYAML(data []byte) (any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("invalid YAML template: %w", err)
	}
	if doc.Kind == 0 {
		return nil, nil
	}
	d := &yamlDecoder{aliases: map[*yaml.Node]any{}}
	return d.node(&doc)
}

// yamlDecoder converts yaml nodes, remembering each expanded alias so a value aliased many times
// is converted once.
type yamlDecoder struct {
	aliases map[*yaml.Node]any
}

// node converts one node, applying its short-form intrinsic tag if it has one.
func (d *yamlDecoder) node(n *yaml.Node) (any, error) {
	if name, ok := intrinsicTag(n.Tag); ok {
		return d.intrinsic(name, n)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return d.node(n.Content[0])
	case yaml.AliasNode:
		if v, ok := d.aliases[n.Alias]; ok {
			return v, nil
		}
		v, err := d.node(n.Alias)
		if err != nil {
			return nil, err
		}
		d.aliases[n.Alias] = v
		return v, nil
	case yaml.SequenceNode:
		return d.sequence(n)
	case yaml.MappingNode:
		return d.mapping(n)
	case yaml.ScalarNode:
		return scalar(n)
	}
	return nil, fmt.Errorf("line %d: unexpected YAML node kind %d", n.Line, n.Kind)
}

// intrinsicTag reports the name of a short-form intrinsic tag (!Ref → "Ref"); standard YAML
// tags (!!str, tag:yaml.org,2002:…) and the non-specific tag "!" are not intrinsics.
func intrinsicTag(tag string) (string, bool) {
	if len(tag) < 2 || tag[0] != '!' || tag[1] == '!' {
		return "", false
	}
	return tag[1:], true
}

// intrinsic converts a node tagged !name to its long form.
func (d *yamlDecoder) intrinsic(name string, n *yaml.Node) (any, error) {
	key := "Fn::" + name
	if name == "Ref" || name == "Condition" {
		key = name
	}
	var value any
	var err error
	switch n.Kind {
	case yaml.ScalarNode:
		value = n.Value
		if name == "GetAtt" {
			resource, attribute, ok := strings.Cut(n.Value, ".")
			if !ok || resource == "" || attribute == "" {
				return nil, fmt.Errorf("line %d: !GetAtt %q is not Resource.Attribute", n.Line, n.Value)
			}
			value = []any{resource, attribute}
		}
	case yaml.SequenceNode:
		value, err = d.sequence(n)
	case yaml.MappingNode:
		value, err = d.mapping(n)
	default:
		return nil, fmt.Errorf("line %d: !%s must tag a scalar, a sequence or a mapping", n.Line, name)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{key: value}, nil
}

// sequence converts a sequence node's items.
func (d *yamlDecoder) sequence(n *yaml.Node) ([]any, error) {
	out := make([]any, 0, len(n.Content))
	for _, item := range n.Content {
		v, err := d.node(item)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// mapping converts a mapping node; explicit keys win over merged (<<) ones.
func (d *yamlDecoder) mapping(n *yaml.Node) (map[string]any, error) {
	out := map[string]any{}
	explicit := map[string]int{} // key → line
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: mapping keys must be scalars", k.Line)
		}
		if line, ok := explicit[k.Value]; ok {
			return nil, fmt.Errorf("line %d: mapping key %q already defined at line %d", k.Line, k.Value, line)
		}
		explicit[k.Value] = k.Line
		value, err := d.node(v)
		if err != nil {
			return nil, err
		}
		out[k.Value] = value
	}
	for _, m := range merges {
		if err := d.merge(out, explicit, m); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// merge adds the keys of a merge value (a mapping, or a sequence of mappings, earlier ones
// winning) that out does not define explicitly.
func (d *yamlDecoder) merge(out map[string]any, explicit map[string]int, m *yaml.Node) error {
	target := m
	if target.Kind == yaml.AliasNode {
		target = target.Alias
	}
	var sources []*yaml.Node
	switch target.Kind {
	case yaml.MappingNode:
		sources = []*yaml.Node{m}
	case yaml.SequenceNode:
		sources = target.Content
	default:
		return fmt.Errorf("line %d: a merge (<<) value must be a mapping or a sequence of mappings", m.Line)
	}
	for _, src := range sources {
		v, err := d.node(src)
		if err != nil {
			return err
		}
		fields, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("line %d: a merge (<<) value must be a mapping or a sequence of mappings", src.Line)
		}
		for k, fv := range fields {
			if _, ok := explicit[k]; ok {
				continue
			}
			if _, ok := out[k]; !ok {
				out[k] = fv
			}
		}
	}
	return nil
}

// scalar decodes an untagged (or standard-tagged) scalar with YAML's typing; numbers become
// float64 and timestamps stay the strings they are written as.
func scalar(n *yaml.Node) (any, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, fmt.Errorf("line %d: %w", n.Line, err)
	}
	var f float64
	switch x := v.(type) {
	case nil, string, bool:
		return x, nil
	case time.Time:
		// CloudFormation reads an unquoted date (AWSTemplateFormatVersion: 2010-09-09) as the
		// string it is.
		return n.Value, nil
	case int:
		f = float64(x)
	case int64:
		f = float64(x)
	case uint64:
		f = float64(x)
	case float64:
		f = x
	default:
		return nil, fmt.Errorf("line %d: unsupported YAML scalar %q (%T)", n.Line, n.Value, v)
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("line %d: %w: %s", n.Line, errNotJSONNumber, n.Value)
	}
	return f, nil
}

// errNotJSONNumber rejects .inf and .nan, which JSON cannot hold.
var errNotJSONNumber = errors.New("number not representable in JSON")
