package irexec

import "github.com/open-policy-agent/opa/v1/ast"

// CacheEverything makes New keep the values of every function it can, however small, until
// restore is called.
func CacheEverything() (restore func()) {
	old := minCachedSize
	minCachedSize = 0
	return func() { minCachedSize = old }
}

// IsWhole reports whether t, a Lazy's term, has been made whole.
func IsWhole(t *ast.Term) bool { return t.Value.(*Lazy).whole.Load() != nil }

// KeptValues counts the functions p's plans call, those of them that keep values across runs,
// and the lookups and hits of their caches so far (while on trial, see fnCache.counted).
func KeptValues(p *Program) (funcs, keeping int, lookups, hits int64) {
	for _, fn := range funcsOf(p) {
		funcs++
		if fn.cache != nil {
			keeping++
			lookups += fn.cache.lookups.Load()
			hits += fn.cache.hits.Load()
		}
	}
	return funcs, keeping, lookups, hits
}

// funcsOf lists the functions p's plans call.
func funcsOf(p *Program) []*function {
	var out []*function
	seen := map[*function]bool{}
	var walk func(blocks []block)
	walk = func(blocks []block) {
		for _, b := range blocks {
			for i := range b {
				walk(b[i].blocks)
				if fn := b[i].fn; fn != nil && !seen[fn] {
					seen[fn] = true
					out = append(out, fn)
					walk(fn.blocks)
				}
			}
		}
	}
	for _, pl := range p.plans {
		walk(pl.blocks)
	}
	return out
}
