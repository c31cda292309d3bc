package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
)

const testUsage = "usage: arbiter test [PATH...] [--coverage] [--threshold PCT] [--run REGEX] [-v]"

// testOptions are the flags of `arbiter test`.
type testOptions struct {
	paths     []string
	coverage  bool
	threshold float64
	run       string
	verbose   bool
}

// testCmd runs the Rego unit tests (rules named test_*) found under the given paths, as
// `opa test` does: every *.rego file is a module and every *.json and *.yaml file is data,
// mounted at its directory's path. It prints one line per test, the failing expression of each
// failure, and a summary; with --coverage, the share of policy lines (test modules excluded)
// the tests evaluated. It fails when a test fails or errs, when no test is found, and when
// coverage is below --threshold.
func testCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseTestFlags(args, stderr)
	if err != nil {
		return err
	}
	if opts.run != "" {
		if _, err := regexp.Compile(opts.run); err != nil {
			fmt.Fprintf(stderr, "--run: %v\n", err)
			return errUsage
		}
	}

	loaded, err := loader.NewFileLoader().
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		Filtered(opts.paths, hiddenBelowRoot)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	modules := loaded.ParsedModules()
	store, err := loaded.Store()
	if err != nil {
		return fmt.Errorf("load data: %w", err)
	}

	var cov *cover.Cover
	runner := tester.NewRunner().
		SetCompiler(ast.NewCompiler().WithEnablePrintStatements(true).WithDefaultRegoVersion(ast.RegoV1)).
		SetStore(store).
		SetModules(modules).
		EnableTracing(true).
		CapturePrintOutput(true).
		Filter(opts.run)
	if opts.coverage {
		cov = cover.New()
		// Only the baseline figure is reported: the runs that tell why a line was missed
		// (indexing, early exit) would triple the time.
		runner = runner.SetCoverageQueryTracer(cov).SetCoverageRuns(nil)
	}

	var results []*tester.Result
	err = storage.Txn(ctx, store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		ch, err := runner.RunTests(ctx, txn)
		if err != nil {
			return err
		}
		for r := range ch {
			results = append(results, r)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	if len(results) == 0 {
		if opts.run != "" {
			return fmt.Errorf("no tests matching --run %q in %s", opts.run, strings.Join(opts.paths, " "))
		}
		return fmt.Errorf("no tests found in %s: a test is a rule whose name starts with test_", strings.Join(opts.paths, " "))
	}

	// Results arrive as tests finish; report them in source order.
	slices.SortFunc(results, func(a, b *tester.Result) int {
		if c := strings.Compare(a.Location.File, b.Location.File); c != 0 {
			return c
		}
		return a.Location.Row - b.Location.Row
	})
	var passed, failed, errored, skipped int
	for _, r := range results {
		name := r.Package + "." + r.Name
		took := r.Duration.Round(1000).String()
		switch {
		case r.Skip:
			skipped++
			fmt.Fprintf(stdout, "SKIP   %s\n", name)
		case r.Error != nil:
			errored++
			fmt.Fprintf(stdout, "ERROR  %s (%s)\n", name, took)
			fmt.Fprintf(stdout, "       %s:%d: %v\n", r.Location.File, r.Location.Row, r.Error)
		case r.Fail:
			failed++
			fmt.Fprintf(stdout, "FAIL   %s (%s)\n", name, took)
			fmt.Fprintf(stdout, "       %s:%d: test failed\n", r.Location.File, r.Location.Row)
			if at := failedExpr(r.Trace); at != "" {
				fmt.Fprintf(stdout, "       %s\n", at)
			}
			for _, c := range failedCases(r) {
				fmt.Fprintf(stdout, "       case %s failed\n", c)
			}
		default:
			passed++
			fmt.Fprintf(stdout, "PASS   %s (%s)\n", name, took)
		}
		if out := strings.TrimSpace(string(r.Output)); out != "" && (opts.verbose || r.Fail || r.Error != nil) {
			fmt.Fprintf(stdout, "       output:\n         %s\n", strings.ReplaceAll(out, "\n", "\n         "))
		}
		if opts.verbose && r.Fail {
			var trace bytes.Buffer
			topdown.PrettyTraceWithLocation(&trace, r.Trace)
			fmt.Fprintf(stdout, "       trace:\n%s", indentBlock(trace.String(), "         "))
		}
	}

	fmt.Fprintf(stdout, "\n%d passed, %d failed, %d errors, %d skipped, %d tests\n", passed, failed, errored, skipped, len(results))
	var problems []string
	if failed+errored > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d tests failed", failed+errored, len(results)))
	}
	if cov != nil {
		figure := policyCoverage(cov, modules)
		fmt.Fprintf(stdout, "coverage: %.1f%% of %d policy lines (%d not covered; *_test.rego not counted)\n",
			figure.percent, figure.covered+figure.notCovered, figure.notCovered)
		if opts.verbose {
			for _, f := range figure.files {
				fmt.Fprintf(stdout, "  %6.1f%%  %s%s\n", f.percent, f.name, f.missed)
			}
		}
		if opts.threshold > 0 && figure.percent < opts.threshold {
			problems = append(problems, fmt.Sprintf("coverage %.1f%% is below the threshold of %g%%", figure.percent, opts.threshold))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// parseTestFlags reads the flags, which may come before, between or after the paths, as in
// `arbiter test policy/ --coverage`.
func parseTestFlags(args []string, stderr io.Writer) (testOptions, error) {
	var opts testOptions
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, testUsage)
		fs.PrintDefaults()
	}
	fs.BoolVar(&opts.coverage, "coverage", false, "report the share of policy lines the tests evaluate (test modules not counted)")
	fs.Func("threshold", "fail when coverage is below this percentage (implies --coverage)", func(s string) error {
		pct, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || pct < 0 || pct > 100 {
			return errors.New("must be a percentage from 0 to 100")
		}
		opts.threshold = pct
		opts.coverage = true
		return nil
	})
	fs.StringVar(&opts.run, "run", "", "run only the tests whose full name (data.PACKAGE.test_NAME) matches this regular expression")
	fs.BoolVar(&opts.verbose, "v", false, "also print what passing tests printed, the trace of each failure and coverage per file")
	for {
		if err := fs.Parse(args); err != nil {
			return opts, errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		opts.paths = append(opts.paths, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(opts.paths) == 0 {
		opts.paths = []string{"."}
	}
	return opts, nil
}

// hiddenBelowRoot leaves out files and directories whose names start with "." inside the
// given paths (.git, editor state), as a shell glob would.
func hiddenBelowRoot(_ string, info fs.FileInfo, depth int) bool {
	return depth > 0 && strings.HasPrefix(info.Name(), ".")
}

// failedExpr names the expression that made a test fail: the last failed expression of the
// test's own query, with its file and line.
func failedExpr(trace []*topdown.Event) string {
	for _, e := range slices.Backward(trace) {
		if e.Op != topdown.FailOp || e.Location == nil || e.QueryID == 0 {
			continue
		}
		expr, ok := e.Node.(*ast.Expr)
		if !ok {
			continue
		}
		if _, ok := expr.Terms.(*ast.Every); ok {
			continue // the failure that explains is inside the every body
		}
		return fmt.Sprintf("%s:%d: failed: %s", e.Location.File, e.Location.Row, strings.ReplaceAll(string(e.Location.Text), "\n", "\n         "))
	}
	return ""
}

// failedCases lists the failing cases of a test written as a partial object rule.
func failedCases(r *tester.Result) []string {
	var out []string
	for name, sr := range r.SubResults.Iter {
		if sr.Fail && len(sr.SubResults) == 0 {
			out = append(out, strings.Join(name, "/"))
		}
	}
	return out
}

func indentBlock(s, indent string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = indent + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

// coverageFigure is the coverage of the policy modules, tests left out.
type coverageFigure struct {
	percent             float64
	covered, notCovered int
	files               []fileCoverage
}

type fileCoverage struct {
	name    string
	percent float64
	missed  string // ", not covered: 12-14, 30"
}

// policyCoverage sums OPA's coverage report over the modules that are not tests. (OPA's own
// figure counts the lines of *_test.rego files too, which the tests cover by running.)
func policyCoverage(cov *cover.Cover, modules map[string]*ast.Module) coverageFigure {
	policy := map[string]*ast.Module{}
	for name, m := range modules {
		if !strings.HasSuffix(name, "_test.rego") {
			policy[name] = m
		}
	}
	report := cov.Report(policy)
	var fig coverageFigure
	for name := range policy {
		fr := report.Files[name]
		if fr == nil {
			continue
		}
		fig.covered += fr.CoveredLines
		fig.notCovered += fr.NotCoveredLines
		var missed []string
		for _, rng := range fr.NotCovered {
			at := strconv.Itoa(rng.Start.Row)
			if rng.End.Row != rng.Start.Row {
				at += "-" + strconv.Itoa(rng.End.Row)
			}
			if len(missed) == 0 || missed[len(missed)-1] != at {
				missed = append(missed, at)
			}
		}
		f := fileCoverage{name: filepath.ToSlash(name), percent: fr.Coverage}
		if len(missed) > 0 {
			f.missed = ", not covered: " + strings.Join(missed, ", ")
		}
		if fr.CoveredLines+fr.NotCoveredLines == 0 {
			f.percent = 100
		}
		fig.files = append(fig.files, f)
	}
	slices.SortFunc(fig.files, func(a, b fileCoverage) int { return strings.Compare(a.name, b.name) })
	if total := fig.covered + fig.notCovered; total > 0 {
		fig.percent = 100 * float64(fig.covered) / float64(total)
	} else {
		fig.percent = 100
	}
	return fig
}
