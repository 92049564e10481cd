package store

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/decide"
)

func TestTimesSortLexically(t *testing.T) {
	a := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b := a.Add(time.Nanosecond)
	if !(FormatTime(a) < FormatTime(b)) || len(FormatTime(a)) != len(FormatTime(b)) {
		t.Fatalf("%s !< %s", FormatTime(a), FormatTime(b))
	}
	if got, err := ParseTime(FormatTime(b)); err != nil || !got.Equal(b) || FormatTime(time.Time{}) != "" {
		t.Fatal("round trip")
	}
	if got, err := ParseTime(""); err != nil || !got.IsZero() {
		t.Fatalf(`ParseTime("") = %v, %v; want the zero time (unset)`, got, err)
	}
	loc := time.FixedZone("x", 3600)
	if FormatTime(a.In(loc)) != FormatTime(a) {
		t.Fatal("not UTC")
	}
}

func TestKeys(t *testing.T) {
	if PK(Contact, "c1") != "CONTACT#c1" || PK(Account, "a") != "ACCOUNT#a" || PK(Deal, "d") != "DEAL#d" {
		t.Fatal("PK")
	}
	long := strings.Repeat("x", 500)
	if sk := ActivitySK(long); len(sk) > 100 || sk != ActivitySK(long) {
		t.Fatalf("long activity sk %q", sk)
	}
	if AuditSK(time.Unix(0, 0), "k", "f") != "AUDIT#1970-01-01T00:00:00.000000000Z#k#f" {
		t.Fatal(AuditSK(time.Unix(0, 0), "k", "f"))
	}
}

func TestDuplicate(t *testing.T) {
	now := time.Unix(1000, 0)
	l := LedgerItem{PayloadHash: "h", DedupUntil: now.Add(time.Second).UnixMilli()}
	if !l.Duplicate("h", now) || l.Duplicate("other", now) || l.Duplicate("h", now.Add(2*time.Second)) {
		t.Fatal("window")
	}
	l.DedupForever = true
	if !l.Duplicate("h", now.Add(1000*time.Hour)) {
		t.Fatal("forever")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := NewRecord(Contact, "c1")
	at := time.Date(2026, 11, 1, 0, 0, 0, 5, time.UTC)
	r.SetFields(decide.Record{"phone": {Value: "+1", Source: "crm", EventKey: "k", OccurredAt: at, LockedBy: "a"}})
	r.Touch(at)
	av, err := attributevalue.MarshalMap(r)
	if err != nil {
		t.Fatal(err)
	}
	f := av["fields"].(*types.AttributeValueMemberM).Value["phone"].(*types.AttributeValueMemberM).Value
	if _, indexed := av["change_day"]; f["locked_by"].(*types.AttributeValueMemberS).Value != "a" || indexed {
		t.Fatalf("item = %v", av)
	}
	var back Record
	if err := attributevalue.UnmarshalMap(av, &back); err != nil {
		t.Fatal(err)
	}
	decidable, err := back.Decidable()
	if err != nil {
		t.Fatal(err)
	}
	if p := decidable["phone"]; !p.Equal(decide.Provenance{Value: "+1", Source: "crm", EventKey: "k", OccurredAt: at, LockedBy: "a"}) {
		t.Fatalf("provenance = %+v", p)
	}
	if !back.Open() {
		t.Fatal("a record without stage is open")
	}
	back.Fields["stage"] = Field{Value: "closed_won"}
	if back.Open() {
		t.Fatal("closed_won is open")
	}
}

// A stored time that does not parse is an error naming the field, never the zero time (which
// would win every first_touch comparison). Before, ParseTime returned the zero time silently.
func TestUnparsableTimesAreErrors(t *testing.T) {
	for _, s := range []string{"yesterday", "2026-13-01T00:00:00Z", "1733000000"} {
		if got, err := ParseTime(s); err == nil {
			t.Errorf("ParseTime(%q) = %v, nil; want an error", s, got)
		}
	}
	rec := NewRecord(Contact, "c-1")
	rec.Fields["lead_source"] = Field{Value: "webinar", Source: "typeform", EventKey: "k", OccurredAt: "not a time"}
	if _, err := rec.Decidable(); err == nil || !strings.Contains(err.Error(), "lead_source") {
		t.Errorf("Decidable() error = %v, want one naming lead_source", err)
	}
}

// A record written through Stored keeps its fields packed and reads back the same after Unpack;
// a profile written before packing (plain fields) reads back through Unpack too.
func TestRecordStoredPacksFields(t *testing.T) {
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	r := NewRecord(Contact, "c1")
	fields := decide.Record{}
	for _, name := range []string{"first_name", "last_name", "email", "phone", "company", "job_title", "last_activity_at", "last_call_status"} {
		fields[name] = decide.Provenance{Value: name + "-value", Source: "typeform", EventKey: "typeform:01JP2F4QGQ8JV0N7T6QX4D7M0S", OccurredAt: at}
	}
	r.SetFields(fields)
	r.Touch(at)
	stored, err := r.Stored()
	if err != nil {
		t.Fatal(err)
	}
	packed, err := attributevalue.MarshalMap(stored)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := attributevalue.MarshalMap(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := packed["fields"]; ok || packed["fields_z"] == nil {
		t.Fatalf("stored item attributes: %v", packed)
	}
	if len(r.Fields) != 8 {
		t.Fatalf("Stored changed the record itself: %d fields", len(r.Fields))
	}
	for name, item := range map[string]map[string]types.AttributeValue{"packed": packed, "plain": plain} {
		var back Record
		if err := attributevalue.UnmarshalMap(item, &back); err != nil {
			t.Fatal(err)
		}
		if err := back.Unpack(); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(r.Fields, back.Fields); diff != "" {
			t.Errorf("%s: fields after Unpack (-want +got):\n%s", name, diff)
		}
	}
}
