package controller

import (
	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LedgerOps returns, for the Serving and NotServing events among evs, the
// SLA ledger entries that record them, to be written in the same
// transaction as the status change (so the ledger has each change exactly
// once, whoever commits it and however often it is retried). in is the
// instance as it will be written.
func LedgerOps(s *store.Store, in *api.Instance, evs ...api.Event) []clientv3.Op {
	var ops []clientv3.Op
	for _, ev := range evs {
		if ev.Kind != api.KindInstance && ev.Kind != "" {
			continue
		}
		var e api.LedgerEntry
		switch ev.Type {
		case "Serving":
			e.Serving = true
		case "NotServing":
			e.Cause = ev.Cause
			if e.Cause == "" {
				e.Cause = NotServingCause(in, "")
			}
		default:
			continue
		}
		e.Time, e.Instance, e.Customer, e.Node = ev.Time, in.Name, in.Spec.Owner, ev.Node
		if e.Node == "" {
			e.Node = in.Status.Node
		}
		ops = append(ops, s.LedgerOp(e))
	}
	return ops
}

// NotServingCause says why an instance the control plane sees stop
// serving does so, from its state: the customer asked for it (or its
// guest shut itself down), it is migrating, its VM is not running
// (phase, as reported), or its guest does not answer its probe.
func NotServingCause(in *api.Instance, phase api.Phase) string {
	if phase == "" {
		phase = in.Status.Phase
	}
	switch {
	case in.Spec.State == api.DesiredStopped || in.Status.Deleting:
		return api.CauseCustomerStop
	case in.Status.Migration != nil:
		return api.CauseMigration
	case phase != api.PhaseRunning:
		return api.CauseCrash
	}
	return api.CauseNotAnswering
}
