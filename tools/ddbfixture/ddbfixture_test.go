package ddbfixture

import (
	"encoding/json"
	"testing"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/google/go-cmp/cmp"
)

// Every attribute type survives Encode, a JSON file and Decode, and reads back as it was written.
func TestRoundTrip(t *testing.T) {
	type inner struct {
		Flag bool              `dynamodbav:"flag"`
		Tags map[string]string `dynamodbav:"tags"`
	}
	type item struct {
		PK     string   `dynamodbav:"pk"`
		N      int64    `dynamodbav:"n"`
		F      float64  `dynamodbav:"f"`
		Blob   []byte   `dynamodbav:"blob"`
		List   []any    `dynamodbav:"list"`
		Set    []string `dynamodbav:"set,stringset"`
		Nums   []int    `dynamodbav:"nums,numberset"`
		Nested inner    `dynamodbav:"nested"`
		Null   *string  `dynamodbav:"null,nullempty"`
	}
	want := item{PK: "CONTACT#c1", N: 42, F: 1.5, Blob: []byte{0, 1, 2, 255}, List: []any{"a", 2.0, true},
		Set: []string{"x", "y"}, Nums: []int{3, 4}, Nested: inner{Flag: true, Tags: map[string]string{"k": "v"}}}
	av, err := attributevalue.MarshalMap(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(Encode(av))
	if err != nil {
		t.Fatal(err)
	}
	var back Item
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	decoded, err := Decode(back)
	if err != nil {
		t.Fatal(err)
	}
	var got item
	if err := attributevalue.UnmarshalMap(decoded, &got); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
	if _, err := Decode(Item{"pk": map[string]any{"X": "?"}}); err == nil {
		t.Error("an unknown type tag decoded without an error")
	}
}
