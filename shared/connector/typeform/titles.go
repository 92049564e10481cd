package typeform

import (
	"slices"
	"strings"
	"unicode"
)

// fullName is the target TitleField gives a question asking for a whole name: the answer's
// first word fills first_name and the rest last_name.
const fullName = "full_name"

// TitleField returns the contact field a text answer's question title implies when neither the
// mapping nor the ref names one: first_name, last_name, "full_name" (split into both), company,
// or "" (matched case-insensitively on words, so "What's your first name?" is first_name,
// "Your full name" and "What is your name?" full_name, "Company name" and "Organisation" company).
// Titles about an email, phone, website or company size are left to other rules.
func TitleField(title string) string {
	words := strings.FieldsFunc(strings.ToLower(title), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	has := func(ws ...string) bool {
		for _, w := range ws {
			if slices.Contains(words, w) {
				return true
			}
		}
		return false
	}
	phrase := func(a, b string) bool {
		for i := 0; i+1 < len(words); i++ {
			if words[i] == a && words[i+1] == b {
				return true
			}
		}
		return false
	}
	switch {
	case len(words) == 0 || has("email", "mail", "phone", "mobile", "website", "domain", "url", "size", "employees", "industry"):
		return ""
	case phrase("first", "name") || phrase("given", "name") || has("firstname", "forename"):
		return "first_name"
	case phrase("last", "name") || phrase("family", "name") || has("lastname", "surname"):
		return "last_name"
	case has("company", "organisation", "organization", "employer"):
		return "company"
	case phrase("full", "name") || has("fullname", "name"):
		return fullName
	}
	return ""
}
