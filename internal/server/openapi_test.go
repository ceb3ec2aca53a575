package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// openAPIFile is the API description, relative to this package.
const openAPIFile = "../../docs/api/openapi.yaml"

// openAPIExtraRoutes are served by routes() outside the route table.
var openAPIExtraRoutes = []string{"GET /metrics"}

// openAPIMethods are the operation keys of an OpenAPI path item.
var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

type openAPIOperation struct {
	OperationID string               `yaml:"operationId"`
	Parameters  []yaml.Node          `yaml:"parameters"`
	Responses   map[string]yaml.Node `yaml:"responses"`
}

type openAPIParameter struct {
	Ref      string `yaml:"$ref"`
	Name     string `yaml:"name"`
	In       string `yaml:"in"`
	Required bool   `yaml:"required"`
}

type openAPISpec struct {
	root yaml.Node // the whole document, for resolving $refs
	// ops maps "METHOD /path" to its operation.
	ops map[string]openAPIOperation
	// pathParams maps a path to the parameters declared on its path item.
	pathParams map[string][]yaml.Node
}

func loadOpenAPI(t *testing.T) *openAPISpec {
	t.Helper()
	data, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatalf("read the API description: %v", err)
	}
	spec := &openAPISpec{ops: map[string]openAPIOperation{}, pathParams: map[string][]yaml.Node{}}
	if err := yaml.Unmarshal(data, &spec.root); err != nil {
		t.Fatalf("%s is not valid YAML: %v", openAPIFile, err)
	}
	var doc struct {
		OpenAPI string                          `yaml:"openapi"`
		Paths   map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := spec.root.Decode(&doc); err != nil {
		t.Fatalf("%s: %v", openAPIFile, err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("%s: openapi version is %q, want 3.x", openAPIFile, doc.OpenAPI)
	}
	if len(doc.Paths) == 0 {
		t.Fatalf("%s documents no paths", openAPIFile)
	}
	for path, item := range doc.Paths {
		if n, ok := item["parameters"]; ok {
			var params []yaml.Node
			if err := n.Decode(&params); err != nil {
				t.Fatalf("%s: paths[%q].parameters: %v", openAPIFile, path, err)
			}
			spec.pathParams[path] = params
		}
		for _, m := range openAPIMethods {
			n, ok := item[m]
			if !ok {
				continue
			}
			var op openAPIOperation
			if err := n.Decode(&op); err != nil {
				t.Fatalf("%s: paths[%q].%s: %v", openAPIFile, path, m, err)
			}
			spec.ops[strings.ToUpper(m)+" "+path] = op
		}
	}
	return spec
}

// openAPIPath turns a net/http pattern path into its OpenAPI form:
// "{name...}" becomes "{name}" and a trailing "{$}" goes.
func openAPIPath(pattern string) string {
	p := strings.TrimSuffix(pattern, "{$}")
	return strings.ReplaceAll(p, "...}", "}")
}

// servedRoutes returns "METHOD /path" of every route the server serves.
func servedRoutes(t *testing.T) map[string]bool {
	t.Helper()
	// The table holds only method values, so a zero Server will do.
	routes := (&Server{}).Routes()
	if len(routes) == 0 {
		t.Fatal("(*Server).Routes() returned no routes")
	}
	out := map[string]bool{}
	for _, rt := range routes {
		key := rt.Method + " " + openAPIPath(rt.Path)
		if out[key] {
			t.Errorf("route %q appears twice in routeTable", key)
		}
		out[key] = true
	}
	for _, r := range openAPIExtraRoutes {
		out[r] = true
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func describeOp(route string) string {
	method, path, _ := strings.Cut(route, " ")
	return fmt.Sprintf("paths[%q].%s", path, strings.ToLower(method))
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	spec := loadOpenAPI(t)
	for _, route := range sortedKeys(servedRoutes(t)) {
		if _, ok := spec.ops[route]; !ok {
			t.Errorf("route %s is served but not documented in %s: add %s", route, openAPIFile, describeOp(route))
		}
	}
}

func TestOpenAPIDocumentsOnlyServedRoutes(t *testing.T) {
	spec := loadOpenAPI(t)
	served := servedRoutes(t)
	for _, route := range sortedKeys(spec.ops) {
		if !served[route] {
			t.Errorf("route %s is documented in %s (%s) but the server does not serve it (routeTable in http.go)", route, openAPIFile, describeOp(route))
		}
	}
}

// TestOpenAPIRoutesReachTheirHandlers checks against the real mux that each
// documented operation (including those outside the route table, such as
// /metrics) is routed to its own pattern, not to the catch-all 404.
func TestOpenAPIRoutesReachTheirHandlers(t *testing.T) {
	spec := loadOpenAPI(t)
	mux, ok := (&Server{}).routes().(*http.ServeMux)
	if !ok {
		t.Skip("routes() no longer returns a *http.ServeMux")
	}
	wildcard := regexp.MustCompile(`\{[^}]+\}`)
	for _, route := range sortedKeys(spec.ops) {
		method, path, _ := strings.Cut(route, " ")
		req := httptest.NewRequest(method, wildcard.ReplaceAllString(path, "x"), nil)
		_, pattern := mux.Handler(req)
		if openAPIPath(pattern) != route {
			t.Errorf("route %s is documented, but a request %s %s is handled by pattern %q", route, method, req.URL.Path, pattern)
		}
	}
}

func TestOpenAPIOperations(t *testing.T) {
	spec := loadOpenAPI(t)
	ids := map[string]string{}
	for _, route := range sortedKeys(spec.ops) {
		op := spec.ops[route]
		if len(op.Responses) == 0 {
			t.Errorf("route %s (%s) documents no responses", route, describeOp(route))
		}
		switch prev, dup := ids[op.OperationID]; {
		case op.OperationID == "":
			t.Errorf("route %s (%s) has no operationId", route, describeOp(route))
		case dup:
			t.Errorf("route %s has operationId %q, which route %s has too", route, op.OperationID, prev)
		default:
			ids[op.OperationID] = route
		}
	}
}

// TestOpenAPIPathParameters checks that every {param} of a documented path
// is declared as a required path parameter of each of its operations.
func TestOpenAPIPathParameters(t *testing.T) {
	spec := loadOpenAPI(t)
	wildcard := regexp.MustCompile(`\{([^}]+)\}`)
	for _, route := range sortedKeys(spec.ops) {
		_, path, _ := strings.Cut(route, " ")
		declared := map[string]bool{}
		nodes := append(append([]yaml.Node(nil), spec.pathParams[path]...), spec.ops[route].Parameters...)
		for i := range nodes {
			n := &nodes[i]
			var p openAPIParameter
			if err := n.Decode(&p); err != nil {
				t.Errorf("route %s: parameter: %v", route, err)
				continue
			}
			if p.Ref != "" {
				target, err := spec.resolve(p.Ref)
				if err != nil {
					t.Errorf("route %s: parameter %s", route, err)
					continue
				}
				p = openAPIParameter{}
				if err := target.Decode(&p); err != nil {
					t.Errorf("route %s: parameter %s: %v", route, n.Value, err)
					continue
				}
			}
			if p.In == "path" {
				if !p.Required {
					t.Errorf("route %s: path parameter %q must be required: true", route, p.Name)
				}
				declared[p.Name] = true
			}
		}
		for _, m := range wildcard.FindAllStringSubmatch(path, -1) {
			if !declared[m[1]] {
				t.Errorf("route %s: path parameter %q is not declared (in: path)", route, m[1])
			}
		}
	}
}

// TestOpenAPIRefs checks that every local $ref resolves.
func TestOpenAPIRefs(t *testing.T) {
	spec := loadOpenAPI(t)
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "$ref" {
					if _, err := spec.resolve(n.Content[i+1].Value); err != nil {
						t.Errorf("%s line %d: %v", openAPIFile, n.Content[i+1].Line, err)
					}
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&spec.root)
}

// resolve follows a local JSON pointer reference ("#/components/...").
func (s *openAPISpec) resolve(ref string) (*yaml.Node, error) {
	ptr, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("$ref %q is not a local reference", ref)
	}
	n := &s.root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for _, tok := range strings.Split(ptr, "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		if n.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("$ref %q does not resolve: %q is not in a mapping", ref, tok)
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == tok {
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return nil, fmt.Errorf("$ref %q does not resolve: no %q", ref, tok)
		}
		n = next
	}
	return n, nil
}
