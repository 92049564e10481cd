package awsproxy

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseRules reads a fault specification, as the `crmsync-dev reliability --faults` flag takes it: a
// comma-separated list of kind[/phase]=rate[@api[|api...]], e.g.
//
//	throttle=0.02,server-error/after=0.01,timeout=0.002,conflict=0.02@dynamodb.TransactWriteItems
//
// A kind without a phase gives two rules, before and after, each at half the rate. "none" (or an
// empty spec) injects nothing; "all=R" is every kind of Kinds at rate R. "partial" is always after
// forwarding (its whole rate).
func ParseRules(spec string) ([]Rule, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == "none" {
		return nil, nil
	}
	var out []Rule
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lhs, rhs, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q: want kind[/phase]=rate[@api|api]", ErrUnknown, item)
		}
		rateText, apiText, _ := strings.Cut(rhs, "@")
		rate, err := strconv.ParseFloat(strings.TrimSpace(rateText), 64)
		if err != nil || rate < 0 || rate > 1 {
			return nil, fmt.Errorf("%w: %q: rate must be a number in [0, 1]", ErrUnknown, item)
		}
		var apis []string
		for _, a := range strings.Split(apiText, "|") {
			if a = strings.TrimSpace(a); a != "" {
				apis = append(apis, a)
			}
		}
		kindText, phaseText, hasPhase := strings.Cut(strings.TrimSpace(lhs), "/")
		kinds := []Kind{Kind(kindText)}
		if kindText == "all" {
			kinds = Kinds
		}
		for _, k := range kinds {
			if k != Throttle && k != ServerError && k != Timeout && k != Conflict && k != Partial {
				return nil, fmt.Errorf("%w: kind %q (known: throttle, server-error, timeout, conflict, partial, all)", ErrUnknown, k)
			}
			if k == Partial { // always after forwarding
				out = append(out, Rule{Kind: k, Phase: After, Rate: rate, APIs: apis})
				continue
			}
			if hasPhase {
				ph := Phase(phaseText)
				if ph != Before && ph != After {
					return nil, fmt.Errorf("%w: phase %q (known: before, after)", ErrUnknown, phaseText)
				}
				out = append(out, Rule{Kind: k, Phase: ph, Rate: rate, APIs: apis})
				continue
			}
			out = append(out, Rule{Kind: k, Phase: Before, Rate: rate / 2, APIs: apis},
				Rule{Kind: k, Phase: After, Rate: rate / 2, APIs: apis})
		}
	}
	return out, nil
}

// String renders rules in ParseRules' syntax (one item per rule, with its phase).
func String(rules []Rule) string {
	if len(rules) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(rules))
	for _, r := range rules {
		s := string(r.Kind) + "/" + string(r.Phase) + "=" + strconv.FormatFloat(r.Rate, 'g', -1, 64)
		if len(r.APIs) > 0 {
			s += "@" + strings.Join(r.APIs, "|")
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}
