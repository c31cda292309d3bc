package bundles

import (
	"context"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// runTests runs the Rego unit tests that bundle name carries, through OPA's tester, against
// the policy it would join (p). A failing or erroring test refuses the bundle.
func (m *Manager) runTests(ctx context.Context, name string, b *bundle.Bundle, p Policy) error {
	modules := make(map[string]*ast.Module, len(p.Modules)+4)
	for k, v := range p.Modules {
		modules[k] = v
	}
	tests := 0
	for _, mod := range b.Modules {
		if strings.HasSuffix(mod.Path, "_test.rego") {
			modules[moduleName(name, mod.Path)] = mod.Parsed
			tests++
		}
	}
	if tests == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.TestTimeout)
	defer cancel()
	store := inmem.NewFromObject(p.Data)
	var problems []Problem
	err := storage.Txn(ctx, store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		ch, err := tester.NewRunner().
			SetCompiler(ast.NewCompiler().WithEnablePrintStatements(false)).
			SetStore(store).
			SetModules(modules).
			RaiseBuiltinErrors(true).
			RunTests(ctx, txn)
		if err != nil {
			return err
		}
		for r := range ch {
			if r.Pass() || r.Skip {
				continue
			}
			why := "failed"
			if r.Error != nil {
				why = "errored: " + r.Error.Error()
			}
			problems = append(problems, Problem{Kind: KindTest, File: r.Location.File, Line: r.Location.Row,
				Message: fmt.Sprintf("test %s.%s %s", r.Package, r.Name, why)})
		}
		return nil
	})
	if err != nil {
		return rejected(compileProblems(err)...)
	}
	if len(problems) > 0 {
		return rejected(problems...)
	}
	return nil
}
