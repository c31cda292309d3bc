package irexec

// CacheEverything makes New keep the values of every function it can, however small, until
// restore is called.
func CacheEverything() (restore func()) {
	old := minCachedSize
	minCachedSize = 0
	return func() { minCachedSize = old }
}
