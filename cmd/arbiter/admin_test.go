package main

import (
	"flag"
	"io"
	"slices"
	"testing"
)

// Positional arguments move after the flags; a boolean flag such as --tls takes no value, so
// the argument after it stays where it belongs.
func TestReorder(t *testing.T) {
	fs := flag.NewFlagSet("approvals", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var rf remoteFlags
	rf.register(fs)
	cases := []struct{ in, want []string }{
		{[]string{"apr_1", "-o", "json"}, []string{"-o", "json", "--", "apr_1"}},
		{[]string{"--tls", "apr_1"}, []string{"--tls", "--", "apr_1"}},
		{[]string{"--tls", "-o", "json", "apr_1"}, []string{"--tls", "-o", "json", "--", "apr_1"}},
		{[]string{"apr_1", "--tls", "--addr", "h:1"}, []string{"--tls", "--addr", "h:1", "--", "apr_1"}},
		{[]string{"--tls=false", "apr_1"}, []string{"--tls=false", "--", "apr_1"}},
		{[]string{"-h", "apr_1"}, []string{"-h", "--", "apr_1"}},
		{[]string{"-o", "json"}, []string{"-o", "json"}},
		{[]string{"--", "-o"}, []string{"--", "-o"}},
	}
	for _, c := range cases {
		if got := reorder(fs, c.in); !slices.Equal(got, c.want) {
			t.Errorf("reorder(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if err := fs.Parse(reorder(fs, []string{"apr_1", "--tls", "-o", "json"})); err != nil || !rf.tls || rf.output != "json" || fs.Arg(0) != "apr_1" || fs.NArg() != 1 {
		t.Errorf("parse: %v tls=%v output=%q args=%q", err, rf.tls, rf.output, fs.Args())
	}
}
