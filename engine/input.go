package engine

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/arbiter-mcp/arbiter/engine/state"
)

// Keys of the input document, made once: building the input runs on every decision.
var (
	keyAction         = ast.StringTerm("action")
	keyNow            = ast.StringTerm("now")
	keyClient         = ast.StringTerm("client")
	keySubject        = ast.StringTerm("subject")
	keyServer         = ast.StringTerm("server")
	keyCredential     = ast.StringTerm("credential")
	keyOperation      = ast.StringTerm("operation")
	keyContext        = ast.StringTerm("context")
	keySession        = ast.StringTerm("session")
	keySessionRequest = ast.StringTerm("session_request")
	keyID             = ast.StringTerm("id")
	keyName           = ast.StringTerm("name")
	keyVersion        = ast.StringTerm("version")
	keyTransport      = ast.StringTerm("transport")
	keyCommandDigest  = ast.StringTerm("command_digest")
	keyGroups         = ast.StringTerm("groups")
	keyAttributes     = ast.StringTerm("attributes")
	keyResource       = ast.StringTerm("resource")
	keyScopes         = ast.StringTerm("scopes")
	keyAudience       = ast.StringTerm("audience")
	keyIssuer         = ast.StringTerm("issuer")
	keyClientID       = ast.StringTerm("client_id")
	keyExpiresAt      = ast.StringTerm("expires_at")
	keyMethod         = ast.StringTerm("method")
	keyTool           = ast.StringTerm("tool")
	keyArguments      = ast.StringTerm("arguments")
	keyAnnotations    = ast.StringTerm("annotations")
	keyDefinitionHash = ast.StringTerm("definition_hash")
	keyResourceURI    = ast.StringTerm("resource_uri")
	keyPromptName     = ast.StringTerm("prompt_name")
	keyReadOnly       = ast.StringTerm("readOnlyHint")
	keyDestructive    = ast.StringTerm("destructiveHint")
	keyIdempotent     = ast.StringTerm("idempotentHint")
	keyOpenWorld      = ast.StringTerm("openWorldHint")
	keyStatus         = ast.StringTerm("status")
	keyCreatedAt      = ast.StringTerm("created_at")
	keyRenewals       = ast.StringTerm("renewals")
	keySubjectID      = ast.StringTerm("subject_id")
	keyServers        = ast.StringTerm("servers")
	keyCalls          = ast.StringTerm("calls")
	keyTotal          = ast.StringTerm("total")
	keyByServer       = ast.StringTerm("by_server")
	keyByTool         = ast.StringTerm("by_tool")
	keyLabels         = ast.StringTerm("labels")
	keyHistory        = ast.StringTerm("history")
	keyAt             = ast.StringTerm("at")
	keyTTLSeconds     = ast.StringTerm("ttl_seconds")
	emptyObject       = ast.NewObject()
	// emptyTerm is {} for every input that needs one (no arguments, no annotations): inputs
	// are read, never changed, by evaluation, so one term serves all of them.
	emptyTerm = ast.NewTerm(emptyObject)
)

// inputBase holds the parts of the input shared by every tool of a FilterTools call.
type inputBase [][2]*ast.Term

// newInputBase builds everything but the action and the operation.
func newInputBase(req *Request, sess *ast.Term, now time.Time) (inputBase, error) {
	ctx, err := objectTerm(req.Context)
	if err != nil {
		return nil, &InvalidArgumentError{Field: "context", Reason: err.Error()}
	}
	attrs, err := objectTerm(req.Subject.Attributes)
	if err != nil {
		return nil, &InvalidArgumentError{Field: "subject.attributes", Reason: err.Error()}
	}
	return inputBase{
		ast.Item(keyNow, timeTerm(now)),
		ast.Item(keyClient, ast.ObjectTerm(
			ast.Item(keyID, ast.StringTerm(req.Client.ID)),
			ast.Item(keyName, ast.StringTerm(req.Client.Name)),
			ast.Item(keyVersion, ast.StringTerm(req.Client.Version)),
			ast.Item(keyTransport, ast.StringTerm(req.Client.Transport)),
		)),
		ast.Item(keySubject, ast.ObjectTerm(
			ast.Item(keyID, ast.StringTerm(req.Subject.ID)),
			ast.Item(keyGroups, stringsTerm(req.Subject.Groups)),
			ast.Item(keyAttributes, attrs),
		)),
		ast.Item(keyServer, serverTerm(req.Server)),
		ast.Item(keyCredential, ast.ObjectTerm(
			ast.Item(keyScopes, stringsTerm(req.Credential.Scopes)),
			ast.Item(keyAudience, stringsTerm(req.Credential.Audience)),
			ast.Item(keyIssuer, ast.StringTerm(req.Credential.Issuer)),
			ast.Item(keyClientID, ast.StringTerm(req.Credential.ClientID)),
			ast.Item(keyExpiresAt, timeTerm(req.Credential.ExpiresAt)),
		)),
		ast.Item(keyContext, ctx),
		ast.Item(keySession, sess),
	}, nil
}

// document returns the input document: the base plus the action and extra items.
func (b inputBase) document(action string, extra ...[2]*ast.Term) ast.Value {
	obj := ast.NewObjectWithCapacity(len(b) + 1 + len(extra))
	obj.Insert(keyAction, ast.StringTerm(action))
	for _, it := range b {
		obj.Insert(it[0], it[1])
	}
	for _, it := range extra {
		obj.Insert(it[0], it[1])
	}
	return obj
}

// operationTerm is input.operation.
func operationTerm(op *Operation, args *ast.Term) *ast.Term {
	return ast.ObjectTerm(
		ast.Item(keyMethod, ast.StringTerm(op.Method)),
		ast.Item(keyTool, ast.StringTerm(op.Tool)),
		ast.Item(keyArguments, args),
		ast.Item(keyAnnotations, annotationsTerm(op.Annotations)),
		ast.Item(keyDefinitionHash, ast.StringTerm(op.DefinitionHash)),
		ast.Item(keyResourceURI, ast.StringTerm(op.ResourceURI)),
		ast.Item(keyPromptName, ast.StringTerm(op.PromptName)),
	)
}

// annotationsTerm carries only the hints the server set: absence is meaningful in MCP.
func annotationsTerm(a Annotations) *ast.Term {
	if a == (Annotations{}) {
		return emptyTerm
	}
	obj := ast.NewObjectWithCapacity(4)
	for _, h := range []struct {
		key *ast.Term
		val *bool
	}{{keyReadOnly, a.ReadOnly}, {keyDestructive, a.Destructive}, {keyIdempotent, a.Idempotent}, {keyOpenWorld, a.OpenWorld}} {
		if h.val != nil {
			obj.Insert(h.key, ast.BooleanTerm(*h.val))
		}
	}
	return ast.NewTerm(obj)
}

func serverTerm(s Server) *ast.Term {
	return ast.ObjectTerm(
		ast.Item(keyID, ast.StringTerm(s.ID)),
		ast.Item(keyResource, ast.StringTerm(s.Resource)),
		ast.Item(keyTransport, ast.StringTerm(s.Transport)),
		ast.Item(keyCommandDigest, ast.StringTerm(s.CommandDigest)),
	)
}

// sessionTerm is input.session: the session as the policy sees it, for an active session. The
// lifecycle items and the history entries' terms come from cached when they describe the same
// lifecycle and entries (nil: all built here); it returns the term and what to cache next.
// Without history (the policy cannot read it, see readsHistory), input.session has no
// "history" key, and u.History is not looked at.
func sessionTerm(names *nameTerms, cached *cachedSession, sess *state.Session, u *state.Usage, history bool) (*ast.Term, *cachedSession) {
	next := &cachedSession{created: sess.CreatedAt.UnixNano(), expires: sess.ExpiresAt.UnixNano(), renewals: sess.Renewals}
	if cached != nil && cached.created == next.created && cached.expires == next.expires && cached.renewals == next.renewals {
		next.lifecycle = cached.lifecycle
	} else {
		next.lifecycle = sessionItems(names, sess)
	}
	// u.Calls is sorted by server, then tool: each server's counts are one run of it.
	var byServer, byTool [][2]*ast.Term
	for i := 0; i < len(u.Calls); {
		srv := u.Calls[i].Server
		var total uint64
		var tools [][2]*ast.Term
		for ; i < len(u.Calls) && u.Calls[i].Server == srv; i++ {
			c := &u.Calls[i]
			total += c.N
			if c.Tool != "" {
				tools = append(tools, ast.Item(ast.StringTerm(c.Tool), ast.UIntNumberTerm(c.N)))
			}
		}
		key := ast.StringTerm(srv)
		byServer = append(byServer, ast.Item(key, ast.UIntNumberTerm(total)))
		if len(tools) > 0 {
			byTool = append(byTool, ast.Item(key, ast.ObjectTerm(tools...)))
		}
	}
	items := make([][2]*ast.Term, 0, len(next.lifecycle)+3)
	items = append(items, next.lifecycle...)
	items = append(items,
		ast.Item(keyCalls, ast.ObjectTerm(
			ast.Item(keyTotal, ast.UIntNumberTerm(u.Total)),
			ast.Item(keyByServer, ast.ObjectTerm(byServer...)),
			ast.Item(keyByTool, ast.ObjectTerm(byTool...)),
		)),
		ast.Item(keyLabels, stringsTerm(u.Labels)),
	)
	if !history {
		return ast.ObjectTerm(items...), next
	}
	next.history = make([]historyKey, len(u.History))
	next.terms = make([]*ast.Term, len(u.History))
	// The history is a window that moves forward by one entry per call: find where the cached
	// window's entries start in this one and reuse their terms.
	off := 0
	if cached != nil && len(u.History) > 0 {
		first := keyOf(&u.History[0])
		for off < len(cached.history) && cached.history[off] != first {
			off++
		}
	}
	for i := range u.History {
		h := &u.History[i]
		k := keyOf(h)
		if cached != nil && off+i < len(cached.history) && cached.history[off+i] == k {
			next.terms[i], next.history[i] = cached.terms[off+i], cached.history[off+i]
		} else {
			next.terms[i] = historyTerm(names, h.Server, h.Tool, h.Method, h.At)
			o := next.terms[i].Value.(ast.Object)
			str := func(key *ast.Term) string { return string(o.Get(key).Value.(ast.String)) }
			next.history[i] = historyKey{str(keyServer), str(keyTool), str(keyMethod), k.at}
		}
	}
	items = append(items, ast.Item(keyHistory, ast.ArrayTerm(next.terms...))) // shared with the cache: input terms are never changed
	return ast.ObjectTerm(items...), next
}

// sessionItems are the lifecycle fields of input.session for an active session. The ids that
// repeat across sessions (client, servers, scopes) come from names (nil: fresh terms). They
// are cached, so their strings are copies: a session's strings point into its bucket's text.
func sessionItems(names *nameTerms, sess *state.Session) [][2]*ast.Term {
	return [][2]*ast.Term{
		ast.Item(keyID, ast.StringTerm(strings.Clone(sess.ID))),
		ast.Item(keyStatus, activeTerm),
		ast.Item(keyCreatedAt, timeTerm(sess.CreatedAt)),
		ast.Item(keyExpiresAt, timeTerm(sess.ExpiresAt)),
		ast.Item(keyRenewals, ast.IntNumberTerm(sess.Renewals)),
		ast.Item(keyClientID, names.term(sess.ClientID)),
		ast.Item(keySubjectID, ast.StringTerm(strings.Clone(sess.SubjectID))),
		ast.Item(keyServers, names.terms(sess.Servers)),
		ast.Item(keyScopes, names.terms(sess.Scopes)),
	}
}

var activeTerm = ast.StringTerm(string(state.StatusActive))

// historyTerm is one entry of input.session.history. Its names come from names (nil: fresh
// terms).
func historyTerm(names *nameTerms, server, tool, method string, at time.Time) *ast.Term {
	return ast.ObjectTerm(
		ast.Item(keyServer, names.term(server)),
		ast.Item(keyTool, names.term(tool)),
		ast.Item(keyMethod, names.term(method)),
		ast.Item(keyAt, timeTerm(at)),
	)
}

// nameTerms holds one string term per name that repeats across sessions and calls: the
// servers, tools and methods of history entries, and the client, servers and scopes of a
// session's lifecycle input. Every term kept in a session is objects the collector marks, and
// input terms are never changed once built, so sessions can share them. Names longer than
// maxNameBytes are not cached, and the cache starts over when it holds maxNameTerms names:
// arbitrary names cannot grow it past ~2 MiB, and a term outlives the sessions using it only
// until then.
type nameTerms struct {
	mu sync.Mutex
	m  map[string]*ast.Term
}

const (
	maxNameTerms = 1 << 14
	maxNameBytes = 128
)

func (n *nameTerms) term(s string) *ast.Term {
	if n == nil || len(s) > maxNameBytes {
		return ast.StringTerm(strings.Clone(s))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.m[s]; ok {
		return t
	}
	if n.m == nil || len(n.m) >= maxNameTerms {
		n.m = make(map[string]*ast.Term)
	}
	s = strings.Clone(s) // it may point into a session's stored bytes
	t := ast.StringTerm(s)
	n.m[s] = t
	return t
}

// terms is an array term of names.
func (n *nameTerms) terms(ss []string) *ast.Term {
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = n.term(s)
	}
	return ast.ArrayTerm(terms...)
}

func stringsTerm(ss []string) *ast.Term {
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(terms...)
}

// timeTerm is an RFC 3339 string, or "" for the zero time.
func timeTerm(t time.Time) *ast.Term {
	if t.IsZero() {
		return ast.StringTerm("")
	}
	return ast.StringTerm(t.UTC().Format(time.RFC3339Nano))
}

// objectTerm converts decoded JSON (nil for none) into an object term.
func objectTerm(m map[string]any) (*ast.Term, error) {
	if len(m) == 0 {
		return emptyTerm, nil
	}
	v, err := ast.InterfaceToValue(m)
	if err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	return ast.NewTerm(v), nil
}

// sessionTerms caches, for recently used sessions, the parts of input.session that change
// rarely (the lifecycle items) or by one entry per call (the history entries' terms), so a
// decision builds only the counts, the labels and the newest entry. The store keeps sessions
// in a form the collector does not look into; the terms here are what it would have to mark
// (~10 objects per history entry), so the cache is bounded: past max sessions
// (Config.InputCacheSessions) an arbitrary entry makes room, and a session not in the cache
// has its terms built afresh.
type sessionTerms struct {
	names nameTerms
	max   int
	mu    sync.Mutex
	m     map[string]*cacheSlot
}

// cacheSlot holds a session's latest terms. Replacing them goes through the slot, under the
// lock, so the map keeps the key it was given (a copy: a session's id points into its bucket's
// stored text) and a decision in a cached session stores nothing new in the map.
type cacheSlot struct{ terms *cachedSession }

const defaultInputCacheSessions = 1024

// cachedSession is immutable once stored: a decision and a FilterTools call in the same
// session may read it at once.
type cachedSession struct {
	// The lifecycle the items describe: the rest of it (id, client, subject, servers, scopes)
	// never changes for a stored session, and only active sessions are evaluated.
	created   int64
	expires   int64
	renewals  int
	lifecycle [][2]*ast.Term
	history   []historyKey
	terms     []*ast.Term
}

type historyKey struct {
	server, tool, method string
	at                   int64
}

func keyOf(h *state.HistoryEntry) historyKey {
	return historyKey{h.Server, h.Tool, h.Method, h.At.UnixNano()}
}

// term returns input.session for sess, an active session, and its usage u, with the history
// when history is true.
func (c *sessionTerms) term(sess *state.Session, u *state.Usage, history bool) *ast.Term {
	var cached *cachedSession
	c.mu.Lock()
	if slot := c.m[sess.ID]; slot != nil {
		cached = slot.terms
	}
	c.mu.Unlock()
	t, next := sessionTerm(&c.names, cached, sess, u, history)
	c.mu.Lock()
	defer c.mu.Unlock()
	if slot := c.m[sess.ID]; slot != nil {
		slot.terms = next
		return t
	}
	if c.m == nil {
		c.m = make(map[string]*cacheSlot)
	}
	if len(c.m) >= max(c.max, 1) {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[strings.Clone(sess.ID)] = &cacheSlot{terms: next}
	return t
}

// forget drops the cached terms of sessions that ended: they are not evaluated again.
func (c *sessionTerms) forget(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.m, id)
	}
}
