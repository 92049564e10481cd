package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/policy"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Work with the field-ownership policy"}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate [file]",
		Short: "Validate a policy file; each problem is reported with file, line and field",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "config/policy.yaml"
			if len(args) == 1 {
				path = args[0]
			}
			p, err := policy.Load(path)
			if err != nil {
				var errs policy.Errors
				if errors.As(err, &errs) {
					for _, e := range errs {
						fmt.Fprintln(cmd.OutOrStdout(), e.Error())
					}
					return fmt.Errorf("%s: %d problem(s)", path, len(errs))
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid (version %s)\n", path, p.Version())
			return nil
		},
	})
	return cmd
}
