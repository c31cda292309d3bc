package grpcapi

import (
	"bufio"
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// Role is what a caller may do.
type Role int

// Roles, in increasing power: an admin may do everything a gateway may.
const (
	RoleNone Role = iota
	// RoleGateway decides, filters tools, opens, renews and closes sessions, and reads and
	// waits on the approvals its own calls asked for.
	RoleGateway
	// RoleAdmin also lists and revokes sessions and lists and resolves approvals.
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleGateway:
		return "gateway"
	case RoleAdmin:
		return "admin"
	default:
		return "none"
	}
}

// Principal is an authenticated caller.
type Principal struct {
	Name string
	Role Role
}

// Token is one bearer credential.
type Token struct {
	Name   string
	Secret string
	Role   Role
}

// MinTokenBytes is the shortest token accepted: long enough not to be guessed.
const MinTokenBytes = 16

// ParseTokens reads tokens for role from r: one per line, either "TOKEN" or "NAME TOKEN";
// blank lines and lines starting with # are skipped. Unnamed tokens are called role-N.
func ParseTokens(r io.Reader, role Role) ([]Token, error) {
	var out []Token
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		t := Token{Role: role}
		switch len(fields) {
		case 1:
			t.Name, t.Secret = fmt.Sprintf("%s-%d", role, len(out)+1), fields[0]
		case 2:
			t.Name, t.Secret = fields[0], fields[1]
		default:
			return nil, fmt.Errorf("line %d: want TOKEN or NAME TOKEN", line)
		}
		if len(t.Secret) < MinTokenBytes {
			return nil, fmt.Errorf("line %d: token is shorter than %d bytes", line, MinTokenBytes)
		}
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no tokens found")
	}
	return out, nil
}

// Authenticator checks bearer tokens and what each role may call. With no tokens it lets
// every caller act as admin: the service then listens on loopback only.
type Authenticator struct {
	tokens []Token
}

// NewAuthenticator returns an authenticator for tokens. A secret given to two roles, or two
// names, is refused: a caller's role must never be ambiguous.
func NewAuthenticator(tokens []Token) (*Authenticator, error) {
	seen := map[string]string{}
	names := map[string]bool{}
	for _, t := range tokens {
		if prev, dup := seen[t.Secret]; dup {
			return nil, fmt.Errorf("token %q repeats the secret of %q", t.Name, prev)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("token name %q is used twice", t.Name)
		}
		seen[t.Secret], names[t.Name] = t.Name, true
	}
	return &Authenticator{tokens: tokens}, nil
}

// Enabled reports whether callers must present a token.
func (a *Authenticator) Enabled() bool {
	return len(a.tokens) > 0
}

// methodRoles is the role each method needs; methods not listed need admin, so a new
// method is closed until someone opens it on purpose. Health and reflection are open.
var methodRoles = map[string]Role{
	arbiterv1.DecisionService_Decide_FullMethodName:          RoleGateway,
	arbiterv1.DecisionService_FilterTools_FullMethodName:     RoleGateway,
	arbiterv1.SessionService_OpenSession_FullMethodName:      RoleGateway,
	arbiterv1.SessionService_RenewSession_FullMethodName:     RoleGateway,
	arbiterv1.SessionService_CloseSession_FullMethodName:     RoleGateway,
	arbiterv1.ApprovalService_GetApproval_FullMethodName:     RoleGateway,
	arbiterv1.ApprovalService_WatchApproval_FullMethodName:   RoleGateway,
	arbiterv1.SessionService_GetSession_FullMethodName:       RoleAdmin,
	arbiterv1.SessionService_ListSessions_FullMethodName:     RoleAdmin,
	arbiterv1.SessionService_RevokeSessions_FullMethodName:   RoleAdmin,
	arbiterv1.ApprovalService_ListApprovals_FullMethodName:   RoleAdmin,
	arbiterv1.ApprovalService_ResolveApproval_FullMethodName: RoleAdmin,
}

func openMethod(full string) bool {
	return strings.HasPrefix(full, "/grpc.health.v1.Health/") || strings.HasPrefix(full, "/grpc.reflection.")
}

// Authenticate finds the principal behind a bearer token ("Bearer TOKEN"). Every token is
// compared in constant time, and all of them are compared, so timing tells nothing.
func (a *Authenticator) Authenticate(header string) (Principal, bool) {
	if !a.Enabled() {
		return Principal{Name: "local", Role: RoleAdmin}, true
	}
	secret, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return Principal{}, false
	}
	var found Principal
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare([]byte(secret), []byte(t.Secret)) == 1 {
			found = Principal{Name: t.Name, Role: t.Role}
		}
	}
	return found, found.Role != RoleNone
}

// authorize checks the caller of method and returns the context carrying its principal.
func (a *Authenticator) authorize(ctx context.Context, method string) (context.Context, error) {
	if openMethod(method) {
		return ctx, nil
	}
	var header string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			header = v[0]
		}
	}
	p, ok := a.Authenticate(header)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "missing or unknown bearer token (metadata \"authorization: Bearer TOKEN\")")
	}
	need, listed := methodRoles[method]
	if !listed {
		need = RoleAdmin
	}
	if p.Role < need {
		return nil, status.Errorf(codes.PermissionDenied, "%s needs the %s role; %q is a %s", method, need, p.Name, p.Role)
	}
	return context.WithValue(ctx, principalKey{}, p), nil
}

type principalKey struct{}

// PrincipalFrom returns the authenticated caller of a request.
func PrincipalFrom(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// UnaryInterceptor authenticates and authorizes unary calls.
func (a *Authenticator) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// StreamInterceptor authenticates and authorizes streaming calls.
func (a *Authenticator) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &principalStream{ServerStream: ss, ctx: ctx})
}

type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }
