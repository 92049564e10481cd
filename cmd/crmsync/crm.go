package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/crmchange"
)

// crmSetOptions are `crm set`'s flags.
type crmSetOptions struct {
	contact, actor, role, changeID, occurredAt string
	fields                                     []string
	lock, unlock                               bool
}

func newCrmCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "crm", Short: "Make changes as the CRM does (POST /crm/changes, IAM-signed)"}
	var o crmSetOptions
	set := &cobra.Command{
		Use:   "set --contact <email|phone|id> --field name=value [--field ...] --actor <email> --role <role> [--lock|--unlock] [--change-id id]",
		Short: "Change, lock or unlock contact fields through POST /crm/changes",
		Long: `Post a CRM change to the stack's POST /crm/changes route, signed with SigV4 (service
execute-api; credentials from the AWS default chain, test/test against the local stack). The change
goes through the ingest queue, ledger and policy like every other event; the worker applies it
asynchronously (see the audit with ` + "`crmsync contact get`" + `).

--field name=value sets a field (repeatable); --field name without a value only names it, for
--lock/--unlock. --lock locks every named field, --unlock unlocks them; both need an actor role
in the policy's override_roles for source crm. --contact takes an email address, a phone number
or a contact id. Without --change-id a random id is generated and printed: re-run with it to
retry the same change (it is applied once).`,
		Example: `  crmsync crm set --contact ada@example.com --field phone=+14155550199 --actor alice@example.com --role revops --lock
  crmsync crm set --contact ada@example.com --field phone --actor alice@example.com --role revops --unlock`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, generated, err := o.request()
			if err != nil {
				return err
			}
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			if err := ref.require("HttpApi"); err != nil {
				return err
			}
			if generated {
				fmt.Fprintf(cmd.ErrOrStderr(), "change id: %s\n", req.ChangeID)
			}
			acc, err := postCrmChange(cmd.Context(), ref, req)
			if err != nil {
				return fmt.Errorf("change %s: %w (retry with --change-id %s)", req.ChangeID, err, req.ChangeID)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "change %s accepted (event %s); the worker applies it asynchronously\n", acc.ChangeID, acc.Key)
			return nil
		},
	}
	f := set.Flags()
	f.StringVar(&o.contact, "contact", "", "the contact: email address, phone number or contact id")
	f.StringArrayVar(&o.fields, "field", nil, "name=value to set (repeatable); name alone with --lock/--unlock")
	f.StringVar(&o.actor, "actor", "", "email of the person making the change")
	f.StringVar(&o.role, "role", "", "the actor's role (e.g. revops; locks need an override role)")
	f.BoolVar(&o.lock, "lock", false, "lock the named fields against automated changes")
	f.BoolVar(&o.unlock, "unlock", false, "unlock the named fields")
	f.StringVar(&o.changeID, "change-id", "", "id of the change (default: a random id, printed)")
	f.StringVar(&o.occurredAt, "occurred-at", "", "when the change was made, RFC 3339 (default: when received)")
	set.MarkFlagsMutuallyExclusive("lock", "unlock")
	cmd.AddCommand(set)
	return cmd
}

// request builds the request body from the flags; generated reports a generated change id.
func (o crmSetOptions) request() (crmchange.Request, bool, error) {
	req := crmchange.Request{ChangeID: o.changeID, Actor: crmchange.Actor{Email: o.actor, Role: o.role}, OccurredAt: o.occurredAt}
	q, err := contactQuery(o.contact)
	if err != nil {
		return req, false, err
	}
	req.Contact = crmchange.Contact{Email: q.Email, Phone: q.Phone, ID: q.ID}
	var names []string
	for _, f := range o.fields {
		name, value, hasValue := strings.Cut(f, "=")
		name = strings.TrimSpace(name)
		if name == "" {
			return req, false, fmt.Errorf("--field %q: want name=value", f)
		}
		names = append(names, name)
		if hasValue {
			if req.Fields == nil {
				req.Fields = map[string]string{}
			}
			req.Fields[name] = value
		} else if !o.lock && !o.unlock {
			return req, false, fmt.Errorf("--field %q has no value: use name=value, or --lock/--unlock to only lock or unlock it", f)
		}
	}
	if len(names) == 0 {
		return req, false, errors.New("give at least one --field")
	}
	switch {
	case o.lock:
		req.Lock = names
	case o.unlock:
		req.Unlock = names
	}
	generated := false
	if req.ChangeID == "" {
		req.ChangeID, generated = newChangeID(), true
	}
	return req, generated, nil
}

// newChangeID returns a random UUID (version 4).
func newChangeID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// postCrmChange posts one change to the stack's POST /crm/changes, SigV4-signed for execute-api.
func postCrmChange(ctx context.Context, ref *stackRef, req crmchange.Request) (*crmchange.Accepted, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	status, resp, err := signedRequest(ctx, ref, http.MethodPost, "/crm/changes", body)
	if err != nil {
		return nil, err
	}
	if status != http.StatusAccepted {
		var e struct{ Error, Message string }
		_ = json.Unmarshal(resp, &e)
		switch {
		case e.Message != "":
			return nil, fmt.Errorf("refused (HTTP %d): %s", status, e.Message)
		case e.Error != "":
			return nil, fmt.Errorf("refused (HTTP %d): %s", status, e.Error)
		}
		return nil, fmt.Errorf("refused (HTTP %d): %s", status, strings.TrimSpace(string(resp)))
	}
	var acc crmchange.Accepted
	if err := json.Unmarshal(resp, &acc); err != nil {
		return nil, fmt.Errorf("unexpected answer %q: %w", resp, err)
	}
	return &acc, nil
}

// signedRequest sends a JSON request to the stack's HTTP API signed with SigV4 (service
// execute-api, the stack's region, credentials from ref.AWS) and returns status and body.
func signedRequest(ctx context.Context, ref *stackRef, method, path string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, method, ref.APIBase+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "crmsync-cli/1")
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	r.Header.Set("X-Amz-Content-Sha256", payloadHash)
	if err := signRequest(ctx, ref.AWS, r, payloadHash); err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

func signRequest(ctx context.Context, cfg aws.Config, r *http.Request, payloadHash string) error {
	if cfg.Credentials == nil {
		return errors.New("no AWS credentials: configure the default chain (AWS_PROFILE, environment, SSO, ...)")
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("AWS credentials: %w", err)
	}
	if cfg.Region == "" {
		return errors.New("no AWS region: pass --region or set AWS_REGION")
	}
	return v4.NewSigner().SignHTTP(ctx, creds, r, payloadHash, "execute-api", cfg.Region, time.Now())
}
