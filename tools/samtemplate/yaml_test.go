package samtemplate

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestDecodeYAML covers YAML typing and the short-form intrinsic tags.
func TestDecodeYAML(t *testing.T) {
	tests := []struct {
		name, yaml, want string // want is JSON
	}{
		{"scalar typing", "a: 1\nb: 1.5\nc: true\nd: null\ne: ~\nf: \"1\"\ng: yes\nh: 0x1F\ni: 1e3\nj: -7\nk: ''",
			`{"a":1,"b":1.5,"c":true,"d":null,"e":null,"f":"1","g":"yes","h":31,"i":1000,"j":-7,"k":""}`},
		{"timestamps stay strings", "v: 2010-09-09\nq: '2010-09-09'", `{"v":"2010-09-09","q":"2010-09-09"}`},
		{"standard tags", "a: !!str 12\nb: !!float 3\nc: !!int '4'", `{"a":"12","b":3,"c":4}`},
		{"block scalar", "a: |\n  x ${y}\n  z\n", `{"a":"x ${y}\nz\n"}`},
		{"Ref", "a: !Ref Stage", `{"a":{"Ref":"Stage"}}`},
		{"Ref scalar is a string", "a: !Ref 5", `{"a":{"Ref":"5"}}`},
		{"GetAtt scalar", "a: !GetAtt Queue.Arn", `{"a":{"Fn::GetAtt":["Queue","Arn"]}}`},
		{"GetAtt nested attribute", "a: !GetAtt Db.Endpoint.Address", `{"a":{"Fn::GetAtt":["Db","Endpoint.Address"]}}`},
		{"GetAtt sequence", "a: !GetAtt [Queue, Arn]", `{"a":{"Fn::GetAtt":["Queue","Arn"]}}`},
		{"Condition", "a: !Condition HasEmail", `{"a":{"Condition":"HasEmail"}}`},
		{"Sub string", `a: !Sub "arn:${AWS::Partition}:s3:::${B}"`, `{"a":{"Fn::Sub":"arn:${AWS::Partition}:s3:::${B}"}}`},
		{"Sub with variables", "a: !Sub ['${x}', {x: !Ref Y}]", `{"a":{"Fn::Sub":["${x}",{"x":{"Ref":"Y"}}]}}`},
		{"nested", `a: !Not [!Equals [!Ref AlarmEmail, ""]]`, `{"a":{"Fn::Not":[{"Fn::Equals":[{"Ref":"AlarmEmail"},""]}]}}`},
		{"numbers inside tagged sequences", `a: !Select [0, !GetAZs ""]`, `{"a":{"Fn::Select":[0,{"Fn::GetAZs":""}]}}`},
		{"tagged scalar is a string", "a: !Base64 123", `{"a":{"Fn::Base64":"123"}}`},
		{"tagged mapping", "a: !Transform {Name: M, Parameters: {n: 1}}", `{"a":{"Fn::Transform":{"Name":"M","Parameters":{"n":1}}}}`},
		{"tagged empty sequence", "a: !Join []", `{"a":{"Fn::Join":[]}}`},
		{"any other tag", "a: !ImportValue shared-vpc\nb: !FindInMap [M, k, v]", `{"a":{"Fn::ImportValue":"shared-vpc"},"b":{"Fn::FindInMap":["M","k","v"]}}`},
		{"tag in a sequence", "a: [x, !Ref Y]", `{"a":["x",{"Ref":"Y"}]}`},
		{"aliases", "a: &x {k: !Ref Y}\nb: *x", `{"a":{"k":{"Ref":"Y"}},"b":{"k":{"Ref":"Y"}}}`},
		{"merge keys", "a: &x {k: 1, l: 2}\nb: {<<: *x, k: 3}\nc: {<<: [*x, {m: 4}]}", `{"a":{"k":1,"l":2},"b":{"k":3,"l":2},"c":{"k":1,"l":2,"m":4}}`},
		{"keys are strings", "32: a\ntrue: b", `{"32":"a","true":"b"}`},
		{"empty document", "", `null`},
		{"comment only", "# nothing\n", `null`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeYAML([]byte(tc.yaml))
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

// TestDecodeYAMLErrors covers the documents decodeYAML rejects.
func TestDecodeYAMLErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"invalid YAML", "a: [1, 2", "invalid YAML template"},
		{"duplicate key", "a: 1\nb: 2\na: 3", `line 3: mapping key "a" already defined at line 1`},
		{"GetAtt without attribute", "a: !GetAtt Queue", `line 1: !GetAtt "Queue" is not Resource.Attribute`},
		{"non-scalar key", "? [a, b]\n: c", "line 1: mapping keys must be scalars"},
		{"infinity", "a: .inf", "line 1: number not representable in JSON: .inf"},
		{"bad merge", "a: {<<: 1}", "line 1: a merge (<<) value must be a mapping"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeYAML([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error, got %v", got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}
