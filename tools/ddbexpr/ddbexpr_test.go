package ddbexpr

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func n(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }

func TestEvalWorkerConditions(t *testing.T) {
	led := Item{"pk": s("k"), "dedup_until": n("1000"), "version": n("3"), "recorded_at": s("t1")}
	cases := []struct {
		expr string
		item Item
		env  Env
		want bool
	}{
		{"attribute_not_exists(pk) OR dedup_until < :now", nil, Env{Values: map[string]types.AttributeValue{":now": n("5")}}, true},
		{"attribute_not_exists(pk) OR dedup_until < :now", led, Env{Values: map[string]types.AttributeValue{":now": n("5")}}, false},
		{"attribute_not_exists(pk) OR dedup_until < :now", led, Env{Values: map[string]types.AttributeValue{":now": n("2000")}}, true},
		{"#v = :v", led, Env{Names: map[string]string{"#v": "version"}, Values: map[string]types.AttributeValue{":v": n("3")}}, true},
		{"#v = :v", led, Env{Names: map[string]string{"#v": "version"}, Values: map[string]types.AttributeValue{":v": n("3.0")}}, true},
		{"recorded_at = :prev", led, Env{Values: map[string]types.AttributeValue{":prev": s("t0")}}, false},
		{"NOT (version BETWEEN :a AND :b)", led, Env{Values: map[string]types.AttributeValue{":a": n("1"), ":b": n("2")}}, true},
		{"pk IN (:a, :b)", led, Env{Values: map[string]types.AttributeValue{":a": s("x"), ":b": s("k")}}, true},
	}
	for _, c := range cases {
		got, err := Eval(c.expr, c.item, c.env)
		if err != nil || got != c.want {
			t.Errorf("Eval(%q) = %v, %v; want %v", c.expr, got, err, c.want)
		}
	}
}

func TestBuilderExpressions(t *testing.T) {
	cond := expression.Contains(expression.Name("identities"), "email:a@x.io").Or(expression.Contains(expression.Name("identities"), "phone:+1"))
	e, err := expression.NewBuilder().
		WithKeyCondition(expression.Key("account_id").Equal(expression.Value("a1")).And(expression.Key("sk").Equal(expression.Value("PROFILE")))).
		WithFilter(cond).Build()
	if err != nil {
		t.Fatal(err)
	}
	env := Env{Names: e.Names(), Values: e.Values()}
	item := Item{"account_id": s("a1"), "sk": s("PROFILE"),
		"identities": &types.AttributeValueMemberL{Value: []types.AttributeValue{s("phone:+1")}}}
	for _, x := range []*string{e.KeyCondition(), e.Filter()} {
		ok, err := Eval(*x, item, env)
		if err != nil || !ok {
			t.Errorf("Eval(%q) = %v, %v", *x, ok, err)
		}
	}
	eq, err := Equalities(*e.KeyCondition(), env)
	if err != nil || len(eq) != 2 || !Equal(eq["account_id"], s("a1")) {
		t.Errorf("Equalities = %v, %v", eq, err)
	}

	upd := expression.Set(expression.Name("flagged"), expression.Value(true)).
		Set(expression.Name("conflicting_payload"), expression.Value("h2")).
		Add(expression.Name("conflicts"), expression.Value(1))
	ue, err := expression.NewBuilder().WithUpdate(upd).WithCondition(expression.AttributeExists(expression.Name("pk"))).Build()
	if err != nil {
		t.Fatal(err)
	}
	uenv := Env{Names: ue.Names(), Values: ue.Values()}
	old := Item{"pk": s("k"), "conflicts": n("1")}
	if ok, err := Eval(*ue.Condition(), old, uenv); err != nil || !ok {
		t.Fatalf("condition: %v %v", ok, err)
	}
	out, err := Update(*ue.Update(), old, nil, uenv)
	if err != nil {
		t.Fatal(err)
	}
	if !Equal(out["conflicts"], n("2")) || !Equal(out["conflicting_payload"], s("h2")) || out["flagged"] == nil {
		t.Errorf("Update = %v", out)
	}
}

func TestItemSize(t *testing.T) {
	// Examples worked by the published rules.
	item := Item{
		"pk":   s("abc"),                                                                          // 2 + 3
		"n":    n("123.4500"),                                                                     // 1 + (5 digits -> 3) + 1
		"ok":   &types.AttributeValueMemberBOOL{},                                                 // 2 + 1
		"l":    &types.AttributeValueMemberL{Value: []types.AttributeValue{s("xy"), n("7")}},      // 1 + 3 + (1+2) + (1+2)
		"m":    &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"k": s("v")}}, // 1 + 3 + (1+1+1)
		"none": &types.AttributeValueMemberNULL{Value: true},                                      // 4 + 1
	}
	want := 5 + 5 + 3 + 10 + 7 + 5
	if got := ItemSize(item); got != want {
		t.Errorf("ItemSize = %d, want %d", got, want)
	}
	for in, want := range map[string]int{"0": 1, "7": 2, "10": 2, "12345": 4, "-0.001": 2, "1e10": 2} {
		if got := NumberSize(in); got != want {
			t.Errorf("NumberSize(%s) = %d, want %d", in, got, want)
		}
	}
}
