package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/connector"
)

func newSecretsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "secrets", Short: "Install and rotate connector secrets (values are never printed)"}
	cmd.AddCommand(newSecretsRotateCmd())
	return cmd
}

func newSecretsRotateCmd() *cobra.Command {
	var fromFile string
	var finish, asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate <source> (--from-file new.json | --finish)",
		Short: "Install a new connector secret, keeping the old one verifying until --finish",
		Long: `Rotate moves the secret's current value to previous and installs the new one from --from-file
as current: while both are set, deliveries signed with either verify (the webhooks re-read the
secret within SECRET_TTL_SECONDS, 300 s deployed). Switch the vendor to the new value, then run
` + "`crmsync secrets rotate <source> --finish`" + `, which drops previous: from then on only the
new value verifies.

new.json holds the new fields, either flat ({"auth_token": "..."}) or as {"current": {...}}; it
must have every field ` + "`crmsync connect <source>`" + ` lists as required. A rotation already
under way (previous set) must be finished first. Values are never printed or logged.`,
		Example: "  crmsync secrets rotate twilio --from-file new.json\n  crmsync secrets rotate twilio --finish",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			source := args[0]
			g, err := guideFor(source)
			if err != nil {
				return err
			}
			if (fromFile == "") == !finish {
				return errors.New("give either --from-file new.json (start a rotation) or --finish (end it)")
			}
			var next map[string]string
			if fromFile != "" {
				if next, err = readSecretFile(fromFile); err != nil {
					return err
				}
				if missing := missingFields(g, next); len(missing) > 0 {
					return fmt.Errorf("%s: missing required field %s for %s (see `crmsync connect %s`)", fromFile, strings.Join(missing, ", "), source, source)
				}
			}
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			res, ok := ref.Resources[secretLogicalID(source)]
			if !ok || res.Ref == "" {
				return fmt.Errorf("stack %s has no secret for %s (%s)", ref.Name, source, secretLogicalID(source))
			}
			sm := secretsManagerFor(ref)
			ctx := cmd.Context()
			out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(res.Ref)})
			if err != nil {
				return fmt.Errorf("read secret %s: %w", res.Ref, err)
			}
			var cur connector.Secret
			if s := aws.ToString(out.SecretString); s != "" {
				if err := json.Unmarshal([]byte(s), &cur); err != nil {
					return fmt.Errorf("secret %s is not {\"current\": {...}, \"previous\": {...}} JSON", res.Ref)
				}
			}
			var put connector.Secret
			var state string
			switch {
			case finish:
				if len(cur.Previous) == 0 {
					return fmt.Errorf("%s: no rotation under way (previous is empty): nothing to finish", source)
				}
				put, state = connector.Secret{Current: cur.Current}, "finished"
			default:
				if len(cur.Previous) > 0 {
					return fmt.Errorf("%s: a rotation is already under way (previous is set): finish it first with `crmsync secrets rotate %s --finish`", source, source)
				}
				if sameValues(cur.Current, next) {
					return fmt.Errorf("%s: the new value equals the current one: nothing to rotate", source)
				}
				put, state = connector.Secret{Current: next, Previous: cur.Current}, "started"
			}
			b, err := json.Marshal(put)
			if err != nil {
				return err
			}
			if _, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(res.Ref), SecretString: aws.String(string(b))}); err != nil {
				return fmt.Errorf("write secret %s: %w", res.Ref, err)
			}
			slog.Debug("secret rotated", "source", source, "state", state) // names only, never values
			result := rotateResult{Source: source, SecretID: res.Ref, State: state, CurrentFields: fieldNames(put.Current), PreviousFields: fieldNames(put.Previous)}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), result)
			}
			w := cmd.OutOrStdout()
			if state == "started" {
				fmt.Fprintf(w, "%s: new value installed as current (%s); the old one is kept as previous and still verifies\n", res.Ref, strings.Join(result.CurrentFields, ", "))
				fmt.Fprintf(w, "webhooks pick it up within SECRET_TTL_SECONDS (300 s deployed); once %s signs with the new value: crmsync secrets rotate %s --finish\n", source, source)
			} else {
				fmt.Fprintf(w, "%s: previous value dropped; only the current one verifies (within SECRET_TTL_SECONDS)\n", res.Ref)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&fromFile, "from-file", "", "JSON file with the new secret's fields (flat, or {\"current\": {...}})")
	cmd.Flags().BoolVar(&finish, "finish", false, "end the rotation: drop the previous value")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {source, secret_id, state: started|finished, current_fields, previous_fields} (names only)")
	return cmd
}

// rotateResult is the --json document of `secrets rotate`: field names, never values.
type rotateResult struct {
	Source         string   `json:"source"`
	SecretID       string   `json:"secret_id"`
	State          string   `json:"state"`
	CurrentFields  []string `json:"current_fields"`
	PreviousFields []string `json:"previous_fields"`
}

// readSecretFile reads new.json: a flat object of string fields, or {"current": {...}}. Errors
// name the file and the problem, never a value.
func readSecretFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read new secret: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object", path)
	}
	if cur, ok := raw["current"]; ok {
		if _, hasPrev := raw["previous"]; hasPrev {
			return nil, fmt.Errorf("%s: give only the new value (flat, or under \"current\"); rotate keeps the old one as previous", path)
		}
		if err := json.Unmarshal(cur, &raw); err != nil {
			return nil, fmt.Errorf("%s: \"current\" is not a JSON object", path)
		}
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("%s: field %s is not a string", path, k)
		}
		out[k] = s
	}
	return out, nil
}

func sameValues(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func fieldNames(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
