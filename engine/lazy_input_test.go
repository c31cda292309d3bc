package engine_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/arbiter-mcp/arbiter/engine"
)

// callsPolicy reads input.session.calls (and the subject and operation, Lazy objects too) in
// every way a policy can: member by member, through object.get with a key and with paths
// (empty, through a missing server, a call with no tool), is_object, and whole (count,
// iteration, comparison, sort, a value of the answer). Each fact has a default, so a decision
// is always allowed and carries them all.
const callsPolicy = `package mcp

default total := "none"
total := input.session.calls.total

default srv := "none"
srv := object.get(input, ["session", "calls", "by_server", input.server.id], 0)

default tool := "none"
tool := object.get(input.session.calls.by_tool, [input.server.id, input.operation.tool], 0)

default tools := "none"
tools := object.get(input.session.calls.by_tool, input.server.id, {})

default empty_path := "none"
empty_path := object.get(input.session.calls, [], null)

default objs := "none"
objs := [is_object(input.session.calls.by_tool), is_object(input.subject), is_object(input.operation), is_object(input.session)]

default servers := "none"
servers := [s | some s, _ in input.session.calls.by_server]

default pairs := "none"
pairs := sort([[s, t, n] | some s, ts in input.session.calls.by_tool; some t, n in ts])

default n := "none"
n := [count(input.session.calls.by_tool), count(input.session.calls.by_server), count(input.session.calls), count(input.subject)]

default same := "none"
same := input.session.calls.by_tool == {"fs": {"read": 2}}

default less := "none"
less := sort([input.session.calls.by_server, {"fs": 2}, {}])

default keys := "none"
keys := object.keys(input.session.calls.by_tool)

default js := "none"
js := json.marshal(input.session.calls)

decision := {"result": "allow", "obligations": {"facts": {
	"total": total, "srv": srv, "tool": tool, "tools": tools, "empty_path": empty_path, "objs": objs,
	"servers": servers, "pairs": pairs, "n": n, "same": same, "less": less, "keys": keys, "json": js,
	"calls": object.get(input, ["session", "calls"], null), "subject": input.subject, "operation": object.get(input, "operation", null),
}}}
`

// partialCallsPolicy reads parts of input.session.calls only (so the calls object holds only
// what is read) and the session's other members whole.
const partialCallsPolicy = `package mcp

default tools := "none"
tools := object.get(input, ["session", "calls", "by_tool", input.server.id], {})

default n := "none"
n := count(input.session.calls.by_server)

default labels := "none"
labels := input.session.labels

default st := "none"
st := [input.session.status, input.session.renewals]

decision := {"result": "allow", "obligations": {"facts": {"tools": tools, "n": n, "labels": labels, "st": st}}}
`

// TestLazyInputAgreesWithTopdown: decisions through the engine's Lazy input (input.session and
// its calls kept across decisions, the subject and operation made per request) answer as
// topdown does on the input made whole, call after call.
func TestLazyInputAgreesWithTopdown(t *testing.T) {
	for name, src := range map[string]string{"whole": callsPolicy, "partial": partialCallsPolicy} {
		t.Run(name, func(t *testing.T) { lazyInputAgrees(t, src) })
	}
}

func lazyInputAgrees(t *testing.T, src string) {
	var engines [2]*engine.Engine
	for i, ev := range []string{engine.EvaluatorIR, engine.EvaluatorTopdown} {
		e, err := engine.New(context.Background(), engine.Config{HistoryLimit: 3, Evaluator: ev}, policyFrom(t, "calls", map[string]string{"p.rego": src}))
		if err != nil {
			t.Fatal(err)
		}
		if got, why := e.Evaluator(); got != ev {
			t.Fatalf("engine %d decides with %s (%s), want %s", i, got, why, ev)
		}
		engines[i] = e
	}
	var ids [2]string
	for i, e := range engines {
		ids[i] = openSession(t, e)
	}
	steps := []struct{ server, method, tool string }{
		{"fs", "tools/call", "read"}, {"fs", "tools/call", "read"}, {"git", "tools/call", "log"},
		{"docs", "resources/read", ""}, {"fs", "tools/call", "write"}, {"docs", "tools/call", "search"},
		{"fs", "tools/call", "read"}, {"fs", "prompts/get", ""}, {"aaa", "tools/call", ""},
	}
	for step, s := range steps {
		// Each step decides twice: the second decision of a step takes the session's input
		// as the first left it, where nothing was recorded in between (a listing).
		for _, list := range []bool{true, false} {
			var got [2]string
			for i, e := range engines {
				req := call(ids[i], s.tool)
				req.Server.ID, req.Operation.Method = s.server, s.method
				req.Subject.Attributes = map[string]any{"team": "x", "level": 3}
				var facts any
				if list {
					f, err := e.FilterTools(context.Background(), req, []engine.Tool{{Name: "t" + s.tool}})
					if err != nil {
						t.Fatal(err)
					}
					facts = f.Tools
				} else {
					d := mustDecide(t, e, req)
					if d.Outcome != engine.Allow {
						t.Fatalf("step %d: engine %d: %+v", step, i, d)
					}
					facts = d.Obligations["facts"]
				}
				b, _ := json.Marshal(facts)
				got[i] = string(b)
			}
			if got[0] != got[1] {
				t.Errorf("step %d (%v, listing %v):\nplan    %s\ntopdown %s", step, s, list, got[0], got[1])
			}
		}
	}
}

// TestLazySessionReadConcurrently: listings (which take no session lock) and calls in one
// session read its kept input.session at once, with both evaluators (topdown makes it whole,
// the plan reads it member by member and whole); run it under -race.
func TestLazySessionReadConcurrently(t *testing.T) {
	for _, ev := range []string{engine.EvaluatorIR, engine.EvaluatorTopdown} {
		e, err := engine.New(context.Background(), engine.Config{HistoryLimit: 3, Evaluator: ev}, policyFrom(t, "calls", map[string]string{"p.rego": partialCallsPolicy}))
		if err != nil {
			t.Fatal(err)
		}
		id := openSession(t, e)
		mustDecide(t, e, call(id, "read"))
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 30 {
					req := call(id, "read")
					if g%2 == 0 {
						if _, err := e.FilterTools(context.Background(), req, []engine.Tool{{Name: "read"}}); err != nil {
							t.Error(err)
						}
						continue
					}
					if i%3 == 0 {
						if _, err := e.Decide(context.Background(), req); err != nil {
							t.Error(err)
						}
					}
				}
			})
		}
		wg.Wait()
	}
}
