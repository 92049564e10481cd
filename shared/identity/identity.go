// Package identity owns how crmsync recognises a person: email and phone normalisation (trimmed,
// lower-cased email; E.164 phone), the group key that orders one person's events, free-mail
// domains, and the hashed form used wherever an identity must appear in logs.
package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"net/mail"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// DefaultRegion is the region assumed for phone numbers written without a country code.
const DefaultRegion = "US"

// Email returns the normalised form of an email address (trimmed, lower-cased, display name
// removed) and whether it is a plausible address.
func Email(raw string) (string, bool) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", false
	}
	if a, err := mail.ParseAddress(s); err == nil {
		s = a.Address
	}
	s = strings.ToLower(strings.TrimSpace(s))
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.ContainsAny(s, " \t\r\n<>") {
		return "", false
	}
	return s, true
}

// Domain returns the domain part of a normalised email address.
func Domain(email string) string {
	if at := strings.LastIndexByte(email, '@'); at >= 0 {
		return email[at+1:]
	}
	return ""
}

// Phone returns the E.164 form of a phone number and whether it parsed as a valid number.
func Phone(raw string) (string, bool) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", false
	}
	n, err := phonenumbers.Parse(s, DefaultRegion)
	if err != nil || !phonenumbers.IsPossibleNumber(n) {
		return "", false
	}
	return phonenumbers.Format(n, phonenumbers.E164), true
}

// GroupKey returns the identity whose events must be applied in order: the first valid email,
// else the first valid phone, else the connector-scoped fallback id ("source:id").
func GroupKey(emails, phones []string, source, fallbackID string) string {
	for _, e := range emails {
		if n, ok := Email(e); ok {
			return "email:" + n
		}
	}
	for _, p := range phones {
		if n, ok := Phone(p); ok {
			return "phone:" + n
		}
	}
	return source + ":" + fallbackID
}

// Redact returns a short stable hash of an identity for logs, so personal data never appears in
// clear.
func Redact(s string) string {
	if s == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return "h:" + hex.EncodeToString(sum[:6])
}

var freeMail = map[string]bool{
	"gmail.com": true, "googlemail.com": true, "yahoo.com": true, "ymail.com": true,
	"hotmail.com": true, "outlook.com": true, "live.com": true, "msn.com": true,
	"aol.com": true, "icloud.com": true, "me.com": true, "mac.com": true,
	"proton.me": true, "protonmail.com": true, "gmx.com": true, "gmx.net": true,
	"mail.com": true, "yandex.com": true, "zoho.com": true, "web.de": true, "qq.com": true,
}

// FreeMail reports whether a domain is a free-mail provider, whose domain never identifies an
// account.
func FreeMail(domain string) bool { return freeMail[strings.ToLower(domain)] }
