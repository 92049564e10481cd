package worker

// operator owns the operator actions: a forced re-run of a recorded event (Replay), recomputing
// a contact from the ledger and restoring it (Rebuild, DiffRebuild, WriteRebuild), and the
// consistency job's re-association of an unassociated activity (Reassociate).
type operator struct {
	*deps
	reader  reader
	applier *applier
}
