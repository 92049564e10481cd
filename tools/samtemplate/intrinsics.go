package samtemplate

import (
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// evaluator resolves the intrinsic functions of a decoded template (see decodeYAML):
//
//   - Ref, Fn::GetAtt and Fn::Sub through the intrinsicResolver (pseudo parameters and
//     parameters to values, resources to tokens, anything else to nil);
//   - Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Or (and {"Condition": name} inside the
//     condition functions) against the Conditions section, evaluated with the parameter values;
//   - Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap (Mappings section), Fn::Base64 and
//     Fn::GetAZs (the stack region's a, b and c zones).
//
// Every other Fn:: function (Fn::ImportValue, Fn::Cidr, Fn::Transform, Fn::Length, …) is an
// error naming the function and where it is, as are malformed arguments; a local stack cannot
// give them a meaningful value. A mapping is a function call when its only key is Ref or starts
// with Fn::; such a key beside others is an error. A "Condition" key elsewhere (a resource's
// condition, an IAM policy's Condition block) is ordinary data.
//
// Arguments are resolved before the function is applied, except Fn::If, which resolves only the
// branch its condition selects. Paths in errors are dotted keys with [i] for list items, e.g.
// Resources.Fn.Properties.Policies[0].
//
// Where this differs from goformation's default handlers, which it replaces, it follows
// CloudFormation: Fn::If uses the evaluated condition (goformation resolved every Fn::If to null),
// Fn::Join joins numbers and Fn::Select and Fn::Join accept the list Fn::Split returns
// (goformation dropped both), and malformed arguments are errors rather than null. As before, a
// value resolving to AWS::NoValue stays as a null value rather than removing its key.
type evaluator struct {
	resolver   *intrinsicResolver
	region     string
	doc        map[string]any // the decoded template
	mappings   map[string]any
	conditions map[string]any  // condition name → its unevaluated expression
	values     map[string]bool // condition name → its value, once evaluated
	evaluating map[string]bool // conditions being evaluated, to detect cycles
}

// newEvaluator resolves the intrinsics of doc (the decoded template) with resolver.
func newEvaluator(resolver *intrinsicResolver, region string, doc map[string]any) *evaluator {
	e := &evaluator{resolver: resolver, region: region, doc: doc, mappings: map[string]any{}, conditions: map[string]any{},
		values: map[string]bool{}, evaluating: map[string]bool{}}
	if m, ok := doc["Mappings"].(map[string]any); ok {
		e.mappings = m
	}
	if c, ok := doc["Conditions"].(map[string]any); ok {
		e.conditions = c
	}
	return e
}

// document resolves the whole template: the Conditions section becomes each condition's value,
// every other section is resolved as data.
func (e *evaluator) document() (map[string]any, error) {
	doc := e.doc
	out := map[string]any{}
	for _, key := range sortedKeys(doc) {
		if key == "Conditions" {
			if _, ok := doc[key].(map[string]any); ok {
				values := map[string]any{}
				for _, name := range sortedKeys(e.conditions) {
					v, err := e.namedCondition(name, "Conditions")
					if err != nil {
						return nil, err
					}
					values[name] = v
				}
				out[key] = values
				continue
			}
		}
		v, err := e.resolve(doc[key], key)
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
	return out, nil
}

// resolve returns v (found at path) with its intrinsic functions applied, as a fresh value.
func (e *evaluator) resolve(v any, path string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if name, args, ok, err := functionCall(x, path); err != nil {
			return nil, err
		} else if ok {
			return e.call(name, args, path)
		}
		out := make(map[string]any, len(x))
		for _, k := range sortedKeys(x) {
			r, err := e.resolve(x[k], path+"."+k)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, 0, len(x))
		for i, item := range x {
			r, err := e.resolve(item, index(path, i))
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	default:
		return v, nil
	}
}

// functionCall reports whether m is an intrinsic function call ({"Ref": …} or {"Fn::Name": …})
// and which; a function key beside other keys is an error.
func functionCall(m map[string]any, path string) (name string, args any, ok bool, err error) {
	for k, v := range m {
		if k != "Ref" && !strings.HasPrefix(k, "Fn::") {
			continue
		}
		if len(m) != 1 {
			return "", nil, false, errorf(path, "%s must be the only key of its mapping, found %s", k, strings.Join(sortedKeys(m), ", "))
		}
		return k, v, true, nil
	}
	return "", nil, false, nil
}

// call applies the function name to its (unresolved) args, the function being at path.
func (e *evaluator) call(name string, args any, path string) (any, error) {
	path = path + "." + name
	if name == "Fn::If" {
		return e.fnIf(args, path)
	}
	h, ok := handler(name)
	if !ok {
		return nil, errorf(path, "unsupported intrinsic function %s", name)
	}
	resolved, err := e.resolve(args, path)
	if err != nil {
		return nil, err
	}
	v, err := h(e, resolved, path)
	if err != nil {
		var located *pathError
		if errors.As(err, &located) {
			return nil, err
		}
		return nil, &pathError{path: path, err: err}
	}
	return v, nil
}

// pathError is an error at a place in the template.
type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string { return e.path + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

// errorf is an error at path.
func errorf(path, format string, args ...any) error {
	return &pathError{path: path, err: fmt.Errorf(format, args...)}
}

// handler is the handler of the intrinsic function name, whose arguments are resolved first
// (Fn::If is handled by fnIf); false when the function is not supported.
func handler(name string) (func(e *evaluator, args any, path string) (any, error), bool) {
	switch name {
	case "Ref":
		return func(e *evaluator, args any, _ string) (any, error) {
			s, _ := args.(string)
			return e.resolver.ref(s), nil
		}, true
	case "Fn::GetAtt":
		return func(e *evaluator, args any, _ string) (any, error) { return e.resolver.getAtt(args), nil }, true
	case "Fn::Sub":
		return func(e *evaluator, args any, _ string) (any, error) { return e.resolver.sub(args), nil }, true
	case "Fn::Equals":
		return (*evaluator).fnEquals, true
	case "Fn::Not":
		return (*evaluator).fnNot, true
	case "Fn::And":
		return (*evaluator).fnAnd, true
	case "Fn::Or":
		return (*evaluator).fnOr, true
	case "Fn::Join":
		return (*evaluator).fnJoin, true
	case "Fn::Select":
		return (*evaluator).fnSelect, true
	case "Fn::Split":
		return (*evaluator).fnSplit, true
	case "Fn::FindInMap":
		return (*evaluator).fnFindInMap, true
	case "Fn::Base64":
		return (*evaluator).fnBase64, true
	case "Fn::GetAZs":
		return (*evaluator).fnGetAZs, true
	}
	return nil, false
}

// namedCondition evaluates the condition name of the Conditions section (once), referred to at
// path.
func (e *evaluator) namedCondition(name, path string) (bool, error) {
	if v, ok := e.values[name]; ok {
		return v, nil
	}
	expr, ok := e.conditions[name]
	if !ok {
		return false, errorf(path, "unknown condition %q", name)
	}
	if e.evaluating[name] {
		return false, errorf(path, "condition %q depends on itself", name)
	}
	e.evaluating[name] = true
	defer delete(e.evaluating, name)
	v, err := e.condition(expr, "Conditions."+name)
	if err != nil {
		return false, err
	}
	e.values[name] = v
	return v, nil
}

// condition evaluates a condition expression: {"Condition": name} or a function resolving to a
// boolean.
func (e *evaluator) condition(expr any, path string) (bool, error) {
	if m, ok := expr.(map[string]any); ok && len(m) == 1 {
		if c, ok := m["Condition"]; ok {
			name, ok := c.(string)
			if !ok {
				return false, errorf(path+".Condition", "want a condition name, got %s", describe(c))
			}
			return e.namedCondition(name, path+".Condition")
		}
	}
	v, err := e.resolve(expr, path)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, errorf(path, "a condition must be true or false, got %s", describe(v))
	}
	return b, nil
}

// conditionList evaluates the condition expressions of Fn::Not, Fn::And or Fn::Or, whose
// arguments are resolved already: nested functions are booleans by now, {"Condition": name}
// elements are still to be looked up.
func (e *evaluator) conditionList(args any, path string, min, max int) ([]bool, error) {
	list, ok := args.([]any)
	if !ok || len(list) < min || len(list) > max {
		if min == max {
			return nil, fmt.Errorf("want a list of %d condition, got %s", min, describe(args))
		}
		return nil, fmt.Errorf("want a list of %d to %d conditions, got %s", min, max, describe(args))
	}
	out := make([]bool, len(list))
	for i, c := range list {
		b, err := e.condition(c, index(path, i))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

// fnIf resolves Fn::If [condition name, value if true, value if false]; only the selected value
// is resolved.
func (e *evaluator) fnIf(args any, path string) (any, error) {
	list, ok := args.([]any)
	if !ok || len(list) != 3 {
		return nil, errorf(path, "want [condition, value if true, value if false], got %s", describe(args))
	}
	name, ok := list[0].(string)
	if !ok {
		return nil, errorf(path, "want a condition name first, got %s", describe(list[0]))
	}
	v, err := e.namedCondition(name, index(path, 0))
	if err != nil {
		return nil, err
	}
	if v {
		return e.resolve(list[1], index(path, 1))
	}
	return e.resolve(list[2], index(path, 2))
}

// fnEquals resolves Fn::Equals [a, b]. Scalars compare as strings (CloudFormation compares
// parameter values, which are strings, with literals: 1 equals "1"); other values compare deeply.
func (e *evaluator) fnEquals(args any, _ string) (any, error) {
	list, ok := args.([]any)
	if !ok || len(list) != 2 {
		return nil, fmt.Errorf("want [value, value], got %s", describe(args))
	}
	a, b := list[0], list[1]
	if isScalar(a) && isScalar(b) {
		return str(a) == str(b), nil
	}
	return reflect.DeepEqual(a, b), nil
}

// fnNot resolves Fn::Not [condition].
func (e *evaluator) fnNot(args any, path string) (any, error) {
	c, err := e.conditionList(args, path, 1, 1)
	if err != nil {
		return nil, err
	}
	return !c[0], nil
}

// fnAnd resolves Fn::And [condition, …] (2 to 10 conditions).
func (e *evaluator) fnAnd(args any, path string) (any, error) {
	c, err := e.conditionList(args, path, 2, 10)
	if err != nil {
		return nil, err
	}
	for _, b := range c {
		if !b {
			return false, nil
		}
	}
	return true, nil
}

// fnOr resolves Fn::Or [condition, …] (2 to 10 conditions).
func (e *evaluator) fnOr(args any, path string) (any, error) {
	c, err := e.conditionList(args, path, 2, 10)
	if err != nil {
		return nil, err
	}
	for _, b := range c {
		if b {
			return true, nil
		}
	}
	return false, nil
}

// fnJoin resolves Fn::Join [delimiter, [value, …]]; values are strings or numbers.
func (e *evaluator) fnJoin(args any, _ string) (any, error) {
	list, ok := args.([]any)
	if !ok || len(list) != 2 {
		return nil, fmt.Errorf("want [delimiter, [values]], got %s", describe(args))
	}
	delim, ok := list[0].(string)
	if !ok {
		return nil, fmt.Errorf("want a string delimiter, got %s", describe(list[0]))
	}
	values, ok := list[1].([]any)
	if !ok {
		return nil, fmt.Errorf("want a list of values to join, got %s", describe(list[1]))
	}
	parts := make([]string, len(values))
	for i, v := range values {
		switch v.(type) {
		case string, float64:
			parts[i] = str(v)
		default:
			return nil, fmt.Errorf("value %d: want a string, got %s", i, describe(v))
		}
	}
	return strings.Join(parts, delim), nil
}

// fnSelect resolves Fn::Select [index, [value, …]]; the index is a number or a numeric string.
func (e *evaluator) fnSelect(args any, _ string) (any, error) {
	list, ok := args.([]any)
	if !ok || len(list) != 2 {
		return nil, fmt.Errorf("want [index, [values]], got %s", describe(args))
	}
	var i int
	switch x := list[0].(type) {
	case float64:
		if x != float64(int(x)) {
			return nil, fmt.Errorf("index %v is not an integer", x)
		}
		i = int(x)
	case string:
		n, err := strconv.Atoi(x)
		if err != nil {
			return nil, fmt.Errorf("index %q is not an integer", x)
		}
		i = n
	default:
		return nil, fmt.Errorf("want an index, got %s", describe(list[0]))
	}
	values, ok := list[1].([]any)
	if !ok {
		return nil, fmt.Errorf("want a list to select from, got %s", describe(list[1]))
	}
	if i < 0 || i >= len(values) {
		return nil, fmt.Errorf("index %d out of range (%d values)", i, len(values))
	}
	return values[i], nil
}

// fnSplit resolves Fn::Split [delimiter, string].
func (e *evaluator) fnSplit(args any, _ string) (any, error) {
	list, ok := args.([]any)
	if !ok || len(list) != 2 {
		return nil, fmt.Errorf("want [delimiter, string], got %s", describe(args))
	}
	delim, ok1 := list[0].(string)
	source, ok2 := list[1].(string)
	if !ok1 || !ok2 || delim == "" {
		return nil, fmt.Errorf("want a non-empty string delimiter and a string, got %s", describe(args))
	}
	parts := strings.Split(source, delim)
	out := make([]any, len(parts))
	for i, p := range parts {
		out[i] = p
	}
	return out, nil
}

// fnFindInMap resolves Fn::FindInMap [map, top-level key, second-level key] in the Mappings
// section.
func (e *evaluator) fnFindInMap(args any, path string) (any, error) {
	list, ok := args.([]any)
	if !ok || len(list) != 3 {
		return nil, fmt.Errorf("want [map, top-level key, second-level key], got %s", describe(args))
	}
	keys := make([]string, 3)
	for i, k := range list {
		if !isScalar(k) || k == nil {
			return nil, fmt.Errorf("key %d: want a string, got %s", i, describe(k))
		}
		keys[i] = str(k)
	}
	var v any = e.mappings
	for i, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("Mappings.%s is not a mapping", strings.Join(keys[:i], "."))
		}
		if v, ok = m[k]; !ok {
			return nil, fmt.Errorf("no Mappings.%s", strings.Join(keys[:i+1], "."))
		}
	}
	return e.resolve(v, "Mappings."+strings.Join(keys, "."))
}

// fnBase64 resolves Fn::Base64 string.
func (e *evaluator) fnBase64(args any, _ string) (any, error) {
	s, ok := args.(string)
	if !ok {
		return nil, fmt.Errorf("want a string, got %s", describe(args))
	}
	return base64.StdEncoding.EncodeToString([]byte(s)), nil
}

// fnGetAZs resolves Fn::GetAZs region ("" is the stack's region) to that region's zones a, b
// and c.
func (e *evaluator) fnGetAZs(args any, _ string) (any, error) {
	region, ok := args.(string)
	if !ok {
		return nil, fmt.Errorf("want a region, got %s", describe(args))
	}
	if region == "" {
		region = e.region
	}
	return []any{region + "a", region + "b", region + "c"}, nil
}

// isScalar reports whether v is a JSON scalar (string, number, boolean or null).
func isScalar(v any) bool {
	switch v.(type) {
	case nil, string, float64, bool:
		return true
	}
	return false
}

// describe names a value's kind for an error message, with the value when it is short.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case float64, bool:
		return str(x)
	case []any:
		return fmt.Sprintf("a list of %d", len(x))
	case map[string]any:
		return "a mapping with keys " + strings.Join(sortedKeys(x), ", ")
	}
	return fmt.Sprintf("%T", v)
}

// index is the path of item i of the list at path.
func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// sortedKeys is m's keys in order, so that resolution and its errors are deterministic.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
