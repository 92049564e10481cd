package alarms

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
)

// Expr is a parsed metric math expression. The supported subset is what crmsync's alarms use
// and a little more: numbers, metric ids, + - * /, comparisons (> >= < <= == !=), AND, OR,
// parentheses, and the functions FILL(x, value), IF(cond, a[, b]), ABS(x), and
// MAX/MIN/SUM/AVG of arguments or of one [list]. As in CloudWatch, arithmetic with a missing
// value is missing; FILL replaces a missing value; IF with a missing condition is missing.
type Expr interface {
	// Eval evaluates the expression for one period; ok is false when the result is missing.
	Eval(vars map[string]Value) Value
}

// Value is one period's value of a series; OK is false when the period has no datapoint.
type Value struct {
	V  float64 // the value, when OK
	OK bool    // false: the period has no value
}

// Num returns a present value.
func Num(v float64) Value { return Value{V: v, OK: true} }

// Missing is the absent value.
var Missing = Value{}

// ParseExpr parses a metric math expression.
func ParseExpr(s string) (Expr, error) {
	p := &parser{src: s}
	p.next()
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok != "" {
		return nil, fmt.Errorf("expression %q: unexpected %q", s, p.tok)
	}
	return e, nil
}

type parser struct {
	src string
	pos int
	tok string
}

func (p *parser) next() {
	for p.pos < len(p.src) && unicode.IsSpace(rune(p.src[p.pos])) {
		p.pos++
	}
	if p.pos >= len(p.src) {
		p.tok = ""
		return
	}
	c := p.src[p.pos]
	start := p.pos
	switch {
	case unicode.IsDigit(rune(c)) || c == '.':
		for p.pos < len(p.src) && (unicode.IsDigit(rune(p.src[p.pos])) || p.src[p.pos] == '.' || p.src[p.pos] == 'e' || p.src[p.pos] == 'E') {
			p.pos++
		}
	case unicode.IsLetter(rune(c)) || c == '_':
		for p.pos < len(p.src) && (unicode.IsLetter(rune(p.src[p.pos])) || unicode.IsDigit(rune(p.src[p.pos])) || p.src[p.pos] == '_') {
			p.pos++
		}
	case strings.ContainsRune("<>=!", rune(c)) && p.pos+1 < len(p.src) && p.src[p.pos+1] == '=':
		p.pos += 2
	default:
		p.pos++
	}
	p.tok = p.src[start:p.pos]
}

func (p *parser) expect(t string) error {
	if p.tok != t {
		return fmt.Errorf("expression %q: want %q, got %q", p.src, t, p.tok)
	}
	p.next()
	return nil
}

func (p *parser) or() (Expr, error) {
	l, err := p.and()
	for err == nil && strings.EqualFold(p.tok, "OR") {
		p.next()
		var r Expr
		if r, err = p.and(); err == nil {
			l = binary{op: "OR", l: l, r: r}
		}
	}
	return l, err
}

func (p *parser) and() (Expr, error) {
	l, err := p.cmp()
	for err == nil && strings.EqualFold(p.tok, "AND") {
		p.next()
		var r Expr
		if r, err = p.cmp(); err == nil {
			l = binary{op: "AND", l: l, r: r}
		}
	}
	return l, err
}

func (p *parser) cmp() (Expr, error) {
	l, err := p.add()
	for err == nil {
		switch p.tok {
		case ">", ">=", "<", "<=", "==", "!=":
		default:
			return l, nil
		}
		op := p.tok
		p.next()
		var r Expr
		if r, err = p.add(); err == nil {
			l = binary{op: op, l: l, r: r}
		}
	}
	return l, err
}

func (p *parser) add() (Expr, error) {
	l, err := p.mul()
	for err == nil && (p.tok == "+" || p.tok == "-") {
		op := p.tok
		p.next()
		var r Expr
		if r, err = p.mul(); err == nil {
			l = binary{op: op, l: l, r: r}
		}
	}
	return l, err
}

func (p *parser) mul() (Expr, error) {
	l, err := p.unary()
	for err == nil && (p.tok == "*" || p.tok == "/") {
		op := p.tok
		p.next()
		var r Expr
		if r, err = p.unary(); err == nil {
			l = binary{op: op, l: l, r: r}
		}
	}
	return l, err
}

func (p *parser) unary() (Expr, error) {
	if p.tok == "-" {
		p.next()
		e, err := p.unary()
		return binary{op: "-", l: constant(0), r: e}, err
	}
	return p.primary()
}

func (p *parser) primary() (Expr, error) {
	t := p.tok
	switch {
	case t == "":
		return nil, fmt.Errorf("expression %q: unexpected end", p.src)
	case t == "(":
		p.next()
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		return e, p.expect(")")
	case unicode.IsDigit(rune(t[0])) || t[0] == '.':
		v, err := strconv.ParseFloat(t, 64)
		if err != nil {
			return nil, fmt.Errorf("expression %q: bad number %q", p.src, t)
		}
		p.next()
		return constant(v), nil
	case unicode.IsLetter(rune(t[0])) || t[0] == '_':
		p.next()
		if p.tok != "(" {
			return ref(t), nil
		}
		name := strings.ToUpper(t)
		switch name {
		case "FILL", "IF", "ABS", "MAX", "MIN", "SUM", "AVG":
		default:
			return nil, fmt.Errorf("expression %q: unsupported function %s", p.src, t)
		}
		p.next()
		var args []Expr
		if p.tok == "[" { // a list argument: MAX([a, b])
			p.next()
			for p.tok != "]" {
				a, err := p.or()
				if err != nil {
					return nil, err
				}
				args = append(args, a)
				if p.tok == "," {
					p.next()
				} else if p.tok != "]" {
					return nil, fmt.Errorf("expression %q: want , or ] in a list", p.src)
				}
			}
			p.next()
		} else {
			for p.tok != ")" {
				a, err := p.or()
				if err != nil {
					return nil, err
				}
				args = append(args, a)
				if p.tok == "," {
					p.next()
				} else if p.tok != ")" {
					return nil, fmt.Errorf("expression %q: want , or ) after an argument", p.src)
				}
			}
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		f := call{name: name, args: args}
		switch {
		case name == "FILL" && len(args) != 2, name == "ABS" && len(args) != 1,
			name == "IF" && (len(args) < 2 || len(args) > 3), len(args) == 0:
			return nil, fmt.Errorf("expression %q: wrong number of arguments to %s", p.src, name)
		}
		return f, nil
	}
	return nil, fmt.Errorf("expression %q: unexpected %q", p.src, t)
}

type constant float64

func (c constant) Eval(map[string]Value) Value { return Num(float64(c)) }

type ref string

func (r ref) Eval(vars map[string]Value) Value { return vars[string(r)] }

type binary struct {
	op   string
	l, r Expr
}

func (b binary) Eval(vars map[string]Value) Value {
	l, r := b.l.Eval(vars), b.r.Eval(vars)
	if !l.OK || !r.OK {
		return Missing
	}
	t := func(c bool) Value {
		if c {
			return Num(1)
		}
		return Num(0)
	}
	switch b.op {
	case "+":
		return Num(l.V + r.V)
	case "-":
		return Num(l.V - r.V)
	case "*":
		return Num(l.V * r.V)
	case "/":
		if r.V == 0 {
			return Missing // CloudWatch drops a division by zero
		}
		return Num(l.V / r.V)
	case ">":
		return t(l.V > r.V)
	case ">=":
		return t(l.V >= r.V)
	case "<":
		return t(l.V < r.V)
	case "<=":
		return t(l.V <= r.V)
	case "==":
		return t(l.V == r.V)
	case "!=":
		return t(l.V != r.V)
	case "AND":
		return t(l.V != 0 && r.V != 0)
	case "OR":
		return t(l.V != 0 || r.V != 0)
	}
	return Missing
}

type call struct {
	name string
	args []Expr
}

func (c call) Eval(vars map[string]Value) Value {
	switch c.name {
	case "FILL":
		if v := c.args[0].Eval(vars); v.OK {
			return v
		}
		return c.args[1].Eval(vars)
	case "IF":
		cond := c.args[0].Eval(vars)
		if !cond.OK {
			return Missing
		}
		if cond.V != 0 {
			return c.args[1].Eval(vars)
		}
		if len(c.args) == 3 {
			return c.args[2].Eval(vars)
		}
		return Missing
	case "ABS":
		v := c.args[0].Eval(vars)
		if !v.OK {
			return Missing
		}
		return Num(math.Abs(v.V))
	}
	var vals []float64
	for _, a := range c.args {
		if v := a.Eval(vars); v.OK {
			vals = append(vals, v.V)
		}
	}
	if len(vals) == 0 {
		return Missing
	}
	switch c.name {
	case "MAX":
		return Num(maxOf(vals))
	case "MIN":
		return Num(minOf(vals))
	case "SUM":
		return Num(sum(vals))
	case "AVG":
		return Num(sum(vals) / float64(len(vals)))
	}
	return Missing
}
