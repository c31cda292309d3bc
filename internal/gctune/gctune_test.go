package gctune

import "testing"

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		live  uint64
		limit int
		want  int
	}{
		{0, 400, 400},         // nothing measured yet
		{13 * mib, 400, 400},  // a small heap: the full percent
		{64 * mib, 400, 400},  // 256 MiB of growth is exactly 400%
		{128 * mib, 400, 200}, // then the percent keeps the growth at 256 MiB
		{256 * mib, 400, 100}, // never below the standard 100
		{854 * mib, 400, 100}, // a million sessions
		{13 * mib, 100, 100},  // --gogc 100 stays 100
		{13 * mib, 50, 50},    // and a lower setting is kept as given
		{1 * mib, 2000, 2000}, // a higher ceiling is honoured on a tiny heap
		{512 * mib, 2000, 100},
	}
	for _, c := range cases {
		if got := PercentFor(c.live, c.limit); got != c.want {
			t.Errorf("PercentFor(%d MiB, %d) = %d, want %d", c.live/mib, c.limit, got, c.want)
		}
	}
}
