package engine

import (
	"fmt"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestNameTermsAreSharedAndBounded(t *testing.T) {
	var names nameTerms
	if a, b := names.term("github"), names.term("github"); a != b || !a.Equal(ast.StringTerm("github")) {
		t.Fatalf("one name gave %v and %v, not one shared term", a, b)
	}
	if a, b := (*nameTerms)(nil).term("github"), (*nameTerms)(nil).term("github"); a == b {
		t.Error("without a cache, terms are shared")
	}
	for i := range maxNameTerms + 10 {
		names.term(fmt.Sprint("tool-", i))
	}
	if len(names.m) != maxNameTerms {
		t.Errorf("the cache holds %d names, want at most %d", len(names.m), maxNameTerms)
	}
	if got := names.term("one more"); !got.Equal(ast.StringTerm("one more")) {
		t.Errorf("past the bound: %v", got)
	}
	if arr := names.terms([]string{"github", "fs"}); arr.Value.(*ast.Array).Elem(0) != names.term("github") {
		t.Error("an array of names does not share the names' terms")
	}
}
