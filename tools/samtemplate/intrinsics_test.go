package samtemplate

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// intrinsicsBase is the template the intrinsic tests add a resource R to; R's property V holds the
// expression under test.
const intrinsicsBase = `
Parameters:
  Stage: {Type: String, Default: dev}
  Email: {Type: String, Default: ""}
  Csv: {Type: String, Default: "a,b,c"}
  Count: {Type: Number, Default: 3}
Mappings:
  Sizes:
    dev: {memory: 128, names: [x, y]}
    prod: {memory: 1024}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  HasEmail: !Not [!Equals [!Ref Email, ""]]
  ProdWithEmail: !And [!Condition IsProd, !Condition HasEmail]
  ProdOrEmail: !Or [!Condition IsProd, {Condition: HasEmail}]
  Three: !Equals [!Ref Count, 3]
Resources:
  Queue: {Type: AWS::SQS::Queue}
  R:
    Type: Test
    Properties:
      V: `

// resolveExpr parses intrinsicsBase with expr as R's property V and returns V.
func resolveExpr(t *testing.T, expr string, params map[string]string) (any, error) {
	t.Helper()
	tmpl, err := Parse([]byte(intrinsicsBase+expr+"\n"), Options{Parameters: params})
	if err != nil {
		return nil, err
	}
	return tmpl.Resources["R"].Properties["V"], nil
}

// TestIntrinsics covers each intrinsic function the evaluator resolves.
func TestIntrinsics(t *testing.T) {
	prod := map[string]string{"Stage": "prod"}
	prodEmail := map[string]string{"Stage": "prod", "Email": "ops@example.com"}
	tests := []struct {
		name   string
		expr   string
		params map[string]string
		want   string // JSON
	}{
		{"Ref parameter default", "!Ref Stage", nil, `"dev"`},
		{"Ref parameter override", "!Ref Stage", prod, `"prod"`},
		{"Ref number default", "!Ref Count", nil, `3`},
		{"Ref pseudo parameters", "[!Ref AWS::Region, !Ref AWS::AccountId, !Ref AWS::StackName, !Ref AWS::Partition, !Ref AWS::URLSuffix, !Ref AWS::NoValue]", nil,
			`["us-east-1","000000000000","crmsync-local","aws","amazonaws.com",null]`},
		{"Ref resource", "!Ref Queue", nil, `"{{ref:Queue}}"`},
		{"Ref unknown", "!Ref Nope", nil, `null`},
		{"GetAtt", "!GetAtt Queue.Arn", nil, `"{{att:Queue.Arn}}"`},
		{"GetAtt long form", "{Fn::GetAtt: [Queue, QueueName]}", nil, `"{{att:Queue.QueueName}}"`},
		{"GetAtt unknown resource", "!GetAtt Nope.Arn", nil, `null`},
		{"Sub", `!Sub "${AWS::StackName}-${Stage}-${Queue}-${Queue.Arn}-${!Literal}-${Nope}"`, nil,
			`"crmsync-local-dev-{{ref:Queue}}-{{att:Queue.Arn}}-${Literal}-"`},
		{"Sub with variables", `!Sub ["${A}/${B}/${Stage}", {A: !Ref Stage, B: !Select [1, !Split [",", !Ref Csv]]}]`, nil, `"dev/b/dev"`},
		{"If true", "!If [IsProd, big, small]", prod, `"big"`},
		{"If false", "!If [IsProd, big, small]", nil, `"small"`},
		{"If resolves only the selected branch", "!If [IsProd, !ImportValue other-stack, small]", nil, `"small"`},
		{"If nested value", "!If [HasEmail, [!Ref Email], !Ref AWS::NoValue]", prodEmail, `["ops@example.com"]`},
		{"If with And of conditions", "!If [ProdWithEmail, yes, no]", prodEmail, `"yes"`},
		{"If with And false", "!If [ProdWithEmail, yes, no]", prod, `"no"`},
		{"If with Or", "!If [ProdOrEmail, yes, no]", map[string]string{"Email": "x"}, `"yes"`},
		{"If with Or false", "!If [ProdOrEmail, yes, no]", nil, `"no"`},
		{"Equals compares scalars as strings", "!If [Three, three, other]", nil, `"three"`},
		{"Equals", "!Equals [!Ref Stage, dev]", nil, `true`},
		{"Equals lists", "!Equals [[a, b], !Split [',', 'a,b']]", nil, `true`},
		{"Not", "!Not [!Equals [!Ref Stage, dev]]", nil, `false`},
		{"And inline", "!And [!Equals [a, a], !Equals [b, b], !Condition IsProd]", prod, `true`},
		{"Or inline", "!Or [!Equals [a, b], !Equals [b, c]]", nil, `false`},
		{"Join", `!Join [":", [a, !Ref Stage, !Ref Count, !GetAtt Queue.Arn]]`, nil, `"a:dev:3:{{att:Queue.Arn}}"`},
		{"Join a resolved list", `!Join ["-", !Split [",", "x,y"]]`, nil, `"x-y"`},
		{"Join empty", `!Join ["-", []]`, nil, `""`},
		{"Select", "!Select [1, [a, b, c]]", nil, `"b"`},
		{"Select string index", `!Select ["2", [a, b, c]]`, nil, `"c"`},
		{"Select of a comma-delimited parameter", "!Select [0, !Split [',', !Ref Csv]]", nil, `"a"`},
		{"Split", `!Split ["/", "a/b//c"]`, nil, `["a","b","","c"]`},
		{"FindInMap", "!FindInMap [Sizes, !Ref Stage, memory]", nil, `128`},
		{"FindInMap override", "!FindInMap [Sizes, !Ref Stage, memory]", prod, `1024`},
		{"FindInMap list", "!FindInMap [Sizes, dev, names]", nil, `["x","y"]`},
		{"Base64", "!Base64 hello", nil, `"aGVsbG8="`},
		{"Base64 of Sub", `!Base64 {Fn::Sub: "${Stage}"}`, nil, `"ZGV2"`},
		{"GetAZs", `!GetAZs ""`, nil, `["us-east-1a","us-east-1b","us-east-1c"]`},
		{"GetAZs region", "!GetAZs eu-west-1", nil, `["eu-west-1a","eu-west-1b","eu-west-1c"]`},
		{"Condition key is data", "{Condition: {StringEquals: {k: !Ref Stage}}}", nil, `{"Condition":{"StringEquals":{"k":"dev"}}}`},
		{"plain data", "{a: [1, true, null, {b: x}]}", nil, `{"a":[1,true,null,{"b":"x"}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveExpr(t, tc.expr, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			var want any
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				gotJSON, _ := json.Marshal(got)
				t.Errorf("got  %s\nwant %s", gotJSON, tc.want)
			}
		})
	}
}

// TestConditionsSection checks that the processed template holds each condition's value.
func TestConditionsSection(t *testing.T) {
	tmpl, err := Parse([]byte(intrinsicsBase+"x\n"), Options{Parameters: map[string]string{"Stage": "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"IsProd": true, "HasEmail": false, "ProdWithEmail": false, "ProdOrEmail": true, "Three": true}
	if got := tmpl.Raw["Conditions"]; !reflect.DeepEqual(got, want) {
		t.Errorf("Conditions = %v, want %v", got, want)
	}
}

// TestIntrinsicErrors covers unsupported functions and malformed arguments; errors name the
// function and where it is.
func TestIntrinsicErrors(t *testing.T) {
	const at = "Resources.R.Properties.V."
	tests := []struct{ name, expr, want string }{
		{"unsupported function", "!ImportValue other-stack", at + "Fn::ImportValue: unsupported intrinsic function Fn::ImportValue"},
		{"unsupported Cidr", "!Cidr [10.0.0.0/16, 4, 8]", at + "Fn::Cidr: unsupported intrinsic function Fn::Cidr"},
		{"unknown tag", "!Length [a]", at + "Fn::Length: unsupported intrinsic function Fn::Length"},
		{"nested unsupported", "[a, {b: !Transform {Name: M}}]", "Resources.R.Properties.V[1].b.Fn::Transform: unsupported intrinsic function"},
		{"function key beside others", "{Ref: Stage, Other: x}", "Resources.R.Properties.V: Ref must be the only key of its mapping, found Other, Ref"},
		{"If unknown condition", "!If [Nope, a, b]", at + "Fn::If[0]: unknown condition \"Nope\""},
		{"If wrong arity", "!If [IsProd, a]", at + "Fn::If: want [condition, value if true, value if false], got a list of 2"},
		{"If condition not a name", "!If [[IsProd], a, b]", at + "Fn::If: want a condition name first, got a list of 1"},
		{"Equals arity", "!Equals [a]", at + "Fn::Equals: want [value, value], got a list of 1"},
		{"Not arity", "!Not [!Condition IsProd, !Condition IsProd]", at + "Fn::Not: want a list of 1 condition, got a list of 2"},
		{"Not of a string", "!Not [yes]", at + "Fn::Not[0]: a condition must be true or false, got \"yes\""},
		{"And arity", "!And [!Condition IsProd]", at + "Fn::And: want a list of 2 to 10 conditions, got a list of 1"},
		{"Or unknown condition", "!Or [!Condition IsProd, !Condition Nope]", at + "Fn::Or[1].Condition: unknown condition \"Nope\""},
		{"Condition not a name", "!Or [!Condition IsProd, {Condition: [x]}]", at + "Fn::Or[1].Condition: want a condition name, got a list of 1"},
		{"Join not a list", `!Join [",", abc]`, at + "Fn::Join: want a list of values to join, got \"abc\""},
		{"Join bad delimiter", `!Join [[","], [a]]`, at + "Fn::Join: want a string delimiter, got a list of 1"},
		{"Join of a mapping", `!Join [",", [a, {b: c}]]`, at + "Fn::Join: value 1: want a string, got a mapping with keys b"},
		{"Join of null", `!Join [",", [a, !Ref AWS::NoValue]]`, at + "Fn::Join: value 1: want a string, got null"},
		{"Select out of range", "!Select [3, [a, b]]", at + "Fn::Select: index 3 out of range (2 values)"},
		{"Select negative", "!Select [-1, [a, b]]", at + "Fn::Select: index -1 out of range (2 values)"},
		{"Select bad index", "!Select [x, [a]]", at + "Fn::Select: index \"x\" is not an integer"},
		{"Select fractional index", "!Select [0.5, [a]]", at + "Fn::Select: index 0.5 is not an integer"},
		{"Select from a string", "!Select [0, abc]", at + "Fn::Select: want a list to select from, got \"abc\""},
		{"Split arity", "!Split [',']", at + "Fn::Split: want [delimiter, string], got a list of 1"},
		{"Split empty delimiter", "!Split ['', abc]", at + "Fn::Split: want a non-empty string delimiter and a string"},
		{"FindInMap missing map", "!FindInMap [Nope, dev, memory]", at + "Fn::FindInMap: no Mappings.Nope"},
		{"FindInMap missing key", "!FindInMap [Sizes, staging, memory]", at + "Fn::FindInMap: no Mappings.Sizes.staging"},
		{"FindInMap missing second key", "!FindInMap [Sizes, prod, names]", at + "Fn::FindInMap: no Mappings.Sizes.prod.names"},
		{"FindInMap arity", "!FindInMap [Sizes, dev]", at + "Fn::FindInMap: want [map, top-level key, second-level key], got a list of 2"},
		{"Base64 of a list", "!Base64 [a]", at + "Fn::Base64: want a string, got a list of 1"},
		{"GetAZs of a list", "!GetAZs [a]", at + "Fn::GetAZs: want a region, got a list of 1"},
		{"error inside an argument", "!Join [',', [!Select [9, [a]]]]", at + "Fn::Join[1][0].Fn::Select: index 9 out of range (1 values)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveExpr(t, tc.expr, nil)
			if err == nil {
				t.Fatalf("no error, got %v", got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

// TestConditionErrors covers conditions that cannot be evaluated.
func TestConditionErrors(t *testing.T) {
	tests := []struct{ name, conditions, want string }{
		{"cycle", "A: !Not [!Condition B]\n  B: !Not [!Condition A]", `condition "A" depends on itself`},
		{"not a boolean", "A: !Ref Stage", `Conditions.A: a condition must be true or false, got "dev"`},
		{"unknown condition", "A: !And [!Condition B, !Condition C]\n  B: !Equals [a, a]", `Conditions.A.Fn::And[1].Condition: unknown condition "C"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := "Parameters:\n  Stage: {Type: String, Default: dev}\nConditions:\n  " + tc.conditions + "\nResources: {}\n"
			_, err := Parse([]byte(doc), Options{})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

// TestParseErrors covers documents that are not templates.
func TestParseErrors(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"empty", "", "empty template"},
		{"not a mapping", "[a, b]", "template is a list of 2, not a mapping"},
		{"invalid YAML", "a: [", "invalid YAML template"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
