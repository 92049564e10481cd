package store

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/decide"
)

func TestTimesSortLexically(t *testing.T) {
	a := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b := a.Add(time.Nanosecond)
	if !(FormatTime(a) < FormatTime(b)) || len(FormatTime(a)) != len(FormatTime(b)) {
		t.Fatalf("%s !< %s", FormatTime(a), FormatTime(b))
	}
	if !ParseTime(FormatTime(b)).Equal(b) || FormatTime(time.Time{}) != "" || !ParseTime("").IsZero() {
		t.Fatal("round trip")
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
	if f["locked_by"].(*types.AttributeValueMemberS).Value != "a" || av["change_day"].(*types.AttributeValueMemberS).Value != "2026-11-01" {
		t.Fatalf("item = %v", av)
	}
	var back Record
	if err := attributevalue.UnmarshalMap(av, &back); err != nil {
		t.Fatal(err)
	}
	if p := back.Decidable()["phone"]; !p.Equal(decide.Provenance{Value: "+1", Source: "crm", EventKey: "k", OccurredAt: at, LockedBy: "a"}) {
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
