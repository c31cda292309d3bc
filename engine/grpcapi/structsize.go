package grpcapi

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"
)

// The size limits of context, subject attributes and Struct arguments are on the wire bytes,
// what proto.Size reports. These functions compute the same figure by walking the Struct
// directly: proto.Size goes through protobuf reflection, allocating for every map key, on
// every decision. TestStructSizeIsProtoSize holds them to proto.Size.

// structSize is proto.Size(s).
func structSize(s *structpb.Struct) int {
	if s == nil {
		return 0
	}
	n := len(s.ProtoReflect().GetUnknown())
	for k, v := range s.GetFields() {
		// A map entry: the key (field 1) and the value (field 2), always both written.
		e := 1 + lenPrefixed(len(k)) + 1 + lenPrefixed(valueSize(v))
		n += 1 + lenPrefixed(e)
	}
	return n
}

// valueSize is proto.Size(v).
func valueSize(v *structpb.Value) int {
	if v == nil {
		return 0
	}
	n := len(v.ProtoReflect().GetUnknown())
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		n += 1 + protowire.SizeVarint(uint64(k.NullValue))
	case *structpb.Value_NumberValue:
		n += 1 + 8
	case *structpb.Value_StringValue:
		n += 1 + lenPrefixed(len(k.StringValue))
	case *structpb.Value_BoolValue:
		n += 1 + 1
	case *structpb.Value_StructValue:
		n += 1 + lenPrefixed(structSize(k.StructValue))
	case *structpb.Value_ListValue:
		n += 1 + lenPrefixed(listSize(k.ListValue))
	}
	return n
}

// listSize is proto.Size(l).
func listSize(l *structpb.ListValue) int {
	if l == nil {
		return 0
	}
	n := len(l.ProtoReflect().GetUnknown())
	for _, v := range l.GetValues() {
		n += 1 + lenPrefixed(valueSize(v))
	}
	return n
}

// lenPrefixed is the size of n bytes after their varint length.
func lenPrefixed(n int) int { return protowire.SizeVarint(uint64(n)) + n }
