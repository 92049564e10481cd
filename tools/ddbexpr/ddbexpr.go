// Package ddbexpr evaluates the subset of DynamoDB expressions crmsync issues — condition,
// key-condition and filter expressions (comparisons, AND/OR/NOT, BETWEEN, IN, attribute_exists,
// attribute_not_exists, contains, begins_with) and update expressions (SET with +, -,
// if_not_exists and list_append; ADD; REMOVE; DELETE) on top-level attributes — over items in the
// SDK's AttributeValue form, and sizes items by DynamoDB's published rules.
//
// It exists for measurement: the cost counter keeps a shadow of written items with it (to know
// an item's size before a write and which indexes it is in), and the worker benchmark's
// in-memory store evaluates the worker's conditions with it. It is not DynamoDB and is never
// used to claim correctness.
package ddbexpr

import (
	"bytes"
	"fmt"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Item is one DynamoDB item.
type Item = map[string]types.AttributeValue

// Env holds an expression's ExpressionAttributeNames and ExpressionAttributeValues.
type Env struct {
	Names  map[string]string
	Values map[string]types.AttributeValue
}

// ---------------------------------------------------------------------------- lexer

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tName  // #name
	tValue // :value
	tLParen
	tRParen
	tComma
	tCmp // = <> < <= > >=
	tPlus
	tMinus
)

type token struct {
	kind tokKind
	text string
}

func lex(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(':
			out = append(out, token{tLParen, "("})
			i++
		case c == ')':
			out = append(out, token{tRParen, ")"})
			i++
		case c == ',':
			out = append(out, token{tComma, ","})
			i++
		case c == '+':
			out = append(out, token{tPlus, "+"})
			i++
		case c == '-':
			out = append(out, token{tMinus, "-"})
			i++
		case c == '=':
			out = append(out, token{tCmp, "="})
			i++
		case c == '<' || c == '>':
			op := string(c)
			if i+1 < len(s) && (s[i+1] == '=' || (c == '<' && s[i+1] == '>')) {
				op += string(s[i+1])
			}
			out = append(out, token{tCmp, op})
			i += len(op)
		case c == '#' || c == ':' || isIdent(c):
			j := i + 1
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			k := tIdent
			if c == '#' {
				k = tName
			} else if c == ':' {
				k = tValue
			}
			out = append(out, token{k, s[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("unexpected %q at %d in %q", c, i, s)
		}
	}
	return append(out, token{tEOF, ""}), nil
}

func isIdent(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// ---------------------------------------------------------------------------- AST

// operand is a path (attribute name) or a value placeholder, or size(path).
type operand struct {
	name  string // attribute name, or "#x" to resolve
	value string // ":x"
	size  *operand
}

func (o operand) resolve(item Item, env Env) (types.AttributeValue, bool, error) {
	switch {
	case o.size != nil:
		v, ok, err := o.size.resolve(item, env)
		if err != nil || !ok {
			return nil, ok, err
		}
		n, err := sizeOf(v)
		if err != nil {
			return nil, false, err
		}
		return &types.AttributeValueMemberN{Value: fmt.Sprint(n)}, true, nil
	case o.value != "":
		v, ok := env.Values[o.value]
		if !ok {
			return nil, false, fmt.Errorf("value %s is not defined", o.value)
		}
		return v, true, nil
	default:
		name, err := o.attr(env)
		if err != nil {
			return nil, false, err
		}
		v, ok := item[name]
		return v, ok, nil
	}
}

func (o operand) attr(env Env) (string, error) {
	if strings.HasPrefix(o.name, "#") {
		n, ok := env.Names[o.name]
		if !ok {
			return "", fmt.Errorf("name %s is not defined", o.name)
		}
		return n, nil
	}
	if o.name == "" {
		return "", fmt.Errorf("want an attribute path")
	}
	return o.name, nil
}

type cond interface {
	eval(item Item, env Env) (bool, error)
}

type andCond struct{ l, r cond }
type orCond struct{ l, r cond }
type notCond struct{ c cond }
type cmpCond struct {
	op   string
	l, r operand
}
type betweenCond struct{ v, lo, hi operand }
type inCond struct {
	v    operand
	list []operand
}
type funcCond struct {
	fn   string
	args []operand
}

func (c andCond) eval(it Item, env Env) (bool, error) {
	l, err := c.l.eval(it, env)
	if err != nil || !l {
		return false, err
	}
	return c.r.eval(it, env)
}

func (c orCond) eval(it Item, env Env) (bool, error) {
	l, err := c.l.eval(it, env)
	if err != nil || l {
		return l, err
	}
	return c.r.eval(it, env)
}

func (c notCond) eval(it Item, env Env) (bool, error) {
	v, err := c.c.eval(it, env)
	return !v, err
}

func (c cmpCond) eval(it Item, env Env) (bool, error) {
	l, lok, err := c.l.resolve(it, env)
	if err != nil {
		return false, err
	}
	r, rok, err := c.r.resolve(it, env)
	if err != nil {
		return false, err
	}
	if !lok || !rok {
		return c.op == "<>" && lok != rok, nil
	}
	switch c.op {
	case "=":
		return Equal(l, r), nil
	case "<>":
		return !Equal(l, r), nil
	}
	n, ok := Compare(l, r)
	if !ok {
		return false, nil
	}
	switch c.op {
	case "<":
		return n < 0, nil
	case "<=":
		return n <= 0, nil
	case ">":
		return n > 0, nil
	case ">=":
		return n >= 0, nil
	}
	return false, fmt.Errorf("unknown comparator %q", c.op)
}

func (c betweenCond) eval(it Item, env Env) (bool, error) {
	v, ok, err := c.v.resolve(it, env)
	if err != nil || !ok {
		return false, err
	}
	lo, _, err := c.lo.resolve(it, env)
	if err != nil {
		return false, err
	}
	hi, _, err := c.hi.resolve(it, env)
	if err != nil {
		return false, err
	}
	a, ok1 := Compare(v, lo)
	b, ok2 := Compare(v, hi)
	return ok1 && ok2 && a >= 0 && b <= 0, nil
}

func (c inCond) eval(it Item, env Env) (bool, error) {
	v, ok, err := c.v.resolve(it, env)
	if err != nil || !ok {
		return false, err
	}
	for _, o := range c.list {
		w, _, err := o.resolve(it, env)
		if err != nil {
			return false, err
		}
		if Equal(v, w) {
			return true, nil
		}
	}
	return false, nil
}

func (c funcCond) eval(it Item, env Env) (bool, error) {
	switch c.fn {
	case "attribute_exists", "attribute_not_exists":
		if len(c.args) != 1 {
			return false, fmt.Errorf("%s takes one path", c.fn)
		}
		_, ok, err := c.args[0].resolve(it, env)
		if err != nil {
			return false, err
		}
		return ok == (c.fn == "attribute_exists"), nil
	case "contains", "begins_with":
		if len(c.args) != 2 {
			return false, fmt.Errorf("%s takes two operands", c.fn)
		}
		hay, ok, err := c.args[0].resolve(it, env)
		if err != nil || !ok {
			return false, err
		}
		needle, _, err := c.args[1].resolve(it, env)
		if err != nil {
			return false, err
		}
		if c.fn == "begins_with" {
			switch h := hay.(type) {
			case *types.AttributeValueMemberS:
				n, ok := needle.(*types.AttributeValueMemberS)
				return ok && strings.HasPrefix(h.Value, n.Value), nil
			case *types.AttributeValueMemberB:
				n, ok := needle.(*types.AttributeValueMemberB)
				return ok && bytes.HasPrefix(h.Value, n.Value), nil
			}
			return false, nil
		}
		return contains(hay, needle), nil
	}
	return false, fmt.Errorf("unsupported function %s", c.fn)
}

func contains(hay, needle types.AttributeValue) bool {
	switch h := hay.(type) {
	case *types.AttributeValueMemberS:
		n, ok := needle.(*types.AttributeValueMemberS)
		return ok && strings.Contains(h.Value, n.Value)
	case *types.AttributeValueMemberB:
		n, ok := needle.(*types.AttributeValueMemberB)
		return ok && bytes.Contains(h.Value, n.Value)
	case *types.AttributeValueMemberSS:
		n, ok := needle.(*types.AttributeValueMemberS)
		if !ok {
			return false
		}
		for _, v := range h.Value {
			if v == n.Value {
				return true
			}
		}
	case *types.AttributeValueMemberNS:
		for _, v := range h.Value {
			if Equal(&types.AttributeValueMemberN{Value: v}, needle) {
				return true
			}
		}
	case *types.AttributeValueMemberL:
		for _, v := range h.Value {
			if Equal(v, needle) {
				return true
			}
		}
	}
	return false
}

// ---------------------------------------------------------------------------- parser

type parser struct {
	toks []token
	pos  int
}

func (p *parser) peek() token { return p.toks[p.pos] }
func (p *parser) next() token { t := p.toks[p.pos]; p.pos++; return t }

func (p *parser) keyword(w string) bool {
	t := p.peek()
	if t.kind == tIdent && strings.EqualFold(t.text, w) {
		p.pos++
		return true
	}
	return false
}

func (p *parser) expect(k tokKind, what string) error {
	if t := p.next(); t.kind != k {
		return fmt.Errorf("want %s, got %q", what, t.text)
	}
	return nil
}

func (p *parser) or() (cond, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.keyword("OR") {
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = orCond{l, r}
	}
	return l, nil
}

func (p *parser) and() (cond, error) {
	l, err := p.not()
	if err != nil {
		return nil, err
	}
	for p.keyword("AND") {
		r, err := p.not()
		if err != nil {
			return nil, err
		}
		l = andCond{l, r}
	}
	return l, nil
}

func (p *parser) not() (cond, error) {
	if p.keyword("NOT") {
		c, err := p.not()
		if err != nil {
			return nil, err
		}
		return notCond{c}, nil
	}
	return p.primary()
}

var condFuncs = map[string]bool{"attribute_exists": true, "attribute_not_exists": true, "contains": true, "begins_with": true}

func (p *parser) primary() (cond, error) {
	t := p.peek()
	if t.kind == tLParen {
		p.pos++
		c, err := p.or()
		if err != nil {
			return nil, err
		}
		return c, p.expect(tRParen, ")")
	}
	if t.kind == tIdent && condFuncs[strings.ToLower(t.text)] && p.toks[p.pos+1].kind == tLParen {
		p.pos += 2
		args, err := p.operandList()
		if err != nil {
			return nil, err
		}
		return funcCond{fn: strings.ToLower(t.text), args: args}, nil
	}
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	switch {
	case p.keyword("BETWEEN"):
		lo, err := p.operand()
		if err != nil {
			return nil, err
		}
		if !p.keyword("AND") {
			return nil, fmt.Errorf("BETWEEN without AND")
		}
		hi, err := p.operand()
		if err != nil {
			return nil, err
		}
		return betweenCond{l, lo, hi}, nil
	case p.keyword("IN"):
		if err := p.expect(tLParen, "("); err != nil {
			return nil, err
		}
		list, err := p.operandList()
		if err != nil {
			return nil, err
		}
		return inCond{l, list}, nil
	}
	op := p.next()
	if op.kind != tCmp {
		return nil, fmt.Errorf("want a comparator after an operand, got %q", op.text)
	}
	r, err := p.operand()
	if err != nil {
		return nil, err
	}
	return cmpCond{op: op.text, l: l, r: r}, nil
}

// operandList reads operands up to and including the closing parenthesis.
func (p *parser) operandList() ([]operand, error) {
	var out []operand
	for {
		o, err := p.operand()
		if err != nil {
			return nil, err
		}
		out = append(out, o)
		t := p.next()
		if t.kind == tRParen {
			return out, nil
		}
		if t.kind != tComma {
			return nil, fmt.Errorf("want , or ), got %q", t.text)
		}
	}
}

func (p *parser) operand() (operand, error) {
	t := p.next()
	switch t.kind {
	case tName:
		return operand{name: t.text}, nil
	case tValue:
		return operand{value: t.text}, nil
	case tIdent:
		if strings.EqualFold(t.text, "size") && p.peek().kind == tLParen {
			p.pos++
			args, err := p.operandList()
			if err != nil {
				return operand{}, err
			}
			if len(args) != 1 {
				return operand{}, fmt.Errorf("size takes one path")
			}
			return operand{size: &args[0]}, nil
		}
		return operand{name: t.text}, nil
	}
	return operand{}, fmt.Errorf("want an operand, got %q", t.text)
}

var condCache sync.Map // expression -> cond

func parseCond(expr string) (cond, error) {
	if c, ok := condCache.Load(expr); ok {
		return c.(cond), nil
	}
	toks, err := lex(expr)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	c, err := p.or()
	if err != nil {
		return nil, fmt.Errorf("%q: %w", expr, err)
	}
	if p.peek().kind != tEOF {
		return nil, fmt.Errorf("%q: trailing %q", expr, p.peek().text)
	}
	condCache.Store(expr, c)
	return c, nil
}

// Eval evaluates a condition, key-condition or filter expression against item (nil or empty for
// an absent item). An empty expression is true.
func Eval(expr string, item Item, env Env) (bool, error) {
	if strings.TrimSpace(expr) == "" {
		return true, nil
	}
	c, err := parseCond(expr)
	if err != nil {
		return false, err
	}
	return c.eval(item, env)
}

// Equalities returns the attributes an expression pins with top-level AND-ed "path = :value"
// comparisons (as in a key condition), resolved to names and values.
func Equalities(expr string, env Env) (map[string]types.AttributeValue, error) {
	c, err := parseCond(expr)
	if err != nil {
		return nil, err
	}
	out := map[string]types.AttributeValue{}
	var walk func(c cond) error
	walk = func(c cond) error {
		switch x := c.(type) {
		case andCond:
			if err := walk(x.l); err != nil {
				return err
			}
			return walk(x.r)
		case cmpCond:
			if x.op != "=" {
				return nil
			}
			path, val := x.l, x.r
			if path.value != "" {
				path, val = val, path
			}
			if val.value == "" || path.value != "" || path.size != nil {
				return nil
			}
			name, err := path.attr(env)
			if err != nil {
				return err
			}
			v, ok := env.Values[val.value]
			if !ok {
				return fmt.Errorf("value %s is not defined", val.value)
			}
			out[name] = v
		}
		return nil
	}
	return out, walk(c)
}
