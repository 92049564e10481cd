package store

import (
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func TestPackedRoundTripAndLegacyStrings(t *testing.T) {
	event, err := os.ReadFile("../../events/sqs-ingest-batch.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   types.AttributeValue // as stored
		want string
	}{
		{"plain string (written before packing)", &types.AttributeValueMemberS{Value: `{"key":"a"}`}, `{"key":"a"}`},
		{"null", &types.AttributeValueMemberNULL{Value: true}, ""},
	}
	for _, doc := range []string{`{"key":"twilio:call:CA1:3"}`, string(event), strings.Repeat("é", 5000)} {
		av, err := Packed(doc).MarshalDynamoDBAttributeValue()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := av.(*types.AttributeValueMemberB); !ok {
			t.Fatalf("packed %d bytes as %T, want a binary attribute", len(doc), av)
		}
		tests = append(tests, struct {
			name string
			in   types.AttributeValue
			want string
		}{"packed " + doc[:min(len(doc), 20)], av, doc})
	}
	for _, tt := range tests {
		var got Packed
		if err := got.UnmarshalDynamoDBAttributeValue(tt.in); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if string(got) != tt.want {
			t.Errorf("%s: got %.40q, want %.40q", tt.name, got, tt.want)
		}
	}
	for _, bad := range [][]byte{{}, {0x7f, 1, 2}, {packedV1, 0xff, 0xff}} {
		if _, err := Unpack(bad); err == nil {
			t.Errorf("Unpack(%v) succeeded, want an error", bad)
		}
	}
}

// A ledger item's compact event, the bulk of the item, packs to well under half its size: write
// units are billed per KB of item.
func TestPackedLedgerEventIsSmall(t *testing.T) {
	event := `{"key":"twilio:call:CA5e1f0a2b3c4d5e6f708192a3b4c5d6e7:3","source":"twilio","kind":"call.status",` +
		`"occurred_at":"2025-03-11T16:05:12Z","received_at":"2025-03-11T16:05:13.120399Z","group_key":"phone:+14155550123",` +
		`"subject":{"phones":["+14155550123"]},"fields":{"contact":{"last_activity_at":"2025-03-11T16:05:12Z",` +
		`"last_call_status":"completed","phone":"+14155550123"}},"activity":{"id":"call:CA5e1f0a2b3c4d5e6f708192a3b4c5d6e7",` +
		`"type":"call","status":"completed","direction":"inbound","duration_sec":312,"participants":[{"role":"caller",` +
		`"phone":"+14155550123"},{"role":"callee","phone":"+14155550100"}]},"external_ids":{"call_sid":` +
		`"CA5e1f0a2b3c4d5e6f708192a3b4c5d6e7","account_sid":"ACdec0de00000000000000000000000001"},"mapping_version":"twilio/1",` +
		`"payload_hash":"0d2abfe0b08d3a8bc8e9e06b8e3f9931acdf8a088bffd284493460fd615f5360"}`
	item, err := attributevalue.MarshalMap(LedgerItem{Key: "k", Event: Packed(event)})
	if err != nil {
		t.Fatal(err)
	}
	packed := len(item["event"].(*types.AttributeValueMemberB).Value)
	if packed*2 > len(event) {
		t.Errorf("a %d-byte event packs to %d bytes, want under half", len(event), packed)
	}
	var back LedgerItem
	if err := attributevalue.UnmarshalMap(item, &back); err != nil || string(back.Event) != event {
		t.Errorf("read back %q (%v)", back.Event, err)
	}
}


// A profile's fields read back from the packed form and from the map items written before
// packing hold.
func TestFieldMapPackedAndLegacy(t *testing.T) {
	want := FieldMap{"first_name": {Value: "Ada", Source: "typeform", EventKey: "typeform:e1", OccurredAt: "2025-03-11T16:00:00.000000000Z"},
		"phone": {Value: "+14155550123", LockedBy: "admin"}}
	packed, err := attributevalue.MarshalMap(Record{PK: "CONTACT#c1", SK: SKProfile, Fields: want})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := packed["fields"].(*types.AttributeValueMemberB); !ok {
		t.Fatalf("fields stored as %T, want packed binary", packed["fields"])
	}
	legacyFields, err := attributevalue.Marshal(map[string]Field(want))
	if err != nil {
		t.Fatal(err)
	}
	legacy := map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "CONTACT#c1"}, "fields": legacyFields}
	for name, item := range map[string]map[string]types.AttributeValue{"packed": packed, "legacy map": legacy} {
		var got Record
		if err := attributevalue.UnmarshalMap(item, &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got.Fields) != 2 || got.Fields["first_name"] != want["first_name"] || got.Fields["phone"] != want["phone"] {
			t.Errorf("%s: fields = %+v, want %+v", name, got.Fields, want)
		}
	}
}
