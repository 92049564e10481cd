package ddbexpr

import (
	"bytes"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// action is one clause of an update expression.
type action struct {
	kind string // SET, ADD, REMOVE, DELETE
	path operand
	val  valueExpr
}

// valueExpr is the right-hand side of a SET action (or the operand of ADD/DELETE).
type valueExpr struct {
	fn   string // "", if_not_exists, list_append
	op   string // "", "+", "-"
	args []operand
}

func (v valueExpr) resolve(item Item, env Env) (types.AttributeValue, error) {
	get := func(o operand) (types.AttributeValue, bool, error) { return o.resolve(item, env) }
	switch v.fn {
	case "if_not_exists":
		cur, ok, err := get(v.args[0])
		if err != nil || ok {
			return cur, err
		}
		def, _, err := get(v.args[1])
		return def, err
	case "list_append":
		a, _, err := get(v.args[0])
		if err != nil {
			return nil, err
		}
		b, _, err := get(v.args[1])
		if err != nil {
			return nil, err
		}
		la, ok1 := a.(*types.AttributeValueMemberL)
		lb, ok2 := b.(*types.AttributeValueMemberL)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("list_append needs two lists")
		}
		return &types.AttributeValueMemberL{Value: append(slices.Clone(la.Value), lb.Value...)}, nil
	}
	a, ok, err := get(v.args[0])
	if err != nil {
		return nil, err
	}
	if v.op == "" {
		if !ok {
			return nil, fmt.Errorf("operand %v is absent", v.args[0])
		}
		return a, nil
	}
	b, _, err := get(v.args[1])
	if err != nil {
		return nil, err
	}
	x, err := num(a)
	if err != nil {
		return nil, err
	}
	y, err := num(b)
	if err != nil {
		return nil, err
	}
	if v.op == "+" {
		x.Add(x, y)
	} else {
		x.Sub(x, y)
	}
	return &types.AttributeValueMemberN{Value: x.Text('g', -1)}, nil
}

func num(v types.AttributeValue) (*big.Float, error) {
	n, ok := v.(*types.AttributeValueMemberN)
	if !ok {
		return nil, fmt.Errorf("want a number")
	}
	f, _, err := big.ParseFloat(n.Value, 10, 200, big.ToNearestEven)
	return f, err
}

var updateCache sync.Map // expression -> []action

func parseUpdate(expr string) ([]action, error) {
	if a, ok := updateCache.Load(expr); ok {
		return a.([]action), nil
	}
	toks, err := lex(expr)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	var out []action
	kind := ""
	for p.peek().kind != tEOF {
		t := p.peek()
		if t.kind == tIdent {
			if k := strings.ToUpper(t.text); k == "SET" || k == "ADD" || k == "REMOVE" || k == "DELETE" {
				p.pos++
				kind = k
				continue
			}
		}
		if kind == "" {
			return nil, fmt.Errorf("%q: want SET, ADD, REMOVE or DELETE", expr)
		}
		path, err := p.operand()
		if err != nil {
			return nil, fmt.Errorf("%q: %w", expr, err)
		}
		a := action{kind: kind, path: path}
		switch kind {
		case "SET":
			if err := p.expect(tCmp, "="); err != nil {
				return nil, fmt.Errorf("%q: %w", expr, err)
			}
			if a.val, err = p.setValue(); err != nil {
				return nil, fmt.Errorf("%q: %w", expr, err)
			}
		case "ADD", "DELETE":
			o, err := p.operand()
			if err != nil {
				return nil, fmt.Errorf("%q: %w", expr, err)
			}
			a.val = valueExpr{args: []operand{o}}
		}
		out = append(out, a)
		if p.peek().kind == tComma {
			p.pos++
		}
	}
	updateCache.Store(expr, out)
	return out, nil
}

func (p *parser) setValue() (valueExpr, error) {
	t := p.peek()
	if t.kind == tIdent && p.toks[p.pos+1].kind == tLParen {
		fn := strings.ToLower(t.text)
		if fn == "if_not_exists" || fn == "list_append" {
			p.pos += 2
			args, err := p.operandList()
			if err != nil {
				return valueExpr{}, err
			}
			if len(args) != 2 {
				return valueExpr{}, fmt.Errorf("%s takes two operands", fn)
			}
			return valueExpr{fn: fn, args: args}, nil
		}
	}
	a, err := p.operand()
	if err != nil {
		return valueExpr{}, err
	}
	if k := p.peek().kind; k == tPlus || k == tMinus {
		op := p.next().text
		b, err := p.operand()
		if err != nil {
			return valueExpr{}, err
		}
		return valueExpr{op: op, args: []operand{a, b}}, nil
	}
	return valueExpr{args: []operand{a}}, nil
}

// Update applies an update expression to a copy of item (nil for an absent item; key holds the
// key attributes to start a new item from) and returns the new item.
func Update(expr string, item, key Item, env Env) (Item, error) {
	acts, err := parseUpdate(expr)
	if err != nil {
		return nil, err
	}
	out := make(Item, len(item)+len(key))
	for k, v := range key {
		out[k] = v
	}
	for k, v := range item {
		out[k] = v
	}
	for _, a := range acts {
		name, err := a.path.attr(env)
		if err != nil {
			return nil, err
		}
		switch a.kind {
		case "REMOVE":
			delete(out, name)
		case "SET":
			v, err := a.val.resolve(out, env)
			if err != nil {
				return nil, err
			}
			out[name] = v
		case "ADD", "DELETE":
			v, _, err := a.val.args[0].resolve(out, env)
			if err != nil {
				return nil, err
			}
			nv, err := addOrDelete(a.kind, out[name], v)
			if err != nil {
				return nil, err
			}
			if nv == nil {
				delete(out, name)
			} else {
				out[name] = nv
			}
		}
	}
	return out, nil
}

func addOrDelete(kind string, cur, v types.AttributeValue) (types.AttributeValue, error) {
	if n, ok := v.(*types.AttributeValueMemberN); ok && kind == "ADD" {
		if cur == nil {
			return n, nil
		}
		x, err := num(cur)
		if err != nil {
			return nil, err
		}
		y, err := num(n)
		if err != nil {
			return nil, err
		}
		return &types.AttributeValueMemberN{Value: x.Add(x, y).Text('g', -1)}, nil
	}
	set := func(cur []string, vs []string) []string {
		out := slices.Clone(cur)
		for _, s := range vs {
			i := slices.Index(out, s)
			switch {
			case kind == "ADD" && i < 0:
				out = append(out, s)
			case kind == "DELETE" && i >= 0:
				out = slices.Delete(out, i, i+1)
			}
		}
		return out
	}
	switch x := v.(type) {
	case *types.AttributeValueMemberSS:
		var c []string
		if s, ok := cur.(*types.AttributeValueMemberSS); ok {
			c = s.Value
		}
		r := set(c, x.Value)
		if len(r) == 0 {
			return nil, nil
		}
		return &types.AttributeValueMemberSS{Value: r}, nil
	case *types.AttributeValueMemberNS:
		var c []string
		if s, ok := cur.(*types.AttributeValueMemberNS); ok {
			c = s.Value
		}
		r := set(c, x.Value)
		if len(r) == 0 {
			return nil, nil
		}
		return &types.AttributeValueMemberNS{Value: r}, nil
	}
	return nil, fmt.Errorf("%s needs a number or a set", kind)
}

// ---------------------------------------------------------------------------- values

// Equal reports whether two attribute values are equal (numbers by value, sets ignoring order).
func Equal(a, b types.AttributeValue) bool {
	switch x := a.(type) {
	case *types.AttributeValueMemberS:
		y, ok := b.(*types.AttributeValueMemberS)
		return ok && x.Value == y.Value
	case *types.AttributeValueMemberN:
		n, ok := Compare(a, b)
		return ok && n == 0
	case *types.AttributeValueMemberB:
		y, ok := b.(*types.AttributeValueMemberB)
		return ok && bytes.Equal(x.Value, y.Value)
	case *types.AttributeValueMemberBOOL:
		y, ok := b.(*types.AttributeValueMemberBOOL)
		return ok && x.Value == y.Value
	case *types.AttributeValueMemberNULL:
		_, ok := b.(*types.AttributeValueMemberNULL)
		return ok
	case *types.AttributeValueMemberSS:
		y, ok := b.(*types.AttributeValueMemberSS)
		return ok && sameSet(x.Value, y.Value)
	case *types.AttributeValueMemberNS:
		y, ok := b.(*types.AttributeValueMemberNS)
		return ok && sameSet(x.Value, y.Value)
	case *types.AttributeValueMemberL:
		y, ok := b.(*types.AttributeValueMemberL)
		if !ok || len(x.Value) != len(y.Value) {
			return false
		}
		for i := range x.Value {
			if !Equal(x.Value[i], y.Value[i]) {
				return false
			}
		}
		return true
	case *types.AttributeValueMemberM:
		y, ok := b.(*types.AttributeValueMemberM)
		if !ok || len(x.Value) != len(y.Value) {
			return false
		}
		for k, v := range x.Value {
			w, ok := y.Value[k]
			if !ok || !Equal(v, w) {
				return false
			}
		}
		return true
	}
	return false
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// Compare orders two scalar values of the same type (S, N or B); ok is false otherwise.
func Compare(a, b types.AttributeValue) (int, bool) {
	switch x := a.(type) {
	case *types.AttributeValueMemberS:
		y, ok := b.(*types.AttributeValueMemberS)
		if !ok {
			return 0, false
		}
		return strings.Compare(x.Value, y.Value), true
	case *types.AttributeValueMemberN:
		fx, err1 := num(x)
		fy, err2 := num(b)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return fx.Cmp(fy), true
	case *types.AttributeValueMemberB:
		y, ok := b.(*types.AttributeValueMemberB)
		if !ok {
			return 0, false
		}
		return bytes.Compare(x.Value, y.Value), true
	}
	return 0, false
}

func sizeOf(v types.AttributeValue) (int, error) {
	switch x := v.(type) {
	case *types.AttributeValueMemberS:
		return len(x.Value), nil
	case *types.AttributeValueMemberB:
		return len(x.Value), nil
	case *types.AttributeValueMemberSS:
		return len(x.Value), nil
	case *types.AttributeValueMemberNS:
		return len(x.Value), nil
	case *types.AttributeValueMemberBS:
		return len(x.Value), nil
	case *types.AttributeValueMemberL:
		return len(x.Value), nil
	case *types.AttributeValueMemberM:
		return len(x.Value), nil
	}
	return 0, fmt.Errorf("size() of an unsupported type")
}

// KeyString renders an item's key attributes (hash, then range when set) as one string.
func KeyString(item Item, hash, rng string) string {
	s := scalar(item[hash])
	if rng != "" {
		s += "\x00" + scalar(item[rng])
	}
	return s
}

func scalar(v types.AttributeValue) string {
	switch x := v.(type) {
	case *types.AttributeValueMemberS:
		return "S" + x.Value
	case *types.AttributeValueMemberN:
		return "N" + x.Value
	case *types.AttributeValueMemberB:
		return "B" + string(x.Value)
	}
	return "?"
}
