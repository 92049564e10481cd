package crmchange

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/crmsync/crmsync/shared/policy"
)

// Principals says which IAM principals may act in which CRM roles on POST /crm/changes
// (config/crm-roles.yaml). IAM authenticates the caller; this mapping authorizes the role: the
// actor.role of a request is only a request to act with a role the caller's principal holds.
//
//	principals:
//	  - arn: arn:aws:iam::111122223333:role/crm-backend      # exact
//	    roles: [admin, revops, sales]
//	  - arn: "arn:aws:sts::111122223333:assumed-role/revops-*/*"   # * matches any run of characters
//	    roles: [revops]
//
// A principal matching several entries holds the union of their roles. A principal matching none
// holds no role and every change it sends is refused.
type Principals struct {
	source  string
	entries []principalEntry
}

type principalEntry struct {
	pattern *regexp.Regexp
	roles   []string
}

// LoadPrincipals reads and validates the roles file at path.
func LoadPrincipals(path string) (*Principals, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParsePrincipals(path, data)
}

// ParsePrincipals validates a roles file's content; name is the file name its errors carry. Every
// problem is reported, each as "file:line: field: problem" (policy.Errors).
func ParsePrincipals(name string, data []byte) (*Principals, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, policy.Errors{{File: name, Msg: err.Error()}}
	}
	p := &Principals{source: name}
	var errs policy.Errors
	errf := func(n *yaml.Node, path, format string, args ...any) {
		errs = append(errs, &policy.Error{File: name, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, policy.Errors{{File: name, Msg: "want a mapping with a principals list"}}
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, val := root.Content[i], root.Content[i+1]
		switch key.Value {
		case "version":
		case "principals":
			if val.Kind != yaml.SequenceNode {
				errf(val, "principals", "want a list of {arn, roles}")
				continue
			}
			for j, item := range val.Content {
				if e, ok := parsePrincipal(item, fmt.Sprintf("principals[%d]", j), errf); ok {
					p.entries = append(p.entries, e)
				}
			}
		default:
			errf(key, key.Value, "unknown field (known: version, principals)")
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

func parsePrincipal(n *yaml.Node, path string, errf func(*yaml.Node, string, string, ...any)) (principalEntry, bool) {
	var e principalEntry
	if n.Kind != yaml.MappingNode {
		errf(n, path, "want {arn, roles}")
		return e, false
	}
	ok, seenARN, seenRoles := true, false, false
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		switch key.Value {
		case "arn":
			seenARN = true
			if val.Kind != yaml.ScalarNode || !strings.HasPrefix(val.Value, "arn:") {
				errf(val, path+".arn", "want an IAM principal ARN (arn:aws:iam::<account>:role/<name>, ...; * matches any run of characters), got %q", val.Value)
				ok = false
				continue
			}
			e.pattern = globPattern(val.Value)
		case "roles":
			seenRoles = true
			if val.Kind != yaml.SequenceNode || len(val.Content) == 0 {
				errf(val, path+".roles", "want a non-empty list of CRM roles")
				ok = false
				continue
			}
			for j, r := range val.Content {
				if r.Kind != yaml.ScalarNode || !roleRe.MatchString(r.Value) {
					errf(r, fmt.Sprintf("%s.roles[%d]", path, j), "%q is not a role: lower-case letters, digits, _ and -", r.Value)
					ok = false
					continue
				}
				e.roles = append(e.roles, r.Value)
			}
		default:
			errf(key, path+"."+key.Value, "unknown field (known: arn, roles)")
			ok = false
		}
	}
	if !seenARN {
		errf(n, path+".arn", "required")
	}
	if !seenRoles {
		errf(n, path+".roles", "required")
	}
	return e, ok && seenARN && seenRoles
}

// globPattern compiles an ARN pattern in which * matches any run of characters (including / and :).
func globPattern(arn string) *regexp.Regexp {
	parts := strings.Split(arn, "*")
	for i, s := range parts {
		parts[i] = regexp.QuoteMeta(s)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// RolesOf returns the CRM roles the principal holds, sorted; none when no entry matches.
func (p *Principals) RolesOf(arn string) []string {
	if p == nil || arn == "" {
		return nil
	}
	var roles []string
	for _, e := range p.entries {
		if e.pattern.MatchString(arn) {
			roles = append(roles, e.roles...)
		}
	}
	slices.Sort(roles)
	return slices.Compact(roles)
}

// authorize returns why the principal may not act in role, or "" when it may.
func (p *Principals) authorize(principal, role string) string {
	if principal == "" {
		return "the request carries no IAM identity (sign it with SigV4 for execute-api)"
	}
	held := p.RolesOf(principal)
	source := "the roles file"
	if p != nil {
		source = p.source
	}
	switch {
	case len(held) == 0:
		return fmt.Sprintf("principal %s holds no CRM role: map it to roles in %s", principal, source)
	case !slices.Contains(held, role):
		return fmt.Sprintf("principal %s may act as %s, not as %s (%s)", principal, strings.Join(held, ", "), role, source)
	}
	return ""
}
