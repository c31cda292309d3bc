package engine

import (
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/arbiter-mcp/arbiter/engine/irexec"
	"github.com/arbiter-mcp/arbiter/engine/state"
)

// The objects of the input a decision makes anew (the document itself, input.subject,
// input.operation, input.session and its calls) are irexec.Lazy objects: the plan executor
// looks their members up one by one and makes an ast.Object of one only where the policy
// takes it whole (see irexec.Lazy). For topdown, evalQuery makes the whole document first.
// The objects shared between requests (a client, a server, a credential, tool annotations)
// are made once and cached, so they stay ast.Objects.

// lazyInput is t with every object reached from it through objects alone (all of whose keys
// are strings) made a Lazy, as a decision's input is: for checking a plan on a request written
// as one document.
func lazyInput(t *ast.Term) *ast.Term {
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return t
	}
	items := make([][2]*ast.Term, 0, obj.Len())
	for _, k := range obj.Keys() {
		if _, ok := k.Value.(ast.String); !ok {
			return t
		}
		items = append(items, ast.Item(k, lazyInput(obj.Get(k))))
	}
	return newLazyItems(items)
}

// lazyTerm is a Lazy and its term, for a struct to hold in its own memory.
type lazyTerm struct {
	term ast.Term
	lazy irexec.Lazy
}

// lazyItems is an object of given members as a Lazy, the members in buf (an array of
// members, sized by newLazyItems) when they fit. Its keys are string terms, distinct.
type lazyItems[A any] struct {
	lazyTerm
	items [][2]*ast.Term
	buf   A
}

// newLazyItems returns a Lazy of items (copied).
func newLazyItems(items [][2]*ast.Term) *ast.Term {
	switch {
	case len(items) <= 4: // input.subject, most operations
		o := &lazyItems[[4][2]*ast.Term]{}
		o.items = append(o.buf[:0], items...)
		return o.lazy.Init(&o.term, o)
	case len(items) <= 12: // the document, input.session
		o := &lazyItems[[12][2]*ast.Term]{}
		o.items = append(o.buf[:0], items...)
		return o.lazy.Init(&o.term, o)
	}
	o := &lazyItems[struct{}]{items: append([][2]*ast.Term(nil), items...)}
	return o.lazy.Init(&o.term, o)
}

func (o *lazyItems[A]) Member(key string) *ast.Term {
	for i := range o.items {
		if string(o.items[i][0].Value.(ast.String)) == key {
			return o.items[i][1]
		}
	}
	return nil
}

func (o *lazyItems[A]) Members() [][2]*ast.Term { return o.items }

// callsObject is input.session.calls of a usage, of what r reads: total, by_server (a Lazy
// over the counts, see byServer) and by_tool (see byTool). A decision in the default policy
// reads the total and one server's count; the objects of the others are never made.
type callsObject struct {
	calls, byServer, byTool lazyTerm
	names                   *nameTerms
	r                       *inputReads
	// total, counts: the usage's; counts are sorted by server, then tool, so each server's
	// counts are one run of them.
	total  uint64
	counts []state.CallCount
}

// newCallsObject returns input.session.calls of u, of what r (not nil) reads.
func newCallsObject(names *nameTerms, u *state.Usage, r *inputReads) *ast.Term {
	c := &callsObject{names: names, r: r, total: u.Total, counts: u.Calls}
	c.byServer.lazy.Init(&c.byServer.term, (*byServer)(c))
	c.byTool.lazy.Init(&c.byTool.term, (*byTool)(c))
	return c.calls.lazy.Init(&c.calls.term, c)
}

func (c *callsObject) Member(key string) *ast.Term {
	switch {
	case key == "total" && c.r.has(keyTotal):
		return countTerm(c.total)
	case key == "by_server" && c.r.has(keyByServer):
		return &c.byServer.term
	case key == "by_tool" && c.r.has(keyByTool):
		return &c.byTool.term
	}
	return nil
}

func (c *callsObject) Members() [][2]*ast.Term {
	var items [][2]*ast.Term
	for _, k := range [...]*ast.Term{keyTotal, keyByServer, keyByTool} {
		if v := c.Member(string(k.Value.(ast.String))); v != nil {
			items = append(items, ast.Item(k, v))
		}
	}
	return items
}

// run returns the counts of server, empty when it has none.
func (c *callsObject) run(server string) []state.CallCount {
	i := 0
	for i < len(c.counts) && c.counts[i].Server < server {
		i++
	}
	j := i
	for j < len(c.counts) && c.counts[j].Server == server {
		j++
	}
	return c.counts[i:j]
}

// runs calls f with each server's counts, in order.
func (c *callsObject) runs(f func(run []state.CallCount)) {
	for i := 0; i < len(c.counts); {
		j := i
		for j < len(c.counts) && c.counts[j].Server == c.counts[i].Server {
			j++
		}
		f(c.counts[i:j])
		i = j
	}
}

// byServer is input.session.calls.by_server: each server the session called, with how many
// calls it made to it.
type byServer callsObject

func (b *byServer) Member(server string) *ast.Term {
	run := (*callsObject)(b).run(server)
	if len(run) == 0 {
		return nil
	}
	return countTerm(sum(run))
}

func (b *byServer) Members() [][2]*ast.Term {
	var items [][2]*ast.Term
	(*callsObject)(b).runs(func(run []state.CallCount) {
		items = append(items, ast.Item(b.names.term(run[0].Server), countTerm(sum(run))))
	})
	return items
}

func sum(run []state.CallCount) uint64 {
	var n uint64
	for _, c := range run {
		n += c.N
	}
	return n
}

// byTool is input.session.calls.by_tool: each server whose tools the session called, with
// an object of those tools and how often each was called (see serverTools).
type byTool callsObject

func (b *byTool) Member(server string) *ast.Term {
	return newServerTools(b.names, (*callsObject)(b).run(server))
}

func (b *byTool) Members() [][2]*ast.Term {
	var items [][2]*ast.Term
	(*callsObject)(b).runs(func(run []state.CallCount) {
		if t := newServerTools(b.names, run); t != nil {
			items = append(items, ast.Item(b.names.term(run[0].Server), t))
		}
	})
	return items
}

// serverTools is one server's object of input.session.calls.by_tool: its tools called, and
// how often. Its counts without a tool (calls that were not tools/call) are not in it.
type serverTools struct {
	lazyTerm
	names *nameTerms
	run   []state.CallCount
}

// newServerTools returns the by_tool object of a server's counts, nil when none names a tool.
func newServerTools(names *nameTerms, run []state.CallCount) *ast.Term {
	for _, c := range run {
		if c.Tool != "" {
			s := &serverTools{names: names, run: run}
			return s.lazy.Init(&s.term, s)
		}
	}
	return nil
}

func (s *serverTools) Member(tool string) *ast.Term {
	if tool == "" {
		return nil
	}
	for _, c := range s.run {
		if c.Tool == tool {
			return countTerm(c.N)
		}
	}
	return nil
}

func (s *serverTools) Members() [][2]*ast.Term {
	var items [][2]*ast.Term
	for _, c := range s.run {
		if c.Tool != "" {
			items = append(items, ast.Item(s.names.term(c.Tool), countTerm(c.N)))
		}
	}
	return items
}
