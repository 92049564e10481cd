package main

// Comparable facts about a CloudFormation template: what the parity test compares and what the
// least-privilege test inspects. Both templates (template.yaml after the SAM transform, and the CDK
// app's synthesized template) go through the same code:
//
//   - resources are named by a stable identity: the logical id for template.yaml, the construct path
//     (aws:cdk:path metadata, without the stack and a trailing /Resource) for CDK, whose construct
//     ids are template.yaml's logical ids;
//   - every intrinsic is rendered to one string spelling (Ref, GetAtt, Sub and Join all become
//     "${Identity}" / "${Identity.Attr}" text), so that the two spellings of one value compare equal;
//   - each resource becomes an entity ("queue IngestQueue") with flat properties
//     ("RedrivePolicy.maxReceiveCount" = "5"), lists keyed by their natural key and defaults filled
//     in, so that a difference names the property;
//   - what only exists as plumbing (roles, policies, permissions, integrations, stages) is folded
//     into the entity it serves (the function's IAM, the route).

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// template is one side of the comparison.
type template struct {
	side    string                    // "template.yaml" or "cdk"
	raw     map[string]any            // the CloudFormation JSON
	res     map[string]map[string]any // logical id -> resource
	ident   map[string]string         // logical id -> identity
	byIdent map[string]string         // identity -> logical id
}

// cdkStackPrefix is how every aws:cdk:path of the app starts.
const cdkStackPrefix = StackID + "/"

func newTemplate(side string, raw map[string]any) (*template, error) {
	t := &template{side: side, raw: raw, res: map[string]map[string]any{}, ident: map[string]string{}, byIdent: map[string]string{}}
	resources, _ := raw["Resources"].(map[string]any)
	for id, r := range resources {
		rm, ok := r.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: resource %s is not an object", side, id)
		}
		t.res[id] = rm
		identity := id
		if md, ok := rm["Metadata"].(map[string]any); ok {
			if p, ok := md["aws:cdk:path"].(string); ok {
				identity = strings.TrimSuffix(strings.TrimPrefix(p, cdkStackPrefix), "/Resource")
			}
		}
		if other, dup := t.byIdent[identity]; dup {
			return nil, fmt.Errorf("%s: resources %s and %s have one identity %q", side, other, id, identity)
		}
		t.ident[id] = identity
		t.byIdent[identity] = id
	}
	return t, nil
}

func (t *template) typeOf(id string) string { s, _ := t.res[id]["Type"].(string); return s }
func (t *template) props(id string) map[string]any {
	p, _ := t.res[id]["Properties"].(map[string]any)
	if p == nil {
		p = map[string]any{}
	}
	return p
}

// idsOfType returns the logical ids of one resource type, sorted.
func (t *template) idsOfType(typ string) []string {
	var ids []string
	for id := range t.res {
		if t.typeOf(id) == typ {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// refName is how a Ref/GetAtt target is spelled in rendered text: a resource's identity, or the
// parameter / pseudo parameter name as it is.
func (t *template) refName(id string) string {
	if i, ok := t.ident[id]; ok {
		return i
	}
	return id
}

var (
	subVarRE = regexp.MustCompile(`\$\{([^}]*)\}`)
	// arn:${AWS::Partition}:s3:::${Bucket} is the bucket's Arn attribute spelled out.
	s3ArnRE = regexp.MustCompile(`arn:\$\{AWS::Partition\}:s3:::\$\{([^}.]+)\}`)
)

// render spells a value (scalar, list, object or intrinsic) as one canonical string.
func (t *template) render(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case json.Number:
		return x.String()
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = t.render(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		if k, arg, ok := intrinsic(x); ok {
			return t.renderIntrinsic(k, arg)
		}
		keys := sortedKeys(x)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + ": " + t.render(x[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v)
}

// intrinsic reports whether m is {"Ref": ...} or {"Fn::X": ...}.
func intrinsic(m map[string]any) (string, any, bool) {
	if len(m) != 1 {
		return "", nil, false
	}
	for k, v := range m {
		if k == "Ref" || k == "Condition" || strings.HasPrefix(k, "Fn::") {
			return k, v, true
		}
	}
	return "", nil, false
}

func (t *template) renderIntrinsic(k string, arg any) string {
	switch k {
	case "Ref":
		if s, ok := arg.(string); ok {
			return "${" + t.refName(s) + "}"
		}
	case "Fn::GetAtt":
		var parts []string
		switch a := arg.(type) {
		case string:
			parts = strings.SplitN(a, ".", 2)
		case []any:
			for _, p := range a {
				parts = append(parts, t.render(p))
			}
		}
		if len(parts) == 2 {
			return "${" + t.refName(parts[0]) + "." + parts[1] + "}"
		}
	case "Fn::Sub":
		var body string
		vars := map[string]any{}
		switch a := arg.(type) {
		case string:
			body = a
		case []any:
			if len(a) == 2 {
				body, _ = a[0].(string)
				vars, _ = a[1].(map[string]any)
			}
		}
		return normARN(subVarRE.ReplaceAllStringFunc(body, func(m string) string {
			name := m[2 : len(m)-1]
			if strings.HasPrefix(name, "!") { // ${!Literal}
				return "${" + name[1:] + "}"
			}
			if v, ok := vars[name]; ok {
				return t.render(v)
			}
			if id, attr, ok := strings.Cut(name, "."); ok && !strings.Contains(name, "::") {
				return "${" + t.refName(id) + "." + attr + "}"
			}
			return "${" + t.refName(name) + "}"
		}))
	case "Fn::Join":
		if a, ok := arg.([]any); ok && len(a) == 2 {
			sep, _ := a[0].(string)
			if list, ok := a[1].([]any); ok {
				parts := make([]string, len(list))
				for i, e := range list {
					parts[i] = t.render(e)
				}
				return normARN(strings.Join(parts, sep))
			}
		}
	}
	return k + "(" + t.render(arg) + ")"
}

func normARN(s string) string { return s3ArnRE.ReplaceAllString(s, "${$1.Arn}") }

// refTarget returns the identity a Ref or GetAtt (or its rendering) points at, or "".
func (t *template) refTarget(v any) string {
	s := t.render(v)
	if !strings.HasPrefix(s, "${") || !strings.HasSuffix(s, "}") || strings.Count(s, "${") != 1 {
		return ""
	}
	id, _, _ := strings.Cut(s[2:len(s)-1], ".")
	return id
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ---------------------------------------------------------------------------- flattening

// listKeys: lists of objects compared by a natural key rather than by position.
var listKeys = map[string]string{
	"AttributeDefinitions":   "AttributeName",
	"GlobalSecondaryIndexes": "IndexName",
	"LocalSecondaryIndexes":  "IndexName",
	"Rules":                  "Id", // S3 lifecycle rules
	"Dimensions":             "Name",
	"Metrics":                "Id", // metric math alarms
}

// setLists: lists whose order means nothing.
var setLists = map[string]bool{
	"AlarmActions": true, "OKActions": true, "InsufficientDataActions": true, "FunctionResponseTypes": true,
}

// flatten writes v's leaves into out as "path" -> rendered value.
func (t *template) flatten(path string, v any, out map[string]string) {
	last := path
	if i := strings.LastIndexAny(path, ".]"); i >= 0 {
		last = path[i+1:]
	}
	switch x := v.(type) {
	case map[string]any:
		if _, _, ok := intrinsic(x); ok {
			out[path] = t.render(x)
			return
		}
		for _, k := range sortedKeys(x) {
			t.flatten(join(path, k), x[k], out)
		}
	case []any:
		if ks := keySchema(x); ks != "" {
			out[path] = ks
			return
		}
		if key, ok := listKeys[last]; ok && allHave(x, key) {
			for _, e := range x {
				m := e.(map[string]any)
				name := t.render(m[key])
				rest := map[string]any{}
				for k, v := range m {
					if k != key {
						rest[k] = v
					}
				}
				if len(rest) == 0 {
					out[path+"["+name+"]"] = "present"
				}
				t.flatten(path+"["+name+"]", rest, out)
			}
			return
		}
		if allScalar(x) {
			parts := make([]string, len(x))
			for i, e := range x {
				parts[i] = t.render(e)
			}
			if setLists[last] {
				sort.Strings(parts)
			}
			out[path] = "[" + strings.Join(parts, ", ") + "]"
			return
		}
		for i, e := range x {
			t.flatten(fmt.Sprintf("%s[%d]", path, i), e, out)
		}
	default:
		out[path] = t.render(x)
	}
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func allHave(list []any, key string) bool {
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return false
		}
		if _, ok := m[key]; !ok {
			return false
		}
	}
	return len(list) > 0
}

func allScalar(list []any) bool {
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			if _, _, isFn := intrinsic(m); !isFn {
				return false
			}
		} else if _, ok := e.([]any); ok {
			return false
		}
	}
	return true
}

// keySchema spells a DynamoDB key schema in order ("pk HASH, sk RANGE"), or "".
func keySchema(list []any) string {
	var parts []string
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok || len(m) != 2 || m["AttributeName"] == nil || m["KeyType"] == nil {
			return ""
		}
		parts = append(parts, fmt.Sprintf("%v %v", m["AttributeName"], m["KeyType"]))
	}
	return strings.Join(parts, ", ")
}

// ---------------------------------------------------------------------------- entities

// facts: entity ("queue IngestQueue") -> property -> value.
type facts map[string]map[string]string

func (f facts) set(entity, prop, value string) {
	if f[entity] == nil {
		f[entity] = map[string]string{}
	}
	f[entity][prop] = value
}

// genericKinds are compared property by property, by identity.
var genericKinds = map[string]string{
	"AWS::Lambda::Function":       "function",
	"AWS::SQS::Queue":             "queue",
	"AWS::DynamoDB::Table":        "table",
	"AWS::S3::Bucket":             "bucket",
	"AWS::SecretsManager::Secret": "secret",
	"AWS::Logs::LogGroup":         "log group",
	"AWS::SNS::Topic":             "topic",
	"AWS::SNS::Subscription":      "subscription",
	"AWS::CloudWatch::Alarm":      "alarm",
	"AWS::Events::Rule":           "schedule",
}

// ignoredProps: what legitimately differs (asset locations, plumbing compared elsewhere).
var ignoredProps = map[string]map[string]bool{
	"AWS::Lambda::Function": {"Code": true, "Role": true}, // Role: compared as the function's IAM
	"AWS::Events::Rule":     {"Targets": true},            // compared below, without target ids
}

// defaults: CloudFormation's value when a property is absent, so explicit and implicit compare equal.
var defaults = map[string]map[string]string{
	"*": {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"},
	"AWS::Lambda::Function": {"MemorySize": "128", "Timeout": "3", "Architectures": "[x86_64]",
		"PackageType": "Zip", "ReservedConcurrentExecutions": "(unreserved)"},
	"AWS::SQS::Queue": {"FifoQueue": "false", "ContentBasedDeduplication": "false", "VisibilityTimeout": "30",
		"MessageRetentionPeriod": "345600", "DelaySeconds": "0", "ReceiveMessageWaitTimeSeconds": "0"},
	"AWS::Events::Rule":      {"State": "ENABLED"},
	"AWS::DynamoDB::Table":   {"BillingMode": "PROVISIONED", "PointInTimeRecoverySpecification.PointInTimeRecoveryEnabled": "false"},
	"AWS::Logs::LogGroup":    {"RetentionInDays": "(never expire)"},
	"AWS::CloudWatch::Alarm": {"TreatMissingData": "missing", "ActionsEnabled": "true"},
}

// extract turns a template into facts, plus a list of what it could not place (uncovered resource
// types, roles no function uses): those fail the parity test too.
func (t *template) extract() (facts, []string) {
	f := facts{}
	var problems []string
	handled := map[string]bool{}

	// Template-level.
	f.set("template", "Description", t.render(t.raw["Description"]))
	for _, sect := range []struct{ key, kind string }{{"Parameters", "parameter"}, {"Conditions", "condition"}, {"Outputs", "output"}} {
		m, _ := t.raw[sect.key].(map[string]any)
		for name, v := range m {
			if sect.key == "Parameters" && name == "BootstrapVersion" {
				continue // the CDK synthesizer's own
			}
			entity := sect.kind + " " + name
			if sect.key == "Conditions" {
				f.set(entity, "Expression", t.render(v))
				continue
			}
			props := map[string]string{}
			t.flatten("", v, props)
			for k, val := range props {
				f.set(entity, k, val)
			}
		}
	}

	// Generic resources.
	for id, r := range t.res {
		typ := t.typeOf(id)
		kind, ok := genericKinds[typ]
		if !ok {
			continue
		}
		handled[id] = true
		entity := kind + " " + t.ident[id]
		props := map[string]string{}
		for k, v := range t.props(id) {
			if ignoredProps["*"][k] || ignoredProps[typ][k] {
				continue
			}
			if typ == "AWS::CloudWatch::Alarm" && k == "Metrics" {
				v = returnedMetricID(v)
			}
			if k == "Tags" {
				for tk, tv := range tags(v) {
					props["Tags."+tk] = t.render(tv)
				}
				continue
			}
			t.flatten(k, v, props)
		}
		for _, k := range []string{"DeletionPolicy", "UpdateReplacePolicy", "Condition"} {
			if v, ok := r[k]; ok {
				props[k] = t.render(v)
			}
		}
		for _, d := range []map[string]string{defaults["*"], defaults[typ]} {
			for k, v := range d {
				if _, ok := props[k]; !ok {
					props[k] = v
				}
			}
		}
		if typ == "AWS::Events::Rule" {
			targets, _ := t.props(id)["Targets"].([]any)
			for _, tg := range targets {
				m, _ := tg.(map[string]any)
				key := "Target[" + t.render(m["Arn"]) + "]"
				for k, v := range m {
					switch k {
					case "Id", "Arn":
					case "Input":
						props[key+".Input"] = canonicalJSON(t.render(v))
					default:
						t.flatten(key+"."+k, v, props)
					}
				}
				if len(m) == 2 { // Arn and Id only
					props[key] = "present"
				}
			}
		}
		if typ == "AWS::CloudWatch::Alarm" && props["Statistic"] == "" && props["ExtendedStatistic"] == "" && props["Metrics"] == "" {
			props["Statistic"] = "(none)"
		}
		for k, v := range props {
			f.set(entity, k, v)
		}
	}

	t.extractIAM(f, handled, &problems)
	t.extractInvokePermissions(f, handled)
	t.extractESM(f, handled)
	t.extractHTTPAPI(f, handled)
	t.extractBucketPolicies(f, handled)
	t.extractDashboards(f, handled)

	for _, id := range sortedKeys(t.res) {
		if handled[id] || t.typeOf(id) == "AWS::CDK::Metadata" {
			continue
		}
		problems = append(problems, fmt.Sprintf("%s: resource %s (%s) is not covered by the parity test: compare it in facts_test.go",
			t.side, t.ident[id], t.typeOf(id)))
	}
	return f, problems
}

// samTags are the tags SAM puts on what it generates.
var samTags = map[string]bool{"lambda:createdBy": true, "httpapi:createdBy": true}

// tags reads Tags in either spelling (a list of Key/Value, or a map), without SAM's own.
func tags(v any) map[string]any {
	out := map[string]any{}
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				if k, ok := m["Key"].(string); ok {
					out[k] = m["Value"]
				}
			}
		}
	case map[string]any:
		for k, v := range x {
			out[k] = v
		}
	}
	for k := range samTags {
		delete(out, k)
	}
	return out
}

// returnedMetricID renames the Id of a metric math alarm's returned expression to "(returned)": no
// other query refers to it, and CDK names it itself (expr_1).
func returnedMetricID(v any) any {
	list, ok := v.([]any)
	if !ok {
		return v
	}
	out := make([]any, len(list))
	for i, e := range list {
		m, ok := e.(map[string]any)
		if ok && m["ReturnData"] == true {
			c := map[string]any{}
			for k, v := range m {
				c[k] = v
			}
			c["Id"] = "(returned)"
			e = c
		}
		out[i] = e
	}
	return out
}

func canonicalJSON(s string) string {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return s
	}
	b, _ := json.Marshal(v) // maps marshal with sorted keys
	return string(b)
}

// ---------------------------------------------------------------------------- IAM

// stmt is one (effect, action, resource) of an identity policy, expanded.
type stmt struct {
	Effect, Action, Resource, Condition string
	Not                                 string // "NotAction"/"NotResource" when the statement uses one
}

// fnIAM is everything one function's role may do.
type fnIAM struct {
	Role       string   // the role's identity
	Managed    []string // managed policy names (after ":policy/")
	Statements []stmt
	AssumedBy  string
}

var managedNameRE = regexp.MustCompile(`:policy/(.+)$`)

func (t *template) expandStatements(doc any) []stmt {
	m, _ := doc.(map[string]any)
	var list []any
	switch s := m["Statement"].(type) {
	case []any:
		list = s
	case map[string]any:
		list = []any{s}
	}
	var out []stmt
	for _, e := range list {
		sm, _ := e.(map[string]any)
		effect := t.render(sm["Effect"])
		cond := ""
		if c, ok := sm["Condition"]; ok {
			cond = t.render(c)
		}
		actions, not := strList(t, sm["Action"]), ""
		if na, ok := sm["NotAction"]; ok {
			actions, not = strList(t, na), "NotAction"
		}
		resources := strList(t, sm["Resource"])
		if nr, ok := sm["NotResource"]; ok {
			resources, not = strList(t, nr), strings.TrimPrefix(not+"+NotResource", "+")
		}
		for _, a := range actions {
			for _, r := range resources {
				out = append(out, stmt{Effect: effect, Action: a, Resource: r, Condition: cond, Not: not})
			}
		}
	}
	return out
}

func strList(t *template, v any) []string {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		out := make([]string, len(x))
		for i, e := range x {
			out[i] = t.render(e)
		}
		return out
	default:
		return []string{t.render(x)}
	}
}

// functionIAM maps each function's identity to its role's permissions; problems lists roles and
// policies that no function uses (they would escape both tests).
func (t *template) functionIAM(handled map[string]bool) (map[string]*fnIAM, []string) {
	var problems []string
	roleOf := map[string]string{} // role logical id -> function identity
	out := map[string]*fnIAM{}
	for _, id := range t.idsOfType("AWS::Lambda::Function") {
		roleID := t.byIdent[t.refTarget(t.props(id)["Role"])]
		if roleID == "" || t.typeOf(roleID) != "AWS::IAM::Role" {
			problems = append(problems, fmt.Sprintf("%s: function %s: its Role is not a role of this template", t.side, t.ident[id]))
			continue
		}
		if other, ok := roleOf[roleID]; ok {
			problems = append(problems, fmt.Sprintf("%s: functions %s and %s share role %s: each function gets its own", t.side, other, t.ident[id], t.ident[roleID]))
		}
		roleOf[roleID] = t.ident[id]
		handled[roleID] = true
		rp := t.props(roleID)
		iam := &fnIAM{Role: t.ident[roleID]}
		for _, a := range strList(t, rp["ManagedPolicyArns"]) {
			if m := managedNameRE.FindStringSubmatch(a); m != nil {
				a = m[1]
			}
			iam.Managed = append(iam.Managed, a)
		}
		sort.Strings(iam.Managed)
		pols, _ := rp["Policies"].([]any)
		for _, p := range pols {
			pm, _ := p.(map[string]any)
			iam.Statements = append(iam.Statements, t.expandStatements(pm["PolicyDocument"])...)
		}
		var principals []string
		for _, s := range t.expandStatementsPrincipals(rp["AssumeRolePolicyDocument"]) {
			principals = append(principals, s)
		}
		sort.Strings(principals)
		iam.AssumedBy = strings.Join(principals, ", ")
		out[t.ident[id]] = iam
	}
	// Policies attached to roles: AWS::IAM::Policy (Roles), AWS::IAM::RolePolicy (RoleName),
	// customer managed policies (Roles).
	for _, typ := range []string{"AWS::IAM::Policy", "AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy"} {
		for _, id := range t.idsOfType(typ) {
			handled[id] = true
			p := t.props(id)
			var roles []any
			if typ == "AWS::IAM::RolePolicy" {
				roles = []any{p["RoleName"]}
			} else {
				roles, _ = p["Roles"].([]any)
			}
			if len(roles) == 0 || p["Users"] != nil || p["Groups"] != nil {
				problems = append(problems, fmt.Sprintf("%s: policy %s is attached to something other than a function's role", t.side, t.ident[id]))
			}
			for _, r := range roles {
				fn, ok := roleOf[t.byIdent[t.refTarget(r)]]
				if !ok {
					problems = append(problems, fmt.Sprintf("%s: policy %s is attached to %s, which is no function's role", t.side, t.ident[id], t.render(r)))
					continue
				}
				doc := p["PolicyDocument"]
				out[fn].Statements = append(out[fn].Statements, t.expandStatements(doc)...)
			}
		}
	}
	for _, id := range t.idsOfType("AWS::IAM::Role") {
		if !handled[id] {
			handled[id] = true
			problems = append(problems, fmt.Sprintf("%s: role %s is no function's role", t.side, t.ident[id]))
		}
	}
	return out, problems
}

func (t *template) expandStatementsPrincipals(doc any) []string {
	m, _ := doc.(map[string]any)
	list, _ := m["Statement"].([]any)
	var out []string
	for _, e := range list {
		sm, _ := e.(map[string]any)
		out = append(out, principal(t, sm["Principal"])+" "+strings.Join(strList(t, sm["Action"]), ","))
	}
	return out
}

// principal spells a policy principal; "*" and {"AWS": "*"} are the same, a one-element list is
// its element.
func principal(t *template, v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return t.render(v)
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		vals := strList(t, m[k])
		sort.Strings(vals)
		if k == "AWS" && len(vals) == 1 && vals[0] == "*" {
			parts = append(parts, "*")
			continue
		}
		parts = append(parts, k+":"+strings.Join(vals, ","))
	}
	return strings.Join(parts, " ")
}

func (t *template) extractIAM(f facts, handled map[string]bool, problems *[]string) {
	iams, p := t.functionIAM(handled)
	*problems = append(*problems, p...)
	for fn, iam := range iams {
		entity := "iam " + fn
		f.set(entity, "ManagedPolicies", "["+strings.Join(iam.Managed, ", ")+"]")
		f.set(entity, "AssumedBy", iam.AssumedBy)
		perAction := map[string][]string{}
		for _, s := range iam.Statements {
			key := s.Effect + " " + s.Action
			if s.Not != "" {
				key = s.Effect + " " + s.Not + " " + s.Action
			}
			r := s.Resource
			if s.Condition != "" {
				r += " if " + s.Condition
			}
			perAction[key] = append(perAction[key], r)
		}
		for k, rs := range perAction {
			f.set(entity, k, "["+strings.Join(uniqSorted(rs), ", ")+"]")
		}
	}
}

func uniqSorted(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------- invoke permissions

// execute-api source ARNs: ...:${Api}/<stage>/<method>/<path>; compared as the API and the path
// (SAM scopes to the method, CDK's HttpLambdaIntegration to the path).
var executeAPIRE = regexp.MustCompile(`^arn:\$\{AWS::Partition\}:execute-api:\$\{AWS::Region\}:\$\{AWS::AccountId\}:\$\{([^}]+)\}/[^/]+/[^/]+(/.*)?$`)

func (t *template) extractInvokePermissions(f facts, handled map[string]bool) {
	per := map[string][]string{}
	for _, id := range t.idsOfType("AWS::Lambda::Permission") {
		handled[id] = true
		p := t.props(id)
		fn := t.refTarget(p["FunctionName"])
		src := "(any source)"
		if sa, ok := p["SourceArn"]; ok {
			src = t.render(sa)
			if m := executeAPIRE.FindStringSubmatch(src); m != nil {
				src = "api " + m[1] + " " + m[2]
			}
		}
		per[fn] = append(per[fn], fmt.Sprintf("%s %s from %s", t.render(p["Action"]), t.render(p["Principal"]), src))
	}
	for fn, list := range per {
		f.set("function "+fn, "InvokePermissions", "["+strings.Join(uniqSorted(list), "; ")+"]")
	}
}

// ---------------------------------------------------------------------------- event source mappings

func (t *template) extractESM(f facts, handled map[string]bool) {
	for _, id := range t.idsOfType("AWS::Lambda::EventSourceMapping") {
		handled[id] = true
		p := t.props(id)
		entity := fmt.Sprintf("event source mapping %s <- %s", t.refTarget(p["FunctionName"]), t.render(p["EventSourceArn"]))
		props := map[string]string{}
		for k, v := range p {
			if k != "FunctionName" && k != "EventSourceArn" {
				t.flatten(k, v, props)
			}
		}
		if _, ok := props["Enabled"]; !ok {
			props["Enabled"] = "true"
		}
		if _, ok := props["FunctionResponseTypes"]; !ok {
			props["FunctionResponseTypes"] = "[]"
		}
		for k, v := range props {
			f.set(entity, k, v)
		}
	}
}

// ---------------------------------------------------------------------------- HTTP API

var lambdaURIRE = regexp.MustCompile(`functions/\$\{([^}.]+)\.Arn\}/invocations`)

func (t *template) extractHTTPAPI(f facts, handled map[string]bool) {
	for _, id := range t.idsOfType("AWS::ApiGatewayV2::Api") {
		handled[id] = true
		api := t.ident[id]
		p := t.props(id)
		entity := "http api " + api
		body, _ := p["Body"].(map[string]any)
		if body != nil { // SAM: an OpenAPI document
			f.set(entity, "ProtocolType", "HTTP")
			info, _ := body["info"].(map[string]any)
			f.set(entity, "Name", t.render(info["title"]))
			t.routesFromOpenAPI(f, api, body)
		} else {
			f.set(entity, "ProtocolType", t.render(p["ProtocolType"]))
			f.set(entity, "Name", t.render(p["Name"]))
		}
		for _, k := range []string{"FailOnWarnings", "DisableExecuteApiEndpoint", "CorsConfiguration"} {
			if v, ok := p[k]; ok {
				t.flatten(k, v, f.ensure(entity))
			}
		}
	}
	for _, id := range t.idsOfType("AWS::ApiGatewayV2::Stage") {
		handled[id] = true
		p := t.props(id)
		f.set("http api "+t.refTarget(p["ApiId"]), "Stage "+t.render(p["StageName"])+".AutoDeploy", t.render(p["AutoDeploy"]))
	}
	for _, id := range t.idsOfType("AWS::ApiGatewayV2::Integration") {
		handled[id] = true
	}
	for _, id := range t.idsOfType("AWS::ApiGatewayV2::Route") {
		handled[id] = true
		p := t.props(id)
		entity := "route " + t.render(p["RouteKey"])
		f.set(entity, "Api", t.refTarget(p["ApiId"]))
		auth := "NONE"
		if a, ok := p["AuthorizationType"]; ok {
			auth = t.render(a)
		}
		f.set(entity, "Authorization", auth)
		target := t.render(p["Target"])
		integ := t.byIdent[strings.TrimSuffix(strings.TrimPrefix(target, "integrations/${"), "}")]
		ip := t.props(integ)
		f.set(entity, "IntegrationType", t.render(ip["IntegrationType"]))
		f.set(entity, "PayloadFormatVersion", t.render(ip["PayloadFormatVersion"]))
		fn := t.refTarget(ip["IntegrationUri"])
		if fn == "" {
			fn = t.render(ip["IntegrationUri"])
		}
		f.set(entity, "Function", fn)
	}
}

func (f facts) ensure(entity string) map[string]string {
	if f[entity] == nil {
		f[entity] = map[string]string{}
	}
	return f[entity]
}

func (t *template) routesFromOpenAPI(f facts, api string, body map[string]any) {
	paths, _ := body["paths"].(map[string]any)
	for path, ops := range paths {
		om, _ := ops.(map[string]any)
		for method, op := range om {
			opm, _ := op.(map[string]any)
			m := strings.ToUpper(method)
			if method == "x-amazon-apigateway-any-method" {
				m = "ANY"
			}
			entity := "route " + m + " " + path
			f.set(entity, "Api", api)
			sec, ok := opm["security"]
			if !ok {
				sec = body["security"]
			}
			auth := "NONE"
			if list, _ := sec.([]any); len(list) > 0 {
				var names []string
				for _, e := range list {
					for name := range e.(map[string]any) {
						names = append(names, name)
					}
				}
				sort.Strings(names)
				auth = strings.Join(names, ",")
			}
			f.set(entity, "Authorization", auth)
			integ, _ := opm["x-amazon-apigateway-integration"].(map[string]any)
			f.set(entity, "IntegrationType", strings.ToUpper(t.render(integ["type"])))
			f.set(entity, "PayloadFormatVersion", t.render(integ["payloadFormatVersion"]))
			uri := t.render(integ["uri"])
			if mm := lambdaURIRE.FindStringSubmatch(uri); mm != nil {
				uri = mm[1]
			}
			f.set(entity, "Function", uri)
		}
	}
}

// ---------------------------------------------------------------------------- bucket policies

func (t *template) extractBucketPolicies(f facts, handled map[string]bool) {
	for _, id := range t.idsOfType("AWS::S3::BucketPolicy") {
		handled[id] = true
		p := t.props(id)
		entity := "bucket policy " + t.refTarget(p["Bucket"])
		doc, _ := p["PolicyDocument"].(map[string]any)
		list, _ := doc["Statement"].([]any)
		per := map[string][]string{}
		for _, e := range list {
			sm, _ := e.(map[string]any)
			who := principal(t, sm["Principal"])
			for _, s := range t.expandStatements(map[string]any{"Statement": []any{sm}}) {
				key := fmt.Sprintf("%s %s by %s", s.Effect, s.Action, who)
				r := s.Resource
				if s.Condition != "" {
					r += " if " + s.Condition
				}
				per[key] = append(per[key], r)
			}
		}
		for k, rs := range per {
			f.set(entity, k, "["+strings.Join(uniqSorted(rs), ", ")+"]")
		}
	}
}

// ---------------------------------------------------------------------------- dashboards

// Dashboards: presence, name, and the body widget by widget (parsed as JSON, each leaf a property:
// "DashboardBody.widgets[3].properties.period").
func (t *template) extractDashboards(f facts, handled map[string]bool) {
	for _, id := range t.idsOfType("AWS::CloudWatch::Dashboard") {
		handled[id] = true
		entity := "dashboard " + t.ident[id]
		p := t.props(id)
		name := "(generated)"
		if n, ok := p["DashboardName"]; ok {
			name = t.render(n)
		}
		f.set(entity, "DashboardName", name)
		body := t.render(p["DashboardBody"])
		var parsed any
		if err := json.Unmarshal([]byte(body), &parsed); err != nil {
			f.set(entity, "DashboardBody", "(not JSON: "+err.Error()+")")
			continue
		}
		t.flatten("DashboardBody", parsed, f.ensure(entity))
	}
}

// ---------------------------------------------------------------------------- comparison

// compare lists every difference between the reference (template.yaml) and the CDK facts, one line
// each, naming the entity and the property.
func compare(ref, cdk facts) []string {
	var diffs []string
	entities := map[string]bool{}
	for e := range ref {
		entities[e] = true
	}
	for e := range cdk {
		entities[e] = true
	}
	for _, e := range sortedKeys(entities) {
		a, inRef := ref[e]
		b, inCDK := cdk[e]
		switch {
		case !inCDK:
			diffs = append(diffs, fmt.Sprintf("%s: in template.yaml, missing in cdk", e))
			continue
		case !inRef:
			diffs = append(diffs, fmt.Sprintf("%s: in cdk, missing in template.yaml", e))
			continue
		}
		props := map[string]bool{}
		for k := range a {
			props[k] = true
		}
		for k := range b {
			props[k] = true
		}
		for _, k := range sortedKeys(props) {
			va, okA := a[k]
			vb, okB := b[k]
			if okA && okB && va == vb {
				continue
			}
			if !okA {
				va = "(absent)"
			}
			if !okB {
				vb = "(absent)"
			}
			diffs = append(diffs, fmt.Sprintf("%s: %s: template.yaml %s, cdk %s", e, k, va, vb))
		}
	}
	return diffs
}
