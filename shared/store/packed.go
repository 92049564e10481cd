package store

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Packed is a JSON document stored compressed: a binary attribute holding a format byte and the
// document deflated with a preset dictionary of crmsync's own JSON names, so the names every
// document repeats cost almost nothing. Write units are billed per KB of item, and the ledger's
// event and an activity's document are most of their items. It reads back both forms: the binary
// one and a plain string attribute (items written before packing), so a deployed table needs no
// migration for it.
type Packed string

// packedV1 is the format byte of a document deflated with packDictV1.
const packedV1 = 0x01

// packDictV1 is the preset dictionary of format 1: the JSON names and values crmsync's canonical
// events and timeline documents repeat, most frequent last (deflate reaches the end of the
// dictionary most cheaply). It is part of the stored format: never change it, add a format.
var packDictV1 = []byte(`"attrs":{"actor":{"role":"participants":[{"role":"from","to","caller","callee","organizer","attendee",` +
	`"direction":"inbound","outbound","duration_sec":"start_at":"end_at":"subject":"relates_to":["sources":[` +
	`"hydrate":{"object":"message","event","ref":"external_ids":{"mapping_version":"unmapped":["payload_hash":` +
	`"fields":{"contact":{"account":{"deal":{"first_name":"last_name":"company":"job_title":"utm_source":"utm_campaign":` +
	`"last_activity_at":"last_call_status":"phone":"email":"group_key":"email:","phone:+","contact:","received_at":` +
	`"occurred_at":"subject":{"emails":["phones":["kind":"lead.submitted","call.status","email.event","meeting.scheduled",` +
	`"source":"twilio","typeform","calendly","mailgun","msgraph","meta-leads","generic","key":"twilio:call:CA",` +
	`"entries":[{"at":"key":"status":"stamps":{"first_at":"last_at":"type":"call","email","meeting","form",` +
	`"activity":{"id":"call:CA","email:<","meeting:","form:","status":"completed","ringing","delivered","opened",`)

// MarshalDynamoDBAttributeValue stores the document packed (nothing for an empty one).
func (p Packed) MarshalDynamoDBAttributeValue() (types.AttributeValue, error) {
	if p == "" {
		return &types.AttributeValueMemberNULL{Value: true}, nil
	}
	var buf bytes.Buffer
	buf.WriteByte(packedV1)
	w, err := flate.NewWriterDict(&buf, flate.BestCompression, packDictV1)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	if _, err := io.WriteString(w, string(p)); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	return &types.AttributeValueMemberB{Value: buf.Bytes()}, nil
}

// UnmarshalDynamoDBAttributeValue reads a packed document, or a plain string one.
func (p *Packed) UnmarshalDynamoDBAttributeValue(av types.AttributeValue) error {
	switch v := av.(type) {
	case *types.AttributeValueMemberNULL:
		*p = ""
	case *types.AttributeValueMemberS:
		*p = Packed(v.Value)
	case *types.AttributeValueMemberB:
		s, err := Unpack(v.Value)
		if err != nil {
			return err
		}
		*p = Packed(s)
	default:
		return fmt.Errorf("packed document: unexpected attribute type %T", av)
	}
	return nil
}

// Unpack returns the document of a packed binary value.
func Unpack(b []byte) (string, error) {
	if len(b) == 0 {
		return "", errors.New("packed document: empty")
	}
	if b[0] != packedV1 {
		return "", fmt.Errorf("packed document: unknown format %d", b[0])
	}
	out, err := io.ReadAll(flate.NewReaderDict(bytes.NewReader(b[1:]), packDictV1))
	if err != nil {
		return "", fmt.Errorf("packed document: %w", err)
	}
	return string(out), nil
}

var (
	_ attributevalue.Marshaler   = Packed("")
	_ attributevalue.Unmarshaler = (*Packed)(nil)
)

// FieldMap is a record's fields with their provenance, stored as one packed JSON document (see
// Packed): a profile's per-field provenance is most of its item, and it is always read and
// written whole. It reads back both forms: the packed one and a DynamoDB map (items written
// before packing).
type FieldMap map[string]Field

// MarshalDynamoDBAttributeValue stores the fields packed.
func (m FieldMap) MarshalDynamoDBAttributeValue() (types.AttributeValue, error) {
	doc, err := json.Marshal(map[string]Field(m))
	if err != nil {
		return nil, fmt.Errorf("pack fields: %w", err)
	}
	return Packed(doc).MarshalDynamoDBAttributeValue()
}

// UnmarshalDynamoDBAttributeValue reads packed fields, or a map of them.
func (m *FieldMap) UnmarshalDynamoDBAttributeValue(av types.AttributeValue) error {
	if legacy, ok := av.(*types.AttributeValueMemberM); ok {
		var fields map[string]Field
		if err := attributevalue.UnmarshalMap(legacy.Value, &fields); err != nil {
			return fmt.Errorf("fields: %w", err)
		}
		*m = fields
		return nil
	}
	var doc Packed
	if err := doc.UnmarshalDynamoDBAttributeValue(av); err != nil {
		return fmt.Errorf("fields: %w", err)
	}
	fields := map[string]Field{}
	if doc != "" {
		if err := json.Unmarshal([]byte(doc), &fields); err != nil {
			return fmt.Errorf("fields: %w", err)
		}
	}
	*m = fields
	return nil
}

var (
	_ attributevalue.Marshaler   = FieldMap(nil)
	_ attributevalue.Unmarshaler = (*FieldMap)(nil)
)
