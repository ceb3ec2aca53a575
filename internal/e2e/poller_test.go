package e2e

import (
	"testing"
	"time"
)

func TestLongestGap(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	ans := func(sent, at, counter int) poll {
		return poll{sent: ms(sent), at: ms(at), ok: true, ans: DemoAnswer{Counter: counter}}
	}
	miss := func(sent, at int) poll { return poll{sent: ms(sent), at: ms(at)} }
	tests := []struct {
		name    string
		log     []poll
		since   int
		longest time.Duration
		from    time.Time
		answers int
		last    int
	}{
		{name: "no answers", log: []poll{miss(0, 250)}, since: 0, from: ms(0)},
		{name: "steady", log: []poll{ans(0, 5, 1), ans(50, 55, 2), ans(100, 105, 3)}, since: 0,
			longest: 50 * time.Millisecond, from: ms(5), answers: 3, last: 3},
		{name: "the first gap counts from since", log: []poll{ans(0, 400, 1)}, since: 0,
			longest: 400 * time.Millisecond, from: ms(0), answers: 1, last: 1},
		{
			// Requests sent during the outage fail; the gap runs from the
			// last answer before it to the first after, whenever those
			// requests were sent.
			name: "outage",
			log: []poll{ans(0, 5, 1), ans(50, 55, 2), miss(100, 350), miss(150, 400),
				ans(120, 300, 3), ans(200, 205, 4), ans(250, 255, 5)},
			since: 0, longest: 150 * time.Millisecond, from: ms(55), answers: 5, last: 3,
		},
		{name: "answers before since are ignored", log: []poll{ans(0, 5, 1), ans(900, 905, 2)}, since: 800,
			longest: 105 * time.Millisecond, from: ms(800), answers: 1, last: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := longestGap(tt.log, ms(tt.since))
			if g.Longest != tt.longest || !g.From.Equal(tt.from) || g.Answers != tt.answers || g.Last.Counter != tt.last {
				t.Errorf("longestGap = {%v from %v, %d answers, last %d}, want {%v from %v, %d, %d}",
					g.Longest, g.From.Sub(t0), g.Answers, g.Last.Counter, tt.longest, tt.from.Sub(t0), tt.answers, tt.last)
			}
		})
	}
}
