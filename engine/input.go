package engine

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
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

// fields builds an object of the keys r reads: the parts of the input a policy never reads
// are not built (see inputReads). Its members gather in buf, on the builder's stack, until
// object makes the object.
type fields struct {
	r     *inputReads
	names *nameTerms // for name
	buf   [9][2]*ast.Term
	n     int
	more  [][2]*ast.Term // members past len(buf), rare
}

func fieldsOf(r *inputReads) fields { return fields{r: r} }

// namesOf is fieldsOf for an object with names among its values (see name).
func namesOf(names *nameTerms, r *inputReads) fields { return fields{r: r, names: names} }

// wants reports whether the object's reader reads key: the caller then builds its value.
func (f *fields) wants(key *ast.Term) bool { return f.r.has(key) }

func (f *fields) put(key, value *ast.Term) {
	if f.n < len(f.buf) {
		f.buf[f.n] = ast.Item(key, value)
		f.n++
		return
	}
	f.more = append(f.more, ast.Item(key, value))
}

// items are the members put so far.
func (f *fields) items() [][2]*ast.Term {
	if f.more == nil {
		return f.buf[:f.n]
	}
	return append(f.buf[:f.n:f.n], f.more...)
}

// str puts a string value if it is read.
func (f *fields) str(key *ast.Term, s string) {
	if f.wants(key) {
		f.put(key, ast.StringTerm(s))
	}
}

// name puts a string value that repeats across requests (an id, a transport, a scope) if it
// is read, from the name cache.
func (f *fields) name(key *ast.Term, s string) {
	if f.wants(key) {
		f.put(key, f.names.term(s))
	}
}

// names puts an array of names if it is read.
func (f *fields) nameList(key *ast.Term, ss []string) {
	if f.wants(key) {
		f.put(key, f.names.terms(ss))
	}
}

func (f *fields) object() *ast.Term { return ast.ObjectTerm(f.items()...) }

// lazy is object for an object made anew per request, which the plan executor reads member by
// member (see lazyItems).
func (f *fields) lazy() *ast.Term { return newLazyItems(f.items()) }

// newInputBase builds everything but the action and the operation, of what r reads.
// input.session is sess (nil: none). The context and the subject's attributes are checked
// whether or not the policy reads them, so a request is refused for the same input whatever
// the policy. The values and objects that repeat across requests come from c's caches.
func newInputBase(c *sessionTerms, req *Request, sess *ast.Term, now time.Time, r *inputReads) (inputBase, error) {
	names := &c.names
	ctx, err := jsonTerm(r.sub(keyContext), req.Context, req.ContextFrom)
	if err != nil {
		return nil, &InvalidArgumentError{Field: "context", Reason: err.Error()}
	}
	subject := r.sub(keySubject)
	attrs, err := jsonTerm(subject.sub(keyAttributes), req.Subject.Attributes, req.Subject.AttributesFrom)
	if err != nil {
		return nil, &InvalidArgumentError{Field: "subject.attributes", Reason: err.Error()}
	}
	in := fieldsOf(r)
	if in.wants(keyNow) {
		in.put(keyNow, timeTerm(now))
	}
	if in.wants(keyClient) {
		cr := r.sub(keyClient)
		in.put(keyClient, c.clients.get(clientKey{cr, req.Client}, func() *ast.Term {
			f := namesOf(names, cr)
			f.name(keyID, req.Client.ID)
			f.name(keyName, req.Client.Name)
			f.name(keyVersion, req.Client.Version)
			f.name(keyTransport, req.Client.Transport)
			return f.object()
		}))
	}
	if subject != nil {
		s := namesOf(names, subject)
		s.str(keyID, req.Subject.ID)
		s.nameList(keyGroups, req.Subject.Groups)
		if attrs != nil {
			s.put(keyAttributes, attrs)
		}
		in.put(keySubject, s.lazy())
	}
	if in.wants(keyServer) {
		sr := r.sub(keyServer)
		in.put(keyServer, c.servers.get(serverKey{sr, req.Server}, func() *ast.Term { return serverTerm(names, req.Server, sr) }))
	}
	if in.wants(keyCredential) {
		cr := r.sub(keyCredential)
		build := func() *ast.Term {
			f := namesOf(names, cr)
			f.nameList(keyScopes, req.Credential.Scopes)
			f.nameList(keyAudience, req.Credential.Audience)
			f.name(keyIssuer, req.Credential.Issuer)
			f.name(keyClientID, req.Credential.ClientID)
			if f.wants(keyExpiresAt) {
				f.put(keyExpiresAt, timeTerm(req.Credential.ExpiresAt))
			}
			return f.object()
		}
		if k, ok := credentialKeyOf(cr, &req.Credential); ok {
			in.put(keyCredential, c.credentials.get(k, build))
		} else {
			in.put(keyCredential, build())
		}
	}
	if ctx != nil {
		in.put(keyContext, ctx)
	}
	if sess != nil && in.wants(keySession) {
		in.put(keySession, sess)
	}
	return inputBase(slices.Clone(in.items())), nil
}

// document returns the input document: the base plus the action and extra items, as a Lazy
// (see lazyItems). Its keys are distinct.
func (b inputBase) document(action string, extra ...[2]*ast.Term) ast.Value {
	var buf [12][2]*ast.Term
	items := append(buf[:0], ast.Item(keyAction, actionTerm(action)))
	items = append(items, b...)
	items = append(items, extra...)
	return newLazyItems(items).Value
}

// actionTerms are the terms of the actions requests name most: the MCP methods and Arbiter's
// own actions, made once and shared.
var actionTerms = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, a := range []string{
		"tools/call", "tools/list", "resources/read", "resources/list", "resources/templates/list",
		"resources/subscribe", "prompts/get", "prompts/list", "sampling/createMessage",
		"elicitation/create", "completion/complete", "roots/list",
		ActionSessionOpen, ActionSessionRenew,
	} {
		m[a] = ast.StringTerm(a)
	}
	return m
}()

// actionTerm is input.action's term.
func actionTerm(action string) *ast.Term {
	if t := actionTerms[action]; t != nil {
		return t
	}
	return ast.StringTerm(action)
}

// operationTerm is input.operation, of what r (the operation's reads) reads; args are the
// arguments (nil when they are not read). The method and tool come from names (nil: fresh
// terms).
func operationTerm(names *nameTerms, op *Operation, args *ast.Term, r *inputReads) *ast.Term {
	f := namesOf(names, r)
	f.name(keyMethod, op.Method)
	f.name(keyTool, op.Tool)
	if args != nil && f.wants(keyArguments) {
		f.put(keyArguments, args)
	}
	if f.wants(keyAnnotations) {
		f.put(keyAnnotations, annotationsTerm(op.Annotations))
	}
	f.str(keyDefinitionHash, op.DefinitionHash)
	f.str(keyResourceURI, op.ResourceURI)
	f.str(keyPromptName, op.PromptName)
	return f.lazy()
}

// annotationsTerm carries only the hints the server set: absence is meaningful in MCP. There
// are 81 such objects (each of four hints unset, false or true), made once and shared.
func annotationsTerm(a Annotations) *ast.Term {
	return annotationTerms()[annotationsIndex(a)]
}

// annotationsIndex numbers a's hints in base 3: 0 unset, 1 false, 2 true.
func annotationsIndex(a Annotations) int {
	i := 0
	for _, h := range [...]*bool{a.ReadOnly, a.Destructive, a.Idempotent, a.OpenWorld} {
		i *= 3
		if h != nil {
			i++
			if *h {
				i++
			}
		}
	}
	return i
}

var annotationTerms = sync.OnceValue(func() (terms [81]*ast.Term) {
	keys := [...]*ast.Term{keyReadOnly, keyDestructive, keyIdempotent, keyOpenWorld}
	for i := range terms {
		var items [][2]*ast.Term
		for k, n := len(keys)-1, i; k >= 0; k, n = k-1, n/3 {
			if d := n % 3; d > 0 {
				items = append(items, ast.Item(keys[k], ast.InternedTerm(d == 2)))
			}
		}
		terms[i] = ast.ObjectTerm(items...)
	}
	return terms
})

// countTerm is a number term for a count, shared for the small counts OPA interns.
func countTerm(n uint64) *ast.Term {
	if n <= math.MaxInt32 && ast.HasInternedIntNumberTerm(int(n)) {
		return ast.InternedTerm(int(n))
	}
	return ast.UIntNumberTerm(n)
}

// serverTerm is an MCP server's input, of what r reads, from names (nil: fresh terms).
func serverTerm(names *nameTerms, s Server, r *inputReads) *ast.Term {
	f := namesOf(names, r)
	f.name(keyID, s.ID)
	f.name(keyResource, s.Resource)
	f.name(keyTransport, s.Transport)
	f.name(keyCommandDigest, s.CommandDigest)
	return f.object()
}

// sessionTerm is input.session: the session as the policy sees it, for an active session, of
// what r (the session's reads, not nil) reads. The lifecycle items and the history entries'
// terms come from cached when they describe the same lifecycle and entries (nil: all built
// here); it returns the term and what to cache next. The cache keeps every lifecycle item,
// whatever r reads, since a revision that reads others may use it next; u.History is looked
// at only when r reads the history.
func sessionTerm(names *nameTerms, cached *cachedSession, sess *state.Session, u *state.Usage, r *inputReads) (*ast.Term, *cachedSession) {
	next := &cachedSession{created: sess.CreatedAt.UnixNano(), expires: sess.ExpiresAt.UnixNano(), renewals: sess.Renewals}
	if cached.describes(sess) {
		next.lifecycle = cached.lifecycle
	} else {
		next.lifecycle = sessionItems(names, sess)
	}
	f := fieldsOf(r)
	for _, it := range next.lifecycle {
		if f.wants(it[0]) {
			f.put(it[0], it[1])
		}
	}
	if f.wants(keyCalls) {
		f.put(keyCalls, newCallsObject(names, u, r.sub(keyCalls)))
	}
	if f.wants(keyLabels) {
		f.put(keyLabels, names.terms(u.Labels))
	}
	if !f.wants(keyHistory) {
		return f.lazy(), next
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
	f.put(keyHistory, ast.ArrayTerm(next.terms...)) // shared with the cache: input terms are never changed
	return f.lazy(), next
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
		ast.Item(keyRenewals, countTerm(uint64(sess.Renewals))),
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
// servers, tools and methods of history entries and counts, the client, servers and scopes of
// a session's lifecycle input, and a request's client, server, method, tool, credential
// claims, groups and labels. Every term kept in a session is objects the collector marks, and
// every term built per decision is allocation, and input terms are never changed once built,
// so sessions and decisions can share them. Names longer than
// maxNameBytes are not cached, and the cache starts over when it holds maxNameTerms names:
// arbitrary names cannot grow it past ~2 MiB, and a term outlives the sessions using it only
// until then.
type nameTerms struct {
	mu sync.Mutex
	m  map[string]*ast.Term
	// lists are the array terms of lists of names (scopes, audiences, groups, labels), keyed
	// by the names, each after its length, for lists of up to maxListBytes; bounded as m is.
	lists map[string]*ast.Term
}

// maxListBytes bounds the lists of names whose array terms are shared.
const maxListBytes = 256

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
	return n.locked(s)
}

// locked is term, under n.mu, for a name no longer than maxNameBytes.
func (n *nameTerms) locked(s string) *ast.Term {
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

// terms is an array term of names. A short list is one term shared by every request and
// session naming the same names in the same order: the plan executor's kept rule values (see
// irexec) find a rule's key again only in the same array term.
func (n *nameTerms) terms(ss []string) *ast.Term {
	var buf [maxListBytes]byte
	key := buf[:0]
	if n != nil {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, s := range ss {
			if len(key)+len(s)+binary.MaxVarintLen64 > maxListBytes {
				key = nil
				break
			}
			key = append(binary.AppendUvarint(key, uint64(len(s))), s...)
		}
		if key != nil {
			if t, ok := n.lists[string(key)]; ok {
				return t
			}
		}
	}
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		if n == nil || len(s) > maxNameBytes {
			terms[i] = ast.StringTerm(strings.Clone(s))
		} else {
			terms[i] = n.locked(s)
		}
	}
	t := ast.ArrayTerm(terms...)
	if n != nil && key != nil {
		if n.lists == nil || len(n.lists) >= maxNameTerms {
			n.lists = make(map[string]*ast.Term)
		}
		n.lists[string(key)] = t
	}
	return t
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

// jsonTerm is the part of m that r reads (readTerm) when r reads any of it; when it does not (r
// is nil), the term is nil. Either way all of m is checked as ast.InterfaceToValue would check
// it, so a request is refused for the same input whatever the policy reads. When m is nil,
// from (if not nil) gives it, called only when r reads it.
func jsonTerm(r *inputReads, m map[string]any, from func() map[string]any) (*ast.Term, error) {
	if m == nil && from != nil && r != nil {
		m = from()
	}
	if r != nil && r.whole {
		return objectTerm(m) // checks m as it converts it
	}
	if err := checkJSON(m); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if r == nil {
		return nil, nil
	}
	if len(m) == 0 {
		return emptyTerm, nil
	}
	return readTerm(r, m)
}

// readTerm converts v, decoded JSON that checkJSON passed, keeping only what r reads of it: of
// an object, the keys r names, each as far as r reads it (tool arguments, the request's
// context and the subject's attributes are often large, and a policy reads a few fields of
// them if any); all of a value r reads whole, and all of anything that is not an object, since
// a key of an array or a string is undefined however much of it is built.
func readTerm(r *inputReads, v any) (*ast.Term, error) {
	m, isMap := v.(map[string]any)
	if r.whole || !isMap {
		x, err := ast.InterfaceToValue(v)
		if err != nil {
			return nil, fmt.Errorf("not valid JSON: %w", err)
		}
		return ast.NewTerm(x), nil
	}
	items := make([][2]*ast.Term, 0, len(r.keys))
	for name, sub := range r.keys {
		x, ok := m[name]
		if !ok {
			continue
		}
		t, err := readTerm(sub, x)
		if err != nil {
			return nil, err
		}
		items = append(items, ast.Item(ast.InternedTerm(name), t))
	}
	return ast.ObjectTerm(items...), nil
}

// checkJSON fails where ast.InterfaceToValue would fail on v, without building anything for
// the values decoded JSON holds, which it always converts.
func checkJSON(v any) error {
	switch v := v.(type) {
	case nil, bool, string, float64, int, int64, uint64, []string, map[string]string:
		return nil
	case json.Number:
		// As ast.InterfaceToValue checks it, without making the value.
		_, err := ast.NumberChecked(string(v))
		return err
	case []any:
		for _, x := range v {
			if err := checkJSON(x); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		for _, x := range v {
			if err := checkJSON(x); err != nil {
				return err
			}
		}
		return nil
	default:
		_, err := ast.InterfaceToValue(v)
		return err
	}
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

// objectTerms holds one term per distinct input object of a kind that repeats across
// requests (a client, an MCP server, a credential) and the reads it was built for: input terms
// are never changed once built, so requests can share them. It starts over when it holds
// maxObjectTerms objects.
type objectTerms[K comparable] struct {
	mu sync.Mutex
	m  map[K]*ast.Term
}

const maxObjectTerms = 1 << 12

// get returns the term of k, built by build unless cached.
func (c *objectTerms[K]) get(k K, build func() *ast.Term) *ast.Term {
	c.mu.Lock()
	t, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return t
	}
	t = build()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxObjectTerms {
		c.m = make(map[K]*ast.Term)
	}
	c.m[k] = t
	return t
}

type clientKey struct {
	r *inputReads
	c Client
}

type serverKey struct {
	r *inputReads
	s Server
}

// credentialKey is a credential with up to maxKeyedClaims scopes and audiences together.
type credentialKey struct {
	r                 *inputReads
	issuer, clientID  string
	expires           int64
	scopes, audiences uint8
	claims            [maxKeyedClaims]string
}

const maxKeyedClaims = 8

// credentialKeyOf is the key of c read by r; false for a credential of more claims than a key
// holds, which is built afresh.
func credentialKeyOf(r *inputReads, c *Credential) (credentialKey, bool) {
	if len(c.Scopes)+len(c.Audience) > maxKeyedClaims {
		return credentialKey{}, false
	}
	k := credentialKey{r: r, issuer: c.Issuer, clientID: c.ClientID, scopes: uint8(len(c.Scopes)), audiences: uint8(len(c.Audience))}
	if !c.ExpiresAt.IsZero() && r.has(keyExpiresAt) {
		k.expires = c.ExpiresAt.UnixNano()
	}
	copy(k.claims[:], c.Scopes)
	copy(k.claims[len(c.Scopes):], c.Audience)
	return k, true
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
	// The input objects that repeat across requests.
	clients     objectTerms[clientKey]
	servers     objectTerms[serverKey]
	credentials objectTerms[credentialKey]
	max         int
	mu          sync.Mutex
	m           map[string]*cacheSlot
}

// cacheSlot holds a session's latest terms. Replacing them goes through the slot, under the
// lock, so the map keeps the key it was given (a copy: a session's id points into its bucket's
// stored text) and a decision in a cached session stores nothing new in the map.
type cacheSlot struct {
	terms *cachedSession
	// known says version and head are set: version is the usage the terms were built from, or
	// that the session's last recorded call stored, and head is its counts and labels (no
	// history), which the next read of the session takes instead of decoding the usage while
	// the version stays the same (see Engine.sessionInput). Both hold the stored usage's
	// head (not its history): a cached session keeps one head alive, the session's own or the
	// one it replaced.
	known   bool
	version state.UsageVersion
	head    state.Usage
	// life is the session as last read from the store (its lifecycle, detached from the
	// store's text; never changed once kept), which a decision takes while Store.Unchanged
	// says it still holds.
	life *state.Session
	// term is input.session as built for reads from version and the terms' lifecycle, for
	// the next decision to take whole when none of them changed; nil once a call was
	// recorded.
	term  *ast.Term
	reads *inputReads
}

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

// describes reports whether c's lifecycle items are sess's (a nil c describes none).
func (c *cachedSession) describes(sess *state.Session) bool {
	return c != nil && c.created == sess.CreatedAt.UnixNano() && c.expires == sess.ExpiresAt.UnixNano() && c.renewals == sess.Renewals
}

type historyKey struct {
	server, tool, method string
	at                   int64
}

func keyOf(h *state.HistoryEntry) historyKey {
	return historyKey{h.Server, h.Tool, h.Method, h.At.UnixNano()}
}

// known returns what the cache knows of session id's usage: its version and its counts and
// labels, and the session as last read (nil: none); ok is false when it knows no usage.
func (c *sessionTerms) known(id string) (v state.UsageVersion, head state.Usage, life *state.Session, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slot := c.m[id]; slot != nil && slot.known {
		return slot.version, slot.head, slot.life, true
	}
	return state.UsageVersion{}, state.Usage{}, nil, false
}

// term returns input.session for sess, an active session, and its usage u as of version v
// (nil: not known), of what r (not nil) reads: the cached term itself when the session's
// lifecycle, usage and r are those it was built for. With v, life is kept as the session last
// read (sess detached from the store's text, or the one kept before), for later decisions to
// take while Store.Unchanged says it holds; it is never changed once kept.
func (c *sessionTerms) term(sess *state.Session, u *state.Usage, v *state.UsageVersion, r *inputReads, life *state.Session) *ast.Term {
	var cached *cachedSession
	c.mu.Lock()
	if slot := c.m[sess.ID]; slot != nil {
		if v != nil && slot.known && slot.term != nil && slot.version == *v && slot.reads == r && slot.terms.describes(sess) {
			t := slot.term
			slot.life = life
			c.mu.Unlock()
			return t
		}
		cached = slot.terms
	}
	c.mu.Unlock()
	t, next := sessionTerm(&c.names, cached, sess, u, r)
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := c.m[sess.ID]
	if slot == nil {
		if c.m == nil {
			c.m = make(map[string]*cacheSlot)
		}
		if len(c.m) >= max(c.max, 1) {
			for k := range c.m {
				delete(c.m, k)
				break
			}
		}
		slot = &cacheSlot{}
		c.m[strings.Clone(sess.ID)] = slot
	}
	slot.terms = next
	slot.known, slot.term = false, nil
	slot.life = nil
	if v != nil {
		slot.known, slot.version, slot.head = true, *v, state.Usage{Total: u.Total, Calls: u.Calls, Labels: u.Labels}
		slot.term, slot.reads, slot.life = t, r, life
	}
	return t
}

// recorded notes that a call was recorded in session id, storing usage version v with the
// counts and labels head: the next read of the session takes them instead of decoding it.
func (c *sessionTerms) recorded(id string, v state.UsageVersion, head state.Usage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slot := c.m[id]; slot != nil {
		slot.known, slot.version, slot.head, slot.term = true, v, head, nil
	}
}

// forget drops the cached terms of sessions that ended: they are not evaluated again.
func (c *sessionTerms) forget(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.m, id)
	}
}
