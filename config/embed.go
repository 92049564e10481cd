// Package config owns crmsync's build-time configuration files and embeds them into the
// binaries that need them, so a deployed worker always runs the policy it was built and tested
// with. Parsing and validation live in shared/policy; this package only carries the bytes.
package config

import _ "embed"

// PolicyYAML is the content of config/policy.yaml, the ownership and conflict policy (design
// section 5). Load it with policy.Parse("config/policy.yaml", config.PolicyYAML).
//
//go:embed policy.yaml
var PolicyYAML []byte

// ReconcileYAML is the content of config/reconcile.yaml: the reconcile jobs' windows, bounds and
// drift SLAs (design section 7). Load it with reconcile.ParseConfig("config/reconcile.yaml",
// config.ReconcileYAML).
//
//go:embed reconcile.yaml
var ReconcileYAML []byte

// CrmRolesYAML is the content of config/crm-roles.yaml: which IAM principals may act in which CRM
// roles on POST /crm/changes. Load it with crmchange.ParsePrincipals("config/crm-roles.yaml",
// config.CrmRolesYAML).
//
//go:embed crm-roles.yaml
var CrmRolesYAML []byte

// TypeformYAML is the content of config/typeform.yaml: per Typeform form, which answers (by field
// ref or question title), hidden fields, variables and score go to which contact or custom field.
// Load it with typeform.ParseMapping("config/typeform.yaml", config.TypeformYAML, policy).
//
//go:embed typeform.yaml
var TypeformYAML []byte
