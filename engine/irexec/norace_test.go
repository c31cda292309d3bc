//go:build !race

package irexec_test

// generatedPolicies is how many policies TestGeneratedPoliciesAgreeWithTopdown decides: fewer
// under the race detector, which makes every run several times slower, so that go test -race
// ./... stays quick.
const generatedPolicies = 1000
