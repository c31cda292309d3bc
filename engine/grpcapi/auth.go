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
	// principals[i] and secrets[i] are tokens[i]'s, made once: a request's context carries a
	// pointer to its principal, and the comparison needs the secrets as bytes.
	principals []*Principal
	secrets    [][]byte
}

// localPrincipal is every caller's principal when no token is configured.
var localPrincipal = &Principal{Name: "local", Role: RoleAdmin}

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
	a := &Authenticator{tokens: tokens}
	for _, t := range tokens {
		a.principals = append(a.principals, &Principal{Name: t.Name, Role: t.Role})
		a.secrets = append(a.secrets, []byte(t.Secret))
	}
	return a, nil
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
	if p := a.principal(header); p != nil {
		return *p, true
	}
	return Principal{}, false
}

// principal is Authenticate, giving the shared principal of the token (nil: none).
func (a *Authenticator) principal(header string) *Principal {
	if !a.Enabled() {
		return localPrincipal
	}
	secret, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return nil
	}
	var found *Principal
	for i, t := range a.secrets {
		if subtle.ConstantTimeCompare([]byte(secret), t) == 1 {
			found = a.principals[i]
		}
	}
	if found == nil || found.Role == RoleNone {
		return nil
	}
	return found
}

// authorize checks the caller of method and returns the context carrying its principal.
func (a *Authenticator) authorize(ctx context.Context, method string) (context.Context, error) {
	if openMethod(method) {
		return ctx, nil
	}
	var header string
	if v := metadata.ValueFromIncomingContext(ctx, "authorization"); len(v) > 0 {
		header = v[0]
	}
	p := a.principal(header)
	if p == nil {
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
	if p, _ := ctx.Value(principalKey{}).(*Principal); p != nil {
		return *p
	}
	return Principal{}
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
