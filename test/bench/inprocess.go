package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/arbiter-mcp/arbiter/engine"
)

// Fixture holds what the in-process benchmarks run: an engine on the harness policy with
// warmed-up sessions, and raw OPA on the same policy, data and input documents.
type Fixture struct {
	Engine *engine.Engine
	// reqs[s][k] is template k of Mix in session s.
	reqs   [][]*engine.Request
	filter []*engine.Request
	tools  []engine.Tool
	raw    rego.PreparedEvalQuery
	inputs []ast.Value
	want   []Outcome
	picks  [100]int
}

// NewFixture builds a fixture with sessions warmed-up sessions, whose FilterTools lists
// filterN tools.
func NewFixture(ctx context.Context, sessions, filterN int) (*Fixture, error) {
	cal, err := Calibrate(ctx, filterN)
	if err != nil {
		return nil, err
	}
	p, err := Policy(0)
	if err != nil {
		return nil, err
	}
	e, err := engine.New(ctx, engine.Config{}, p)
	if err != nil {
		return nil, err
	}
	f := &Fixture{Engine: e, want: cal.Want, tools: filterTools(filterN)}
	for i := range f.picks {
		f.picks[i] = pick(i)
	}
	expires := time.Now().Add(2 * time.Hour)
	for s := range sessions {
		id, err := openWarm(ctx, e, s, expires)
		if err != nil {
			return nil, err
		}
		reqs := make([]*engine.Request, len(Mix))
		for k := range Mix {
			if reqs[k], err = Mix[k].EngineRequest(id, s, expires); err != nil {
				return nil, err
			}
		}
		f.reqs = append(f.reqs, reqs)
		f.filter = append(f.filter, toolboxEngineRequest(id, s, expires))
	}

	// Raw OPA as BenchmarkRawOPA in engine/ runs it: prepared once, OPA's default store and
	// result conversion, the engine's exact input documents.
	for _, d := range cal.Docs {
		v, err := ast.InterfaceToValue(d)
		if err != nil {
			return nil, err
		}
		f.inputs = append(f.inputs, v)
	}
	opts := []func(*rego.Rego){rego.Query(engine.DefaultEntrypoint), rego.Store(inmem.NewFromObject(p.Data))}
	for _, m := range p.Modules {
		opts = append(opts, rego.ParsedModule(m))
	}
	if f.raw, err = rego.New(opts...).PrepareForEval(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// Decide makes one decision of the mix in a random session and checks its outcome.
func (f *Fixture) Decide(ctx context.Context, r *rand.Rand) error {
	k := f.picks[r.IntN(100)]
	d, err := f.Engine.Decide(ctx, f.reqs[r.IntN(len(f.reqs))][k])
	if err != nil {
		return err
	}
	if outcomeNamed(string(d.Outcome)) != f.want[k] {
		return fmt.Errorf("%s: %s %v, want %s", Mix[k].Name, d.Outcome, d.Reasons, f.want[k])
	}
	return nil
}

// RawOPA evaluates the input document of one request of the mix with OPA alone.
func (f *Fixture) RawOPA(ctx context.Context, r *rand.Rand) error {
	k := f.picks[r.IntN(100)]
	rs, err := f.raw.Eval(ctx, rego.EvalParsedInput(f.inputs[k]))
	if err != nil {
		return err
	}
	if len(rs) != 1 {
		return fmt.Errorf("%s: %d results", Mix[k].Name, len(rs))
	}
	res, _ := rs[0].Expressions[0].Value.(map[string]any)
	if got, _ := res["result"].(string); outcomeNamed(got) != f.want[k] {
		return fmt.Errorf("%s: %v, want %s", Mix[k].Name, res["result"], f.want[k])
	}
	return nil
}

// FilterTools filters the toolbox's tools in a random session.
func (f *Fixture) FilterTools(ctx context.Context, r *rand.Rand) error {
	req := *f.filter[r.IntN(len(f.filter))]
	out, err := f.Engine.FilterTools(ctx, &req, f.tools)
	if err != nil {
		return err
	}
	if len(out.Tools) != len(f.tools) {
		return fmt.Errorf("%d verdicts for %d tools", len(out.Tools), len(f.tools))
	}
	return nil
}

// InProcessResult is one in-process benchmark.
type InProcessResult struct {
	Name        string
	Goroutines  int
	Ops         uint64
	NsPerOp     float64
	AllocsPerOp float64
	BytesPerOp  float64
	Err         string
}

// OpsPerSec is the throughput of all goroutines together.
func (r InProcessResult) OpsPerSec() float64 {
	if r.NsPerOp == 0 {
		return 0
	}
	return 1e9 / r.NsPerOp
}

// MeasureInProcess runs op from goroutines for d (after a short warm-up) and reports time and
// allocations per operation, wall-clock: with several goroutines, ns/op is elapsed time over
// all operations, so it is the inverse of the combined throughput.
func MeasureInProcess(ctx context.Context, name string, goroutines int, d time.Duration, op func(context.Context, *rand.Rand) error) InProcessResult {
	res := InProcessResult{Name: name, Goroutines: goroutines}
	run := func(dur time.Duration) (uint64, error) {
		var ops atomic.Uint64
		var firstErr atomic.Value
		end := time.Now().Add(dur)
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g)+1, 7))
				n := uint64(0)
				for {
					for range 8 {
						if err := op(ctx, r); err != nil {
							firstErr.CompareAndSwap(nil, err)
							ops.Add(n)
							return
						}
						n++
					}
					if !time.Now().Before(end) {
						break
					}
				}
				ops.Add(n)
			}()
		}
		wg.Wait()
		if err, ok := firstErr.Load().(error); ok {
			return ops.Load(), err
		}
		return ops.Load(), nil
	}
	if _, err := run(min(d/5, 500*time.Millisecond)); err != nil {
		res.Err = err.Error()
		return res
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	n, err := run(d)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		res.Err = err.Error()
	}
	if n == 0 {
		return res
	}
	res.Ops = n
	res.NsPerOp = float64(elapsed.Nanoseconds()) / float64(n)
	res.AllocsPerOp = float64(after.Mallocs-before.Mallocs) / float64(n)
	res.BytesPerOp = float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
	return res
}

// RunInProcess runs the in-process benchmarks: the engine's Decide over the mix (one and
// GOMAXPROCS goroutines), raw OPA on the same documents, and FilterTools over filterN tools.
func RunInProcess(ctx context.Context, d time.Duration, sessions, filterN int) ([]InProcessResult, error) {
	f, err := NewFixture(ctx, sessions, filterN)
	if err != nil {
		return nil, err
	}
	procs := runtime.GOMAXPROCS(0)
	return []InProcessResult{
		MeasureInProcess(ctx, "engine Decide (mix)", 1, d, f.Decide),
		MeasureInProcess(ctx, "raw OPA Eval (mix)", 1, d, f.RawOPA),
		MeasureInProcess(ctx, "engine Decide (mix)", procs, d, f.Decide),
		MeasureInProcess(ctx, "raw OPA Eval (mix)", procs, d, f.RawOPA),
		MeasureInProcess(ctx, fmt.Sprintf("engine FilterTools (%d tools)", len(f.tools)), 1, d, f.FilterTools),
	}, nil
}
