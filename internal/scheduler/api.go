package scheduler

// NodeReport is what Check found on one node.
type NodeReport struct {
	Name     string    `json:"name"`
	Capacity Resources `json:"capacity"`
	// Used is what the node's primaries take, plus its replicas' disks.
	Used Resources `json:"used"`
	// Reserve is what the node must keep free to take the instances that
	// fail over onto it when the worst single other node dies.
	Reserve Resources `json:"reserve"`
	// Primaries and Secondaries count the instances it runs and replicates.
	Primaries   int `json:"primaries"`
	Secondaries int `json:"secondaries"`
	// N1Fail says the node could not take over the instances of some other
	// node that died; N1Reason says which node and by how much.
	N1Fail   bool   `json:"n1Fail,omitempty"`
	N1Reason string `json:"n1Reason,omitempty"`
	// Over says more is allocated than the node has (after overcommit).
	Over       bool   `json:"overAllocated,omitempty"`
	OverReason string `json:"overReason,omitempty"`
	Offline    bool   `json:"offline,omitempty"`
}

// CheckReport is the verdict on a whole cluster, as hcheck gives it.
type CheckReport struct {
	Nodes      []NodeReport `json:"nodes"`
	Instances  int          `json:"instances"`
	N1Failures int          `json:"n1Failures"`
	Over       int          `json:"overAllocated"`
	// Conflicts counts instances sharing a primary with another instance
	// of their anti-affinity group.
	Conflicts int `json:"conflicts"`
	// Unprotected counts replicated instances whose primary or secondary
	// is offline or missing.
	Unprotected int     `json:"unprotected"`
	Score       float64 `json:"score"`
}

// OK reports whether the cluster has no problem at all.
func (r CheckReport) OK() bool {
	return r.N1Failures == 0 && r.Over == 0 && r.Conflicts == 0 && r.Unprotected == 0
}

// Placement is where Allocate put an instance.
type Placement struct {
	Primary   string `json:"primary"`
	Secondary string `json:"secondary,omitempty"`
	// ScoreAfter is the cluster score with the instance placed.
	ScoreAfter float64 `json:"scoreAfter"`
}

// AllocateOptions tune one allocation.
type AllocateOptions struct {
	// Force places the instance even when no placement keeps N+1 (never
	// beyond capacity).
	Force bool
}

// RefusalError says why an instance fits nowhere, with the largest size of
// the limiting resource that would have fitted.
type RefusalError struct {
	// Resource is what ran out: "cpu", "memory", "disk", "nodes" (too few
	// eligible nodes) or "spread" (placement rules).
	Resource string
	Message  string
}

func (e *RefusalError) Error() string { return e.Message }

// CapacityReport says how many more instances of one size fit.
type CapacityReport struct {
	Size Resources `json:"size"`
	// Fit is how many more instances of Size fit while keeping N+1.
	Fit int `json:"fit"`
	// Limit is the resource that ran out first ("memory", "cpu", "disk",
	// "nodes", "spread"); Reason says it in words.
	Limit  string `json:"limit"`
	Reason string `json:"reason"`
	// ScoreAfter is the cluster score once they are all placed.
	ScoreAfter float64 `json:"scoreAfter"`
}

// RebalanceOptions bound a rebalance plan.
type RebalanceOptions struct {
	// MaxMoves stops the plan after that many moves (0: no limit).
	MaxMoves int
	// MinGain stops the plan when the best move improves the score by
	// less than this; default 0.01.
	MinGain float64
}

// Plan is a sequence of moves and what it achieves.
type Plan struct {
	ScoreBefore float64 `json:"scoreBefore"`
	ScoreAfter  float64 `json:"scoreAfter"`
	N1Before    int     `json:"n1FailuresBefore"`
	N1After     int     `json:"n1FailuresAfter"`
	Moves       []Move  `json:"moves"`
	// Bytes is what all the moves copy.
	Bytes int64 `json:"bytes"`
}
