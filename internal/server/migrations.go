package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/controller"
	"github.com/ferrycluster/ferry/internal/store"
)

// Migrations: the API's half. A user's request is checked and recorded by
// controller.PlanMigration, as the drains of the leader's controller are;
// the agents' reports move it through its phases here, each in one etcd
// transaction with the operation's record (see controller/migrate.go).

// progressEvery is how often a live transfer's progress is written to its
// operation at most; the reports in between are answered and dropped.
const progressEvery = time.Second

// optionalBody decodes a JSON body into v unless there is none; it writes
// the error answer itself and returns false on a bad body.
func optionalBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.ContentLength == 0 {
		return true
	}
	return decodeBody(w, r, v)
}

// refusal answers a migration that cannot start: 400 for a bad request,
// 409 otherwise.
func refusal(w http.ResponseWriter, ref *controller.Refusal) {
	if ref.Invalid {
		writeError(w, http.StatusBadRequest, "invalid", ref.Field, ref.Message)
		return
	}
	writeError(w, http.StatusConflict, "conflict", ref.Field, ref.Message)
}

// migrateInstance starts a migration (202 with its operation).
func (s *Server) migrateInstance(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.MigrateRequest
	if !optionalBody(w, r, &req) {
		return
	}
	if err := req.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	ctx := r.Context()
	user := userFrom(ctx)
	for attempt := 0; attempt < 20; attempt++ {
		v, err := controller.LoadMigrationView(ctx, s.store, s.policy())
		if err != nil {
			s.internalError(w, err)
			return
		}
		var in *api.Instance
		for _, i := range v.Instances {
			if i.Name == name {
				in = i
			}
		}
		if in == nil {
			s.storeError(w, "instance", name, store.ErrNotFound)
			return
		}
		st, err := controller.PlanMigration(v, in, req, controller.MigrateOptions{Cause: "requested by " + user, Now: s.cfg.Now()})
		var ref *controller.Refusal
		if errors.As(err, &ref) {
			refusal(w, ref)
			return
		}
		if err != nil {
			s.internalError(w, err)
			return
		}
		_, err = st.Commit(ctx, s.store, nil)
		if errors.Is(err, store.ErrConflict) {
			continue // the instance (or the operation's name) was taken meanwhile
		}
		if err != nil {
			s.internalError(w, err)
			return
		}
		s.log.Info("migration started", "operation", st.Operation.Name, "instance", name, "from", st.Operation.From, "to", st.Operation.To, "mode", st.Operation.Mode, "by", user)
		writeJSON(w, http.StatusAccepted, st.Operation)
		return
	}
	s.storeError(w, "instance", name, store.ErrConflict)
}

// migOutcome is what a migration report does: the changes to write (to
// the instance and its operation, or to the operation alone) and the
// answer (409 with conflict, else 200).
type migOutcome struct {
	write    bool
	opOnly   bool
	conflict string
	events   []api.Event
}

// reportMigration applies an agent's migration report.
func (s *Server) reportMigration(w http.ResponseWriter, r *http.Request) {
	node := nodeFrom(r.Context())
	name := r.PathValue("name")
	var rep api.MigrationReport
	if !decodeBody(w, r, &rep) {
		return
	}
	if err := rep.Validate(); err != nil {
		badRequest(w, err)
		return
	}
	ctx := r.Context()
	for attempt := 0; attempt < 50; attempt++ {
		in, err := s.store.Instances.Get(ctx, name)
		if err != nil {
			s.storeError(w, "instance", name, err)
			return
		}
		op, err := s.store.Operations.Get(ctx, rep.Operation)
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusConflict, "conflict", "operation", fmt.Sprintf("operation %q not found: no such migration of %q", rep.Operation, name))
			return
		}
		if err != nil {
			s.internalError(w, err)
			return
		}
		if op.Instance != name || op.Type != api.OpMigrate {
			writeError(w, http.StatusConflict, "conflict", "operation", fmt.Sprintf("operation %q is not a migration of %q", rep.Operation, name))
			return
		}
		out := applyMigrationReport(in, op, node, rep, s.cfg.Now().UTC())
		switch {
		case out.opOnly:
			// Progress: dropped if someone wrote the operation meanwhile.
			if err := s.store.Operations.Update(ctx, op); err != nil && !errors.Is(err, store.ErrConflict) {
				s.storeError(w, "operation", op.Name, err)
				return
			}
		case out.write:
			for i := range out.events {
				out.events[i].Kind, out.events[i].Name = api.KindInstance, name
				if out.events[i].Node == "" {
					out.events[i].Node = node
				}
			}
			err := controller.CommitMigrationChange(ctx, s.store, name, in, op, out.events...)
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			if err != nil {
				s.internalError(w, err)
				return
			}
			s.log.Info("migration report", "operation", op.Name, "node", node, "phase", rep.Phase, "state", op.State, "migration", migPhase(in))
		}
		if out.conflict != "" {
			writeError(w, http.StatusConflict, "conflict", "", out.conflict)
			return
		}
		writeJSON(w, http.StatusOK, in)
		return
	}
	s.storeError(w, "instance", name, store.ErrConflict)
}

func migPhase(in *api.Instance) string {
	if m := in.Status.Migration; m != nil {
		return m.Phase
	}
	return "-"
}

// applyMigrationReport folds a report from node into the instance and the
// operation of its migration, and says what to write and answer.
func applyMigrationReport(in *api.Instance, op *api.Operation, node string, rep api.MigrationReport, now time.Time) migOutcome {
	m := in.Status.Migration
	conflict := func(format string, args ...any) migOutcome {
		return migOutcome{conflict: fmt.Sprintf(format, args...)}
	}
	step := func(name, msg string) {
		op.Steps = append(op.Steps, api.OperationStep{Name: name, At: now, Message: msg})
	}
	if m == nil || m.Operation != op.Name {
		// A retry whose first answer was lost, after what it did.
		switch {
		case rep.Phase == api.MigReportResumed && op.Step(api.StepResumed) != nil && in.Status.Node == node:
			return migOutcome{}
		case (rep.Phase == api.MigReportTransferred || rep.Phase == api.MigReportStopped) && op.Step(api.StepSwitched) != nil &&
			node == op.From && (op.State == api.OpRunning || op.State == api.OpSucceeded):
			return migOutcome{}
		}
		how := "it is no longer in flight"
		if op.State != api.OpRunning {
			how = "it ended: " + op.State
			if op.Message != "" {
				how += ", " + op.Message
			}
		}
		return conflict("migration %s of %s is not in flight (%s)", op.Name, in.Name, how)
	}
	isSrc, isTgt := node == m.Source, node == m.Target
	if !isSrc && !isTgt {
		return conflict("node %s takes no part in migration %s (from %s to %s)", node, op.Name, m.Source, m.Target)
	}
	misfit := func() migOutcome {
		who := "target"
		if isSrc {
			who = "source"
		}
		return conflict("a %q report from the %s %s does not fit migration %s (%s, phase %s)", rep.Phase, who, node, op.Name, m.Mode, m.Phase)
	}
	reason := rep.Error
	if reason == "" {
		reason = rep.Message
	}
	if reason == "" {
		reason = "no reason given"
	}
	switch rep.Phase {
	case api.MigReportCopying:
		if !isSrc || !m.Copy || m.Phase != api.MigCopy {
			return misfit()
		}
		if p := op.Progress; p != nil && now.Sub(p.At) < progressEvery && now.After(p.At) {
			return migOutcome{}
		}
		op.Progress = copyProgress(rep, now)
		op.Message = copyText(rep, m.Target)
		return migOutcome{opOnly: true}

	case api.MigReportCopied:
		switch {
		case !isSrc || !m.Copy:
			return misfit()
		case m.Phase != api.MigCopy && op.Step(api.StepCopied) != nil:
			return migOutcome{} // a retry
		case m.Phase != api.MigCopy:
			return misfit()
		}
		op.Progress = copyProgress(rep, now)
		op.Message = ""
		msg := fmt.Sprintf("%s's copy of the disk is in sync (%s sent of %s)", m.Target, api.Bytes(rep.CopySent).Human(), api.Bytes(rep.CopyTotal).Human())
		step(api.StepCopied, msg)
		m.Since = now
		if m.Mode == api.MigrateLive {
			m.Phase = api.MigPrepare
			in.Status.Message = fmt.Sprintf("migrating to %s (live): disk copied, the memory goes next", m.Target)
		} else {
			m.Phase = api.MigStopping
			in.Status.Message = fmt.Sprintf("migrating to %s (cold): disk copied, shutting down on %s", m.Target, m.Source)
		}
		return migOutcome{write: true, events: []api.Event{{Time: now, Type: "MigrationCopied", Message: msg + "; operation " + op.Name}}}

	case api.MigReportReady:
		switch {
		case !isTgt || m.Mode != api.MigrateLive:
			return misfit()
		case m.Phase == api.MigReady && m.URI == rep.URI:
			return migOutcome{} // a retry
		case m.Phase != api.MigPrepare:
			return misfit()
		}
		m.Phase, m.URI, m.Since = api.MigReady, rep.URI, now
		step(api.StepPrepared, fmt.Sprintf("%s waits for the memory at %s", m.Target, rep.URI))
		return migOutcome{write: true, events: []api.Event{{Time: now, Type: "MigrationReady", Message: fmt.Sprintf("%s waits for the memory at %s; %s sends it", m.Target, rep.URI, m.Source)}}}

	case api.MigReportTransferring:
		if !isSrc || m.Phase != api.MigReady {
			return misfit()
		}
		if p := op.Progress; p != nil && now.Sub(p.At) < progressEvery && now.After(p.At) {
			return migOutcome{}
		}
		prev := op.Progress
		op.Progress = &api.MigrationProgress{RAMTotal: rep.RAMTotal, RAMTransferred: rep.RAMTransferred, RAMRemaining: rep.RAMRemaining, At: now}
		keepCopy(op.Progress, prev)
		op.Message = progressText(rep)
		return migOutcome{opOnly: true}

	case api.MigReportStopped, api.MigReportTransferred:
		if !isSrc {
			return misfit()
		}
		if m.Phase == api.MigSwitched {
			return migOutcome{} // a retry: the switch is done
		}
		if rep.Phase == api.MigReportStopped && (m.Mode != api.MigrateCold || m.Phase != api.MigStopping) ||
			rep.Phase == api.MigReportTransferred && (m.Mode != api.MigrateLive || m.Phase != api.MigReady) {
			return misfit()
		}
		return migrationSwitch(in, op, rep, now)

	case api.MigReportResumed:
		if !isTgt || m.Phase != api.MigSwitched {
			return misfit()
		}
		in.Status.Migration = nil
		in.Status.Message = "migrated from " + m.Source
		step(api.StepResumed, "the guest runs on "+m.Target)
		return migOutcome{write: true, events: []api.Event{{Time: now, Type: "MigrationResumed", Message: fmt.Sprintf("the guest runs on %s (%s); operation %s", m.Target, m.Mode, op.Name)}}}

	case api.MigReportFailed:
		if m.Phase == api.MigSwitched {
			if !isTgt {
				return conflict("migration %s switched the disk's primary to %s already: only its target reports now", op.Name, m.Target)
			}
			return migrationSwitchBack(in, op, reason, now)
		}
		if isSrc && m.Mode == api.MigrateLive && m.Phase == api.MigReady && m.Fallback == api.MigFallbackCold && strings.Contains(reason, api.NotConvergedError) {
			m.Mode, m.Phase, m.Since, m.URI = api.MigrateCold, api.MigStopping, now, ""
			op.Mode = api.MigrateCold
			op.Progress = nil
			msg := fmt.Sprintf("the live transfer did not converge (%s); going on cold: %s shuts the guest down", reason, m.Source)
			step(api.StepFallback, msg)
			in.Status.Message = fmt.Sprintf("migrating to %s (cold, after the live transfer did not converge)", m.Target)
			return migOutcome{write: true, events: []api.Event{{Time: now, Type: "MigrationFallback", Message: msg + "; operation " + op.Name}}}
		}
		msg := node + ": " + reason
		controller.EndMigration(in, op, api.OpFailed, msg, now)
		in.Status.Message = fmt.Sprintf("migration to %s failed: %s; it stays on %s", m.Target, msg, m.Source)
		return migOutcome{write: true, events: []api.Event{{Time: now, Type: "MigrationFailed", Message: msg + "; " + in.Name + " stays on " + m.Source + "; operation " + op.Name}}}
	}
	return misfit()
}

// copyProgress is the operation's progress for a disk copy report.
func copyProgress(rep api.MigrationReport, now time.Time) *api.MigrationProgress {
	return &api.MigrationProgress{CopyTotal: rep.CopyTotal, CopyDone: rep.CopyDone, CopySent: rep.CopySent, At: now}
}

// keepCopy carries the disk copy's figures over into the progress of the
// memory transfer that follows it, so the operation keeps both.
func keepCopy(p, prev *api.MigrationProgress) {
	if prev != nil {
		p.CopyTotal, p.CopyDone, p.CopySent = prev.CopyTotal, prev.CopyDone, prev.CopySent
	}
}

// copyText says how a disk copy goes: "copying the disk to host-3: 120 MiB
// of 1.0 GiB covered, 40 MiB sent".
func copyText(rep api.MigrationReport, target string) string {
	return fmt.Sprintf("copying the disk to %s: %s of %s covered, %s sent", target,
		api.Bytes(rep.CopyDone).Human(), api.Bytes(rep.CopyTotal).Human(), api.Bytes(rep.CopySent).Human())
}

// progressText says how a live transfer goes: "sent 120 MiB of 256 MiB,
// 40 MiB left".
func progressText(rep api.MigrationReport) string {
	mib := func(b int64) string { return fmt.Sprintf("%d MiB", (b+(1<<20)-1)>>20) }
	s := "sent " + mib(rep.RAMTransferred)
	if rep.RAMTotal > 0 {
		s += " of " + mib(rep.RAMTotal)
	}
	if rep.RAMRemaining > 0 || rep.RAMTotal > 0 {
		s += ", " + mib(rep.RAMRemaining) + " left"
	}
	return s
}

// migrationSwitch makes the target the disk's primary: the source stopped
// the guest (cold) or handed its memory over (live) and closed its disk
// while in sync. One transaction moves the instance, raises the epoch and
// swaps the roles of a replicated disk.
func migrationSwitch(in *api.Instance, op *api.Operation, rep api.MigrationReport, now time.Time) migOutcome {
	m := in.Status.Migration
	shared := in.Spec.SharedPath() != ""
	if !shared && in.Status.ReplicaOutdated {
		// The source lost its replica meanwhile and wrote without it:
		// the target lacks writes and must not become the primary.
		msg := fmt.Sprintf("the replica on %s fell behind during the migration (outdated under epoch %d); %s stays on %s", m.Target, in.Status.Epoch, in.Name, m.Source)
		controller.EndMigration(in, op, api.OpFailed, msg, now)
		in.Status.Message = "migration failed: " + msg
		return migOutcome{write: true, conflict: msg, events: []api.Event{{Time: now, Type: "MigrationFailed", Message: msg + "; operation " + op.Name}}}
	}
	if in.Status.Node != m.Source {
		msg := fmt.Sprintf("%s is on %s, not on the migration's source %s", in.Name, orDash(in.Status.Node), m.Source)
		controller.EndMigration(in, op, api.OpFailed, msg, now)
		return migOutcome{write: true, conflict: msg, events: []api.Event{{Time: now, Type: "MigrationFailed", Message: msg + "; operation " + op.Name}}}
	}
	var evs []api.Event
	if rep.Phase == api.MigReportStopped {
		op.Steps = append(op.Steps, api.OperationStep{Name: api.StepStopped, At: now, Message: "the guest is shut down on " + m.Source + " and its disk closed"})
	} else {
		msg := fmt.Sprintf("the memory is on %s; the guest was paused for %d ms", m.Target, rep.DowntimeMS)
		if rep.RAMTotal > 0 {
			msg = fmt.Sprintf("%s of memory sent; the guest was paused for %d ms", api.Bytes(rep.RAMTotal).Human(), rep.DowntimeMS)
			prev := op.Progress
			op.Progress = &api.MigrationProgress{RAMTotal: rep.RAMTotal, RAMTransferred: rep.RAMTransferred, RAMRemaining: rep.RAMRemaining, At: now}
			keepCopy(op.Progress, prev)
		}
		op.Steps = append(op.Steps, api.OperationStep{Name: api.StepTransferred, At: now, Message: msg})
		op.DowntimeMS = rep.DowntimeMS
	}
	in.Status.Node = m.Target
	switch {
	case shared:
		in.Status.ReplicaNode = ""
	case m.Copy:
		// The target's copy and the replica are in the same generation:
		// the replica stays, the source's copy goes.
	default:
		in.Status.ReplicaNode = m.Source
	}
	in.Status.Epoch++
	in.Status.ReplicaOutdated = false
	in.Status.Disk = nil
	m.Phase, m.Epoch, m.Since = api.MigSwitched, in.Status.Epoch, now
	op.Epoch = in.Status.Epoch
	sw := fmt.Sprintf("disk primary now %s under epoch %d", m.Target, in.Status.Epoch)
	switch {
	case m.Copy:
		sw += fmt.Sprintf("; its replica stays on %s; %s's copy is dropped", orDash(in.Status.ReplicaNode), m.Source)
	case !shared:
		sw += "; its replica on " + m.Source
	}
	op.Steps = append(op.Steps, api.OperationStep{Name: api.StepSwitched, At: now, Message: sw})
	if m.Mode == api.MigrateCold {
		in.Status.Phase, in.Status.Since = api.PhaseScheduled, now
		in.Status.Message = "migrating: booting on " + m.Target
		if in.Status.Serving {
			in.Status.Serving, in.Status.ServingSince = false, now
			evs = append(evs, api.Event{Time: now, Type: "NotServing", Node: m.Source, Message: "shut down on " + m.Source + " to move to " + m.Target, Cause: api.CauseMigration})
		}
	} else {
		in.Status.Message = "migrating: resuming on " + m.Target
	}
	evs = append(evs, api.Event{Time: now, Type: "MigrationSwitched", Node: m.Target, Message: sw + "; operation " + op.Name})
	return migOutcome{write: true, events: evs}
}

// migrationSwitchBack gives the disk back to the source when the target
// could not run the guest after the switch. The target may have written:
// the source's copy becomes the primary again under a raised epoch, and
// the target's is outdated (it takes a resync).
func migrationSwitchBack(in *api.Instance, op *api.Operation, reason string, now time.Time) migOutcome {
	m := in.Status.Migration
	if m.Copy {
		// The source dropped its copy at the switch: the disk stays on
		// the target, with its replica, and the target boots the guest
		// afresh as after any failed start (or the host fails over).
		msg := fmt.Sprintf("target %s could not resume it: %s; the disk moved there already, so it boots there", m.Target, reason)
		controller.EndMigration(in, op, api.OpFailed, msg, now)
		in.Status.Phase, in.Status.Since = api.PhaseScheduled, now
		in.Status.Message = "migration failed: " + msg
		in.Status.LastError = reason
		return migOutcome{write: true, events: []api.Event{{Time: now, Type: "MigrationFailed", Node: m.Target, Message: msg + "; operation " + op.Name}}}
	}
	shared := in.Spec.SharedPath() != ""
	in.Status.Node = m.Source
	in.Status.ReplicaNode = ""
	if !shared {
		in.Status.ReplicaNode = m.Target
		in.Status.ReplicaOutdated = true
	}
	in.Status.Epoch++
	in.Status.Disk = nil
	in.Status.Phase, in.Status.Since = api.PhaseScheduled, now
	msg := fmt.Sprintf("target %s could not run it: %s; back on %s", m.Target, reason, m.Source)
	back := fmt.Sprintf("disk primary back on %s under epoch %d", m.Source, in.Status.Epoch)
	if !shared {
		back += fmt.Sprintf("; the replica on %s is outdated (it may hold writes the source lacks) and is resynced", m.Target)
	}
	op.Steps = append(op.Steps, api.OperationStep{Name: "switched-back", At: now, Message: back})
	controller.EndMigration(in, op, api.OpFailed, msg, now)
	in.Status.Message = "migration failed: " + msg
	in.Status.LastError = reason
	return migOutcome{write: true, events: []api.Event{{Time: now, Type: "MigrationFailed", Node: m.Source, Message: msg + "; " + back + "; operation " + op.Name}}}
}

// cancelOperation cancels a migration before its switch.
func (s *Server) cancelOperation(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx := r.Context()
	user := userFrom(ctx)
	for attempt := 0; attempt < 20; attempt++ {
		op, err := s.store.Operations.Get(ctx, name)
		if err != nil {
			s.storeError(w, "operation", name, err)
			return
		}
		if op.Type != api.OpMigrate {
			writeError(w, http.StatusBadRequest, "invalid", "", fmt.Sprintf("operation %q is a %s: only migrations can be cancelled", name, op.Type))
			return
		}
		if op.State != api.OpRunning {
			writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("operation %q already ended: %s", name, joinNonEmpty(", ", op.State, op.Message)))
			return
		}
		now := s.cfg.Now().UTC()
		msg := "cancelled by " + user
		in, err := s.store.Instances.Get(ctx, op.Instance)
		switch {
		case errors.Is(err, store.ErrNotFound):
			in = nil
		case err != nil:
			s.internalError(w, err)
			return
		}
		var evs []api.Event
		if in != nil {
			m := in.Status.Migration
			if m == nil || m.Operation != op.Name || m.Phase == api.MigSwitched {
				if op.Step(api.StepSwitched) != nil {
					writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("the disk's primary already moved to %s; the migration completes (see `ferry operation show %s`)", op.To, name))
					return
				}
				writeError(w, http.StatusConflict, "conflict", "", fmt.Sprintf("migration %s is not in flight on %s", name, op.Instance))
				return
			}
			msg += " in phase " + m.Phase
			in.Status.Message = fmt.Sprintf("migration to %s cancelled by %s; it stays on %s", m.Target, user, m.Source)
			evs = append(evs, api.Event{Time: now, Kind: api.KindInstance, Name: in.Name, Node: m.Source, Type: "MigrationCancelled", Message: msg + "; operation " + name})
		}
		controller.EndMigration(in, op, api.OpCancelled, msg, now)
		err = controller.CommitMigrationChange(ctx, s.store, op.Instance, in, op, evs...)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			s.internalError(w, err)
			return
		}
		s.log.Info("migration cancelled", "operation", name, "by", user)
		writeJSON(w, http.StatusOK, op)
		return
	}
	s.storeError(w, "operation", name, store.ErrConflict)
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}
