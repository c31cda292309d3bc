package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/arbiter-mcp/arbiter/engine/grpcapi"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// remote is a connection to a running service, as the admin commands use it.
type remote struct {
	sessions  arbiterv1.SessionServiceClient
	approvals arbiterv1.ApprovalServiceClient
	out       io.Writer
	json      bool
	close     func() error
}

// remoteFlags adds the connection flags every admin command takes.
type remoteFlags struct {
	addr      string
	tokenFile string
	output    string
	tls       bool
	tlsCA     string
}

func (rf *remoteFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&rf.addr, "addr", envOr("ARBITER_ADDR", "127.0.0.1:9191"), "gRPC address of the service (env ARBITER_ADDR)")
	fs.StringVar(&rf.tokenFile, "token-file", os.Getenv("ARBITER_TOKEN_FILE"), "file holding the admin bearer token (env ARBITER_TOKEN_FILE)")
	fs.StringVar(&rf.output, "o", "text", "output: text or json")
	fs.BoolVar(&rf.tls, "tls", false, "connect over TLS, trusting the system's roots (env ARBITER_TLS=true)")
	fs.StringVar(&rf.tlsCA, "tls-ca", os.Getenv("ARBITER_TLS_CA"), "connect over TLS, trusting the CA certificates (PEM) in this file (env ARBITER_TLS_CA)")
}

// clientTLS is the TLS configuration of a client: the system's roots, or only the CA
// certificates of caFile when one is given.
func clientTLS(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	cfg.RootCAs = x509.NewCertPool()
	if !cfg.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", caFile)
	}
	return cfg, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (rf *remoteFlags) dial(out io.Writer) (*remote, error) {
	if rf.output != "text" && rf.output != "json" {
		return nil, fmt.Errorf("-o must be text or json, not %q", rf.output)
	}
	if env := os.Getenv("ARBITER_TLS"); env != "" && !rf.tls {
		on, err := strconv.ParseBool(env)
		if err != nil {
			return nil, fmt.Errorf("ARBITER_TLS=%q: want true or false", env)
		}
		rf.tls = on
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if rf.tls || rf.tlsCA != "" {
		cfg, err := clientTLS(rf.tlsCA)
		if err != nil {
			return nil, err
		}
		opts[0] = grpc.WithTransportCredentials(credentials.NewTLS(cfg))
	}
	if rf.tokenFile != "" {
		token, err := readToken(rf.tokenFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(token)))
	}
	conn, err := grpc.NewClient(rf.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("--addr %s: %w", rf.addr, err)
	}
	return &remote{
		sessions:  arbiterv1.NewSessionServiceClient(conn),
		approvals: arbiterv1.NewApprovalServiceClient(conn),
		out:       out,
		json:      rf.output == "json",
		close:     conn.Close,
	}, nil
}

// readToken reads the first token of a token file (the format of --admin-token-file).
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	defer f.Close()
	tokens, err := grpcapi.ParseTokens(f, grpcapi.RoleAdmin)
	if err != nil {
		return "", fmt.Errorf("--token-file %s: %w", path, err)
	}
	return tokens[0].Secret, nil
}

// bearerToken sends the token with every call. Tokens travel in clear text over a plaintext
// connection, so use the commands on loopback or through a tunnel.
type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerToken) RequireTransportSecurity() bool { return false }

// emitJSON prints a message as one line of protojson.
func (r *remote) emitJSON(m proto.Message) {
	b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	fmt.Fprintf(r.out, "%s\n", b)
}

const sessionsUsage = `usage: arbiter sessions COMMAND [flags]

  list   [--client ID] [--subject ID] [--status S]   sessions, newest pages followed
  show   SESSION_ID                                   one session with its counts and history
  revoke (--session ID | --client ID | --subject ID | --server ID)... --reason TEXT

Every command takes --addr, --token-file (an admin token), --tls or --tls-ca FILE, and
-o text|json.
`

func sessionsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, sessionsUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("sessions "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rf remoteFlags
	rf.register(fs)
	client := fs.String("client", "", "client id")
	subject := fs.String("subject", "", "subject id")
	statusName := fs.String("status", "", "active, pending_approval, closed, revoked or expired (list)")
	sessionID := fs.String("session", "", "session id (revoke)")
	server := fs.String("server", "", "server id (revoke)")
	reason := fs.String("reason", "", "why (revoke; required)")
	if err := fs.Parse(reorder(fs, args[1:])); err != nil {
		return errUsage
	}
	r, err := rf.dial(stdout)
	if err != nil {
		return err
	}
	defer r.close()

	switch args[0] {
	case "list":
		st, err := enumValue("--status", arbiterv1.SessionStatus_value, "SESSION_STATUS_", *statusName)
		if err != nil {
			return err
		}
		req := &arbiterv1.ListSessionsRequest{ClientId: *client, SubjectId: *subject, Status: arbiterv1.SessionStatus(st)}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		if !r.json {
			fmt.Fprintln(tw, "ID\tSTATUS\tCLIENT\tSUBJECT\tCALLS\tEXPIRES")
		}
		for {
			resp, err := r.sessions.ListSessions(ctx, req)
			if err != nil {
				return err
			}
			for _, s := range resp.GetSessions() {
				if r.json {
					r.emitJSON(s)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", s.GetId(), enumName(s.GetStatus().String(), "SESSION_STATUS_"),
					s.GetClientId(), s.GetSubjectId(), s.GetCallsTotal(), stamp(s.GetExpiresAt().AsTime()))
			}
			if resp.GetNextPageToken() == "" {
				break
			}
			req.PageToken = resp.GetNextPageToken()
		}
		return tw.Flush()
	case "show":
		id, err := oneArg(fs, "SESSION_ID")
		if err != nil {
			return err
		}
		resp, err := r.sessions.GetSession(ctx, &arbiterv1.GetSessionRequest{SessionId: id})
		if err != nil {
			return err
		}
		s := resp.GetSession()
		if r.json {
			r.emitJSON(s)
			return nil
		}
		fmt.Fprintf(stdout, "session    %s\nstatus     %s\nclient     %s\nsubject    %s\nservers    %s\ncreated    %s\nexpires    %s\nrenewals   %d\ncalls      %d\nlabels     %s\n",
			s.GetId(), enumName(s.GetStatus().String(), "SESSION_STATUS_"), s.GetClientId(), s.GetSubjectId(), strings.Join(s.GetServers(), ", "),
			stamp(s.GetCreatedAt().AsTime()), stamp(s.GetExpiresAt().AsTime()), s.GetRenewals(), s.GetCallsTotal(), strings.Join(s.GetLabels(), ", "))
		if s.GetEndReason() != "" {
			fmt.Fprintf(stdout, "ended      %s: %s\n", stamp(s.GetEndedAt().AsTime()), s.GetEndReason())
		}
		for _, h := range s.GetHistory() {
			fmt.Fprintf(stdout, "  %s  %s %s/%s\n", stamp(h.GetAt().AsTime()), h.GetMethod(), h.GetServer(), h.GetTool())
		}
		return nil
	case "revoke":
		if fs.NArg() > 0 {
			return fmt.Errorf("revoke takes selectors as flags, not %q", fs.Args())
		}
		resp, err := r.sessions.RevokeSessions(ctx, &arbiterv1.RevokeSessionsRequest{SessionId: *sessionID, ClientId: *client, SubjectId: *subject, ServerId: *server, Reason: *reason})
		if err != nil {
			return err
		}
		if r.json {
			r.emitJSON(resp)
			return nil
		}
		fmt.Fprintf(stdout, "revoked %d session(s)\n", len(resp.GetSessionIds()))
		for _, id := range resp.GetSessionIds() {
			fmt.Fprintln(stdout, id)
		}
		return nil
	default:
		fmt.Fprintf(stderr, "arbiter sessions: unknown command %q\n\n%s", args[0], sessionsUsage)
		return errUsage
	}
}

const approvalsUsage = `usage: arbiter approvals COMMAND [flags]

  list    [--status pending] [--session ID] [--client ID] [--subject ID] [--server ID]
  show    APPROVAL_ID                          what was asked, why, and its resolution
  approve APPROVAL_ID [--approver WHO] [--note TEXT] [--scope once|session]
  deny    APPROVAL_ID [--approver WHO] [--note TEXT]
  watch   APPROVAL_ID                          print each change until it is resolved or expires

--approver defaults to the local user name. Every command takes --addr, --token-file,
--tls or --tls-ca FILE, and
-o text|json.
`

func approvalsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, approvalsUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("approvals "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rf remoteFlags
	rf.register(fs)
	statusName := fs.String("status", "", "pending, approved, denied, expired or consumed (list)")
	session := fs.String("session", "", "session id (list)")
	client := fs.String("client", "", "client id (list)")
	subject := fs.String("subject", "", "subject id (list)")
	server := fs.String("server", "", "server id (list)")
	approver := fs.String("approver", localUser(), "who resolves (approve, deny)")
	note := fs.String("note", "", "note recorded with the resolution")
	scopeName := fs.String("scope", "", "once or session (approve; default: what the policy asked)")
	if err := fs.Parse(reorder(fs, args[1:])); err != nil {
		return errUsage
	}
	r, err := rf.dial(stdout)
	if err != nil {
		return err
	}
	defer r.close()

	switch args[0] {
	case "list":
		st, err := enumValue("--status", arbiterv1.ApprovalStatus_value, "APPROVAL_STATUS_", *statusName)
		if err != nil {
			return err
		}
		req := &arbiterv1.ListApprovalsRequest{Status: arbiterv1.ApprovalStatus(st), SessionId: *session, ClientId: *client, SubjectId: *subject, ServerId: *server}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		if !r.json {
			fmt.Fprintln(tw, "ID\tSTATUS\tKIND\tSUBJECT\tSERVER/TOOL\tREASON\tEXPIRES")
		}
		for {
			resp, err := r.approvals.ListApprovals(ctx, req)
			if err != nil {
				return err
			}
			for _, a := range resp.GetApprovals() {
				if r.json {
					r.emitJSON(a)
					continue
				}
				reason := ""
				if len(a.GetReasons()) > 0 {
					reason = a.GetReasons()[0].GetCode()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.GetId(), enumName(a.GetStatus().String(), "APPROVAL_STATUS_"),
					enumName(a.GetKind().String(), "APPROVAL_KIND_"), a.GetSubjectId(), target(a), reason, stamp(a.GetExpiresAt().AsTime()))
			}
			if resp.GetNextPageToken() == "" {
				break
			}
			req.PageToken = resp.GetNextPageToken()
		}
		return tw.Flush()
	case "show":
		id, err := oneArg(fs, "APPROVAL_ID")
		if err != nil {
			return err
		}
		resp, err := r.approvals.GetApproval(ctx, &arbiterv1.GetApprovalRequest{ApprovalId: id})
		if err != nil {
			return err
		}
		r.printApproval(resp.GetApproval())
		return nil
	case "approve", "deny":
		id, err := oneArg(fs, "APPROVAL_ID")
		if err != nil {
			return err
		}
		req := &arbiterv1.ResolveApprovalRequest{ApprovalId: id, Resolution: arbiterv1.Resolution_RESOLUTION_DENY, Approver: *approver, Note: *note}
		if args[0] == "approve" {
			req.Resolution = arbiterv1.Resolution_RESOLUTION_APPROVE
			sc, err := enumValue("--scope", arbiterv1.ApprovalScope_value, "APPROVAL_SCOPE_", *scopeName)
			if err != nil {
				return err
			}
			req.Scope = arbiterv1.ApprovalScope(sc)
		}
		resp, err := r.approvals.ResolveApproval(ctx, req)
		if err != nil {
			return err
		}
		r.printApproval(resp.GetApproval())
		return nil
	case "watch":
		id, err := oneArg(fs, "APPROVAL_ID")
		if err != nil {
			return err
		}
		stream, err := r.approvals.WatchApproval(ctx, &arbiterv1.WatchApprovalRequest{ApprovalId: id})
		if err != nil {
			return err
		}
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			a := msg.GetApproval()
			if r.json {
				r.emitJSON(a)
				continue
			}
			fmt.Fprintf(stdout, "%s  %s  %s\n", stamp(time.Now()), a.GetId(), enumName(a.GetStatus().String(), "APPROVAL_STATUS_"))
		}
	default:
		fmt.Fprintf(stderr, "arbiter approvals: unknown command %q\n\n%s", args[0], approvalsUsage)
		return errUsage
	}
}

func (r *remote) printApproval(a *arbiterv1.Approval) {
	if r.json {
		r.emitJSON(a)
		return
	}
	args, _ := protojson.Marshal(a.GetArguments())
	fmt.Fprintf(r.out, "approval   %s\nstatus     %s\nkind       %s\nsession    %s\nclient     %s\nsubject    %s\nasks       %s %s\narguments  %s\nscope      %s\ncreated    %s\nexpires    %s\nasked by   %s\n",
		a.GetId(), enumName(a.GetStatus().String(), "APPROVAL_STATUS_"), enumName(a.GetKind().String(), "APPROVAL_KIND_"),
		a.GetSessionId(), a.GetClientId(), a.GetSubjectId(), a.GetMethod(), target(a), args,
		enumName(a.GetScope().String(), "APPROVAL_SCOPE_"), stamp(a.GetCreatedAt().AsTime()), stamp(a.GetExpiresAt().AsTime()), a.GetRequestedBy())
	for _, rs := range a.GetReasons() {
		fmt.Fprintf(r.out, "reason     %s: %s\n", rs.GetCode(), rs.GetMessage())
	}
	if a.GetResolvedBy() != "" {
		fmt.Fprintf(r.out, "resolved   %s by %s %s\n", stamp(a.GetResolvedAt().AsTime()), a.GetResolvedBy(), a.GetNote())
	}
}

func target(a *arbiterv1.Approval) string {
	if a.GetTool() == "" {
		return a.GetServerId()
	}
	return a.GetServerId() + "/" + a.GetTool()
}

// enumValue maps a lower-case name such as "pending" to its enum number; "" is 0.
func enumValue(flagName string, values map[string]int32, prefix, name string) (int32, error) {
	if name == "" {
		return 0, nil
	}
	v, ok := values[prefix+strings.ToUpper(name)]
	if !ok || v == 0 {
		var names []string
		for k, n := range values {
			if n != 0 {
				names = append(names, strings.ToLower(strings.TrimPrefix(k, prefix)))
			}
		}
		return 0, fmt.Errorf("%s %q: want one of %s", flagName, name, strings.Join(names, ", "))
	}
	return v, nil
}

func enumName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

func stamp(t time.Time) string {
	if t.IsZero() || t.Unix() == 0 {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func oneArg(fs *flag.FlagSet, name string) (string, error) {
	if fs.NArg() != 1 {
		return "", fmt.Errorf("want exactly one %s argument, got %d", name, fs.NArg())
	}
	return fs.Arg(0), nil
}

// reorder moves positional arguments after the flags of fs, so "show ID -o json" works as well
// as "show -o json ID". A boolean flag (--tls, -h) takes no value unless written --tls=false.
func reorder(fs *flag.FlagSet, args []string) []string {
	takesValue := func(a string) bool {
		name := strings.TrimLeft(a, "-")
		if name == "h" || name == "help" {
			return false
		}
		if f := fs.Lookup(name); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				return false
			}
		}
		return true
	}
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			flags = append(flags, a)
			if !strings.Contains(a, "=") && takesValue(a) && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) == 0 {
		return flags
	}
	// "--" keeps a positional argument that starts with "-" from being read as a flag.
	return append(append(flags, "--"), pos...)
}

func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}
