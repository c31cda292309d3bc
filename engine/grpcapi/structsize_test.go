package grpcapi

import (
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestStructSizeIsProtoSize(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	check := func(s *structpb.Struct) {
		t.Helper()
		if got, want := structSize(s), proto.Size(s); got != want {
			t.Fatalf("structSize = %d, proto.Size = %d, of %v", got, want, s)
		}
	}
	check(nil)
	check(&structpb.Struct{})
	check(&structpb.Struct{Fields: map[string]*structpb.Value{"nil": nil}})
	check(&structpb.Struct{Fields: map[string]*structpb.Value{"no kind": {}}})
	check(&structpb.Struct{Fields: map[string]*structpb.Value{
		"nil struct": {Kind: &structpb.Value_StructValue{}},
		"nil list":   {Kind: &structpb.Value_ListValue{}},
		"odd null":   {Kind: &structpb.Value_NullValue{NullValue: -3}},
		"big null":   {Kind: &structpb.Value_NullValue{NullValue: 300}},
	}})
	for range 3000 {
		check(randomStruct(rng, 0))
	}

	// Unknown fields a sender added, at each level, count as proto.Size counts them.
	s := randomStruct(rng, 0)
	s.Fields["list"] = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("x")}})
	unknown := protowire.AppendTag(nil, 99, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("from a newer sender"))
	s.ProtoReflect().SetUnknown(unknown)
	s.Fields["list"].ProtoReflect().SetUnknown(unknown)
	s.Fields["list"].GetListValue().ProtoReflect().SetUnknown(unknown)
	s.Fields["list"].GetListValue().Values[0].ProtoReflect().SetUnknown(unknown)
	check(s)
}

// randomStruct is a Struct of every kind of value, with strings and nesting of sizes that
// cross the varint length boundaries (127/128 bytes, 16 KiB).
func randomStruct(rng *rand.Rand, depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for i := range rng.IntN(6) {
		s.Fields[randomString(rng)+string(rune('a'+i))] = randomValue(rng, depth)
	}
	return s
}

func randomValue(rng *rand.Rand, depth int) *structpb.Value {
	kinds := 4
	if depth < 3 {
		kinds = 6
	}
	switch rng.IntN(kinds) {
	case 0:
		return structpb.NewNullValue()
	case 1:
		return structpb.NewNumberValue(rng.NormFloat64() * 1e6)
	case 2:
		return structpb.NewStringValue(randomString(rng))
	case 3:
		return structpb.NewBoolValue(rng.IntN(2) == 0)
	case 4:
		return structpb.NewStructValue(randomStruct(rng, depth+1))
	default:
		l := &structpb.ListValue{}
		for range rng.IntN(5) {
			l.Values = append(l.Values, randomValue(rng, depth+1))
		}
		return structpb.NewListValue(l)
	}
}

func randomString(rng *rand.Rand) string {
	lengths := []int{0, 1, 5, 126, 127, 128, 129, 300, 16383, 16384, 16385}
	n := lengths[rng.IntN(len(lengths))]
	if rng.IntN(2) == 0 {
		return strings.Repeat("x", n)
	}
	return strings.Repeat("é", n/2) // two bytes each

}
