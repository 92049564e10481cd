// Package samtemplate owns reading crmsync's SAM template (template.yaml) into the model the
// local stack and the tests use: functions with their merged Globals, environment, HTTP routes,
// SQS event sources and schedules; queues, tables, secrets, buckets, topics and alarms with their
// properties. YAML short-form intrinsics and their resolution come from goformation; references
// to resources are resolved in a second step, once the resources exist (see Resolve).
package samtemplate

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/awslabs/goformation/v7/intrinsics"
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
	if opts.StackName == "" {
		opts.StackName = "crmsync-local"
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.AccountID == "" {
		opts.AccountID = "000000000000"
	}
	// First pass, unprocessed, to learn parameter defaults and resource ids.
	rawJSON, err := intrinsics.ProcessYAML(data, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := json.Unmarshal(rawJSON, &raw); err != nil {
		return nil, err
	}
	params := map[string]any{}
	if ps, ok := raw["Parameters"].(map[string]any); ok {
		for name, p := range ps {
			if pm, ok := p.(map[string]any); ok {
				if d, ok := pm["Default"]; ok {
					params[name] = d
				} else {
					params[name] = ""
				}
			}
		}
	}
	for k, v := range opts.Parameters {
		params[k] = v
	}
	resources := map[string]bool{}
	if rs, ok := raw["Resources"].(map[string]any); ok {
		for id := range rs {
			resources[id] = true
		}
	}
	pseudo := map[string]any{
		"AWS::AccountId": opts.AccountID, "AWS::Region": opts.Region, "AWS::StackName": opts.StackName,
		"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": nil,
		"AWS::StackId": "arn:aws:cloudformation:" + opts.Region + ":" + opts.AccountID + ":stack/" + opts.StackName + "/local",
	}
	ref := func(name string) any {
		if v, ok := pseudo[name]; ok {
			return v
		}
		if v, ok := params[name]; ok {
			return v
		}
		if resources[name] {
			return refToken(name)
		}
		return nil
	}
	getAtt := func(in any) any {
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
		if len(parts) != 2 || !resources[parts[0]] {
			return nil
		}
		return attToken(parts[0], parts[1])
	}
	subRE := regexp.MustCompile(`\$\{([^}]+)\}`)
	sub := func(in any) any {
		var src string
		vars := map[string]any{}
		switch v := in.(type) {
		case string:
			src = v
		case []any:
			if len(v) != 2 {
				return nil
			}
			src, _ = v[0].(string)
			if m, ok := v[1].(map[string]any); ok {
				vars = m
			}
		default:
			return nil
		}
		return subRE.ReplaceAllStringFunc(src, func(m string) string {
			name := m[2 : len(m)-1]
			if strings.HasPrefix(name, "!") {
				return "${" + name[1:] + "}"
			}
			var val any
			if v, ok := vars[name]; ok {
				val = v
			} else if strings.Contains(name, ".") {
				val = getAtt(name)
			} else {
				val = ref(name)
			}
			if val == nil {
				return ""
			}
			return fmt.Sprint(val)
		})
	}
	conds := map[string]any{}
	opt := &intrinsics.ProcessorOptions{
		IntrinsicHandlerOverrides: map[string]intrinsics.IntrinsicHandler{
			"Ref": func(_ string, in, _ any) any {
				s, _ := in.(string)
				return ref(s)
			},
			"Fn::GetAtt": func(_ string, in, _ any) any { return getAtt(in) },
			"Fn::Sub":    func(_ string, in, _ any) any { return sub(in) },
		},
	}
	processed, err := intrinsics.ProcessJSON(rawJSON, opt)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(processed, &doc); err != nil {
		return nil, err
	}
	if cs, ok := doc["Conditions"].(map[string]any); ok {
		for k, v := range cs {
			conds[k] = v
		}
	}
	t := &Template{Raw: doc, Resources: map[string]Resource{}, Outputs: map[string]string{}}
	globals := map[string]any{}
	if g, ok := doc["Globals"].(map[string]any); ok {
		if f, ok := g["Function"].(map[string]any); ok {
			globals = f
		}
	}
	rs, _ := doc["Resources"].(map[string]any)
	for id, r := range rs {
		rm, _ := r.(map[string]any)
		res := Resource{LogicalID: id}
		res.Type, _ = rm["Type"].(string)
		res.Condition, _ = rm["Condition"].(string)
		res.Properties, _ = rm["Properties"].(map[string]any)
		if res.Properties == nil {
			res.Properties = map[string]any{}
		}
		res.Metadata, _ = rm["Metadata"].(map[string]any)
		if res.Type == TypeFunction {
			res.Properties = mergeGlobals(globals, res.Properties)
		}
		t.Resources[id] = res
	}
	if outs, ok := doc["Outputs"].(map[string]any); ok {
		for name, o := range outs {
			if om, ok := o.(map[string]any); ok {
				if v, ok := om["Value"].(string); ok {
					t.Outputs[name] = v
				}
			}
		}
	}
	return t, nil
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
