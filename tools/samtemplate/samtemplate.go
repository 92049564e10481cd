// Package samtemplate owns reading crmsync's SAM template (template.yaml) into the model the
// local stack and the tests use: functions with their merged Globals, environment, HTTP routes,
// SQS event sources and schedules; queues, tables, secrets, buckets, topics and alarms with their
// properties. That includes decoding the template's YAML with its short-form intrinsics (!Ref,
// !Sub, …; see decodeYAML) and resolving the intrinsic functions a local stack can evaluate:
// parameters, pseudo parameters, conditions, mappings and string functions (see evaluator).
// References to resources are resolved in a second step, once the resources exist (see Resolve).
package samtemplate

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
)

// Resource type names the local stack understands.
const (
	TypeFunction = "AWS::Serverless::Function"
	TypeHTTPAPI  = "AWS::Serverless::HttpApi"
	TypeQueue    = "AWS::SQS::Queue"
	TypeTable    = "AWS::DynamoDB::Table"
	TypeSecret   = "AWS::SecretsManager::Secret"
	TypeBucket   = "AWS::S3::Bucket"
	TypeTopic    = "AWS::SNS::Topic"
	TypeAlarm    = "AWS::CloudWatch::Alarm"
)

// Template is a parsed template whose references to resources are still tokens; Resolve
// replaces them with physical values.
type Template struct {
	Path string
	// Raw is the processed template (intrinsics resolved as far as parameters allow, resource
	// references as tokens) as generic JSON.
	Raw map[string]any
	// Resources by logical id, each with Type and Properties (Globals merged into functions).
	Resources map[string]Resource
	// Outputs by name, values possibly holding tokens.
	Outputs map[string]string
}

// Resource is one template resource.
type Resource struct {
	LogicalID  string
	Type       string
	Condition  string
	Properties map[string]any
	Metadata   map[string]any
}

// Options tune parsing.
type Options struct {
	StackName  string
	Region     string
	AccountID  string
	Parameters map[string]string
}

// refToken and attToken mark references to resources until their physical values are known.
var tokenRE = regexp.MustCompile(`\{\{(ref|att):([A-Za-z0-9]+)(?:\.([A-Za-z0-9.]+))?\}\}`)

func refToken(id string) string       { return "{{ref:" + id + "}}" }
func attToken(id, attr string) string { return "{{att:" + id + "." + attr + "}}" }

// Load reads and parses a template file.
func Load(path string, opts Options) (*Template, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	t, err := Parse(data, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.Path = path
	return t, nil
}

// Parse parses template YAML.
func Parse(data []byte, opts Options) (*Template, error) {
	opts = opts.withDefaults()
	decoded, err := decodeYAML(data)
	if err != nil {
		return nil, err
	}
	if decoded == nil {
		return nil, errors.New("empty template")
	}
	raw, ok := decoded.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("template is %s, not a mapping", describe(decoded))
	}
	// The unresolved template gives the parameter defaults and the resource ids.
	resolver := newIntrinsicResolver(opts, parameterValues(raw, opts.Parameters), resourceIDs(raw))
	document, err := newEvaluator(resolver, opts.Region, raw).document()
	if err != nil {
		return nil, err
	}
	return newTemplate(document), nil
}

// withDefaults fills in the stack name, region and account id of a local stack.
func (opts Options) withDefaults() Options {
	if opts.StackName == "" {
		opts.StackName = "crmsync-local"
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.AccountID == "" {
		opts.AccountID = "000000000000"
	}
	return opts
}

// parameterValues is every template parameter's default ("" when it has none), overridden by
// overrides.
func parameterValues(raw map[string]any, overrides map[string]string) map[string]any {
	params := map[string]any{}
	if declared, ok := raw["Parameters"].(map[string]any); ok {
		for name, definition := range declared {
			if parameter, ok := definition.(map[string]any); ok {
				if value, ok := parameter["Default"]; ok {
					params[name] = value
				} else {
					params[name] = ""
				}
			}
		}
	}
	for k, v := range overrides {
		params[k] = v
	}
	return params
}

// resourceIDs is the set of the template's resource logical ids.
func resourceIDs(raw map[string]any) map[string]bool {
	resources := map[string]bool{}
	if declared, ok := raw["Resources"].(map[string]any); ok {
		for id := range declared {
			resources[id] = true
		}
	}
	return resources
}

// intrinsicResolver resolves Ref, Fn::GetAtt and Fn::Sub: pseudo parameters and parameters to
// their values, resources to tokens (see Resolve).
type intrinsicResolver struct {
	pseudo    map[string]any
	params    map[string]any
	resources map[string]bool
}

// newIntrinsicResolver resolves with the stack's pseudo parameters (from opts), the parameters'
// values and the resource ids.
func newIntrinsicResolver(opts Options, params map[string]any, resources map[string]bool) *intrinsicResolver {
	pseudo := map[string]any{
		"AWS::AccountId": opts.AccountID, "AWS::Region": opts.Region, "AWS::StackName": opts.StackName,
		"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": nil,
		"AWS::StackId": "arn:aws:cloudformation:" + opts.Region + ":" + opts.AccountID + ":stack/" + opts.StackName + "/local",
	}
	return &intrinsicResolver{pseudo: pseudo, params: params, resources: resources}
}

// ref resolves a Ref: a pseudo parameter, a parameter or a resource's token (nil otherwise).
func (r *intrinsicResolver) ref(name string) any {
	if v, ok := r.pseudo[name]; ok {
		return v
	}
	if v, ok := r.params[name]; ok {
		return v
	}
	if r.resources[name] {
		return refToken(name)
	}
	return nil
}

// getAtt resolves a Fn::GetAtt (list or "Resource.Attribute" form) to its token, nil when it
// does not name a resource's attribute.
func (r *intrinsicResolver) getAtt(in any) any {
	var parts []string
	switch v := in.(type) {
	case []any:
		for _, p := range v {
			if s, ok := p.(string); ok {
				parts = append(parts, s)
			}
		}
	case string:
		parts = strings.SplitN(v, ".", 2)
	}
	if len(parts) != 2 || !r.resources[parts[0]] {
		return nil
	}
	return attToken(parts[0], parts[1])
}

// subVarRE matches a Fn::Sub variable, ${Name}.
var subVarRE = regexp.MustCompile(`\$\{([^}]+)\}`)

// sub resolves a Fn::Sub (string or [string, variables] form); ${!Name} stays a literal ${Name}.
func (r *intrinsicResolver) sub(in any) any {
	var source string
	vars := map[string]any{}
	switch v := in.(type) {
	case string:
		source = v
	case []any:
		if len(v) != 2 {
			return nil
		}
		source, _ = v[0].(string)
		if m, ok := v[1].(map[string]any); ok {
			vars = m
		}
	default:
		return nil
	}
	return subVarRE.ReplaceAllStringFunc(source, func(m string) string {
		name := m[2 : len(m)-1]
		if strings.HasPrefix(name, "!") {
			return "${" + name[1:] + "}"
		}
		var value any
		if v, ok := vars[name]; ok {
			value = v
		} else if strings.Contains(name, ".") {
			value = r.getAtt(name)
		} else {
			value = r.ref(name)
		}
		if value == nil {
			return ""
		}
		return fmt.Sprint(value)
	})
}

// newTemplate builds the model of a processed template: its resources (Globals merged into
// functions) and its outputs' string values.
func newTemplate(document map[string]any) *Template {
	t := &Template{Raw: document, Resources: map[string]Resource{}, Outputs: map[string]string{}}
	globals := map[string]any{}
	if section, ok := document["Globals"].(map[string]any); ok {
		if functionGlobals, ok := section["Function"].(map[string]any); ok {
			globals = functionGlobals
		}
	}
	resources, _ := document["Resources"].(map[string]any)
	for id, definition := range resources {
		t.Resources[id] = newResource(id, definition, globals)
	}
	if outputs, ok := document["Outputs"].(map[string]any); ok {
		for name, definition := range outputs {
			if output, ok := definition.(map[string]any); ok {
				if v, ok := output["Value"].(string); ok {
					t.Outputs[name] = v
				}
			}
		}
	}
	return t
}

// newResource decodes one resource's definition, merging globals into a function's properties.
func newResource(id string, definition any, globals map[string]any) Resource {
	fields, _ := definition.(map[string]any)
	res := Resource{LogicalID: id}
	res.Type, _ = fields["Type"].(string)
	res.Condition, _ = fields["Condition"].(string)
	res.Properties, _ = fields["Properties"].(map[string]any)
	if res.Properties == nil {
		res.Properties = map[string]any{}
	}
	res.Metadata, _ = fields["Metadata"].(map[string]any)
	if res.Type == TypeFunction {
		res.Properties = mergeGlobals(globals, res.Properties)
	}
	return res
}

// mergeGlobals applies SAM's Globals rules: function values win; maps (Environment.Variables)
// merge key by key.
func mergeGlobals(g, p map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range g {
		out[k] = v
	}
	for k, v := range p {
		if gm, ok := out[k].(map[string]any); ok {
			if pm, ok := v.(map[string]any); ok {
				out[k] = mergeGlobals(gm, pm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// OfType returns the logical ids of the resources of one type, sorted.
func (t *Template) OfType(typ string) []string {
	var ids []string
	for id, r := range t.Resources {
		if r.Type == typ {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Physical holds the values a resource's Ref and Fn::GetAtt resolve to.
type Physical struct {
	Ref   string
	Attrs map[string]string
}

// Resolve replaces every resource token in s with the physical values known so far; unknown
// references resolve to "" and are reported.
func Resolve(s string, phys map[string]Physical) (string, error) {
	var missing []string
	out := tokenRE.ReplaceAllStringFunc(s, func(m string) string {
		sm := tokenRE.FindStringSubmatch(m)
		p, ok := phys[sm[2]]
		if !ok {
			missing = append(missing, sm[2])
			return ""
		}
		if sm[1] == "ref" {
			return p.Ref
		}
		v, ok := p.Attrs[sm[3]]
		if !ok {
			missing = append(missing, sm[2]+"."+sm[3])
		}
		return v
	})
	if len(missing) > 0 {
		return out, fmt.Errorf("unresolved references: %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// HasToken reports whether s still holds an unresolved resource reference.
func HasToken(s string) bool { return tokenRE.MatchString(s) }
