// Command arbiter is Arbiter's one binary: the decision service and the tools around it.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc/status"
)

const usage = `arbiter: a policy decision point for the Model Context Protocol

Usage:
  arbiter serve [flags]                 run the gRPC decision service and the admin listener
  arbiter test [PATH...] [--coverage] [--threshold PCT] [--run REGEX] [-v]
                                        run the Rego unit tests of a policy (default PATH: .)
  arbiter eval --input FILE [--policy DIR | --bundle FILE] [--session FILE] [--now TIME] [--explain]
                                        print the decision for one policy input document, and why
  arbiter bundle build|inspect|push     package, check and push OPA bundles
  arbiter audit query --file FILE       search the decision log
  arbiter sessions list|show|revoke     inspect and revoke sessions of a running service
  arbiter approvals list|show|approve|deny|watch
                                        answer and follow approvals of a running service

Run "arbiter COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches a command and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stderr)
	case "test":
		err = testCmd(ctx, args[1:], stdout, stderr)
	case "eval":
		err = evalCmd(ctx, args[1:], stdout, stderr)
	case "bundle":
		err = bundleCmd(ctx, args[1:], stdout, stderr)
	case "audit":
		err = auditCmd(ctx, args[1:], stdout, stderr)
	case "sessions":
		err = sessionsCmd(ctx, args[1:], stdout, stderr)
	case "approvals":
		err = approvalsCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "arbiter: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err == errUsage {
		return 2
	}
	if err != nil {
		if st, ok := status.FromError(err); ok {
			// A service answer: say the code and the message, not the Go error.
			fmt.Fprintf(stderr, "arbiter %s: %s: %s\n", args[0], st.Code(), st.Message())
			return 1
		}
		fmt.Fprintf(stderr, "arbiter %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
