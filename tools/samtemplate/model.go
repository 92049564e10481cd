package samtemplate

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Function is a serverless function as the local stack runs it.
type Function struct {
	LogicalID           string
	Runtime             string
	Architectures       []string
	Handler             string
	MemorySize          int
	Timeout             int
	ReservedConcurrency int
	Env                 map[string]string
	Routes              []Route
	SQS                 []SQSSource
	Schedules           []Schedule
}

// Route is an HTTP API route served by a function.
type Route struct {
	Method     string
	Path       string
	Authorizer string // "" or AWS_IAM
}

// SQSSource is an SQS event source mapping.
type SQSSource struct {
	Name                  string
	Queue                 string // queue ARN (token until resolved)
	BatchSize             int
	ReportBatchItemFailed bool
	MaxBatchingWindowSecs int
}

// Schedule is an EventBridge schedule that invokes a function.
type Schedule struct {
	Name       string
	Expression string
	Input      string
	Enabled    bool
}

// Functions returns every function, sorted by logical id.
func (t *Template) Functions() ([]Function, error) {
	var out []Function
	for _, id := range t.OfType(TypeFunction) {
		f, err := t.Function(id)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// Function returns one function's model.
func (t *Template) Function(id string) (Function, error) {
	r, ok := t.Resources[id]
	if !ok || r.Type != TypeFunction {
		return Function{}, fmt.Errorf("%s: no such function", id)
	}
	p := r.Properties
	f := Function{
		LogicalID:           id,
		Runtime:             str(p["Runtime"]),
		Handler:             str(p["Handler"]),
		MemorySize:          num(p["MemorySize"], 128),
		Timeout:             num(p["Timeout"], 3),
		ReservedConcurrency: num(p["ReservedConcurrentExecutions"], 0),
		Env:                 map[string]string{},
	}
	for _, a := range list(p["Architectures"]) {
		f.Architectures = append(f.Architectures, str(a))
	}
	if env, ok := p["Environment"].(map[string]any); ok {
		if vars, ok := env["Variables"].(map[string]any); ok {
			for k, v := range vars {
				f.Env[k] = str(v)
			}
		}
	}
	events, _ := p["Events"].(map[string]any)
	names := make([]string, 0, len(events))
	for n := range events {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		ev, _ := events[name].(map[string]any)
		ep, _ := ev["Properties"].(map[string]any)
		switch str(ev["Type"]) {
		case "HttpApi":
			rt := Route{Method: strings.ToUpper(str(ep["Method"])), Path: str(ep["Path"])}
			if auth, ok := ep["Auth"].(map[string]any); ok {
				rt.Authorizer = str(auth["Authorizer"])
			}
			f.Routes = append(f.Routes, rt)
		case "SQS":
			s := SQSSource{Name: name, Queue: str(ep["Queue"]), BatchSize: num(ep["BatchSize"], 10),
				MaxBatchingWindowSecs: num(ep["MaximumBatchingWindowInSeconds"], 0)}
			for _, rt := range list(ep["FunctionResponseTypes"]) {
				if str(rt) == "ReportBatchItemFailures" {
					s.ReportBatchItemFailed = true
				}
			}
			f.SQS = append(f.SQS, s)
		case "Schedule", "ScheduleV2":
			expr := str(ep["Schedule"])
			if expr == "" {
				expr = str(ep["ScheduleExpression"])
			}
			en := true
			if v, ok := ep["Enabled"].(bool); ok {
				en = v
			}
			if st := str(ep["State"]); st == "DISABLED" {
				en = false
			}
			f.Schedules = append(f.Schedules, Schedule{Name: name, Expression: expr, Input: str(ep["Input"]), Enabled: en})
		}
	}
	return f, nil
}

// Str returns a property as a string ("" when absent).
func Str(v any) string { return str(v) }

// Num returns a property as an int, or def when absent or not a number.
func Num(v any, def int) int { return num(v, def) }

// List returns a property as a list (nil when absent).
func List(v any) []any { return list(v) }

func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	default:
		return fmt.Sprint(x)
	}
}

func num(v any, def int) int {
	switch x := v.(type) {
	case float64:
		return int(x)
	case string:
		if n, err := strconv.Atoi(x); err == nil {
			return n
		}
	}
	return def
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}
