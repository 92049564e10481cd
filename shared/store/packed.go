package store

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Packed is a JSON document as stored: a format byte and the document deflated with a preset
// dictionary of crmsync's own JSON names, so the names every document repeats cost almost
// nothing. It is a []byte, so DynamoDB stores it as a binary attribute. Write units are billed
// per KB of item, and the ledger's event and an activity's document are most of their items.
// Items written before packing keep their documents in plain string attributes, read beside the
// packed ones (LedgerItem.EventJSON, ActivityItem.DocJSON), so a deployed table needs no
// migration for it.
type Packed []byte

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

// Pack packs a document; an empty one packs to nil (no attribute).
func Pack(doc []byte) Packed {
	if len(doc) == 0 {
		return nil
	}
	var buf bytes.Buffer
	buf.WriteByte(packedV1)
	// Writing to a bytes.Buffer cannot fail. A deflate writer holds about a megabyte of state,
	// so writers are reused (Reset keeps the level and dictionary) rather than made per document.
	w := writers.Get().(*flate.Writer)
	w.Reset(&buf)
	_, _ = w.Write(doc)
	_ = w.Close()
	writers.Put(w)
	return buf.Bytes()
}

// writers are deflate writers with packDictV1 at BestCompression, reused across Pack calls.
var writers = sync.Pool{New: func() any {
	// The level and dictionary are valid constants: NewWriterDict cannot fail here.
	w, _ := flate.NewWriterDict(io.Discard, flate.BestCompression, packDictV1)
	return w
}}

// Unpack returns the packed document; nil packs to "".
func (p Packed) Unpack() (string, error) {
	if len(p) == 0 {
		return "", nil
	}
	if p[0] != packedV1 {
		return "", fmt.Errorf("packed document: unknown format %d", p[0])
	}
	out, err := io.ReadAll(flate.NewReaderDict(bytes.NewReader(p[1:]), packDictV1))
	if err != nil {
		return "", fmt.Errorf("packed document: %w", err)
	}
	if len(out) == 0 {
		return "", errors.New("packed document: empty")
	}
	return string(out), nil
}
